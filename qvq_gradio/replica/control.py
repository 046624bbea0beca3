"""A running replica: in a thread of this process, or in a child process; and ``serve``."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import httpx

from .app import build_app
from .config import ReplicaConfig

__all__ = ["Replica", "ReplicaProcess", "serve"]

# Seconds a replica told to stop (SIGTERM) lets its open requests finish before it cancels them.
_SHUTDOWN_GRACE: Final = 1

_R = TypeVar("_R", bound="_Control")


class _Control:
    """A running replica: start/stop as a context manager, and its control routes over HTTP."""

    url: str

    def start(self: _R) -> _R:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _R) -> _R:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far (see :class:`RequestRecord`)."""
        response = httpx.get(f"{self.url}/replica/requests", timeout=10)
        response.raise_for_status()
        return cast(list[dict[str, Any]], response.json())

    def hits(self) -> dict[str, int]:
        """How many requests each route received (``config``, ``queue/join``, ...)."""
        response = httpx.get(f"{self.url}/replica/hits", timeout=10)
        response.raise_for_status()
        return cast(dict[str, int], response.json())

    def wait_ended(self, marker: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the request whose prompt contains ``marker`` has ended; its record."""
        return self._wait(marker, timeout, ended=True)

    def wait_started(self, marker: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until a request whose prompt contains ``marker`` has arrived."""
        return self._wait(marker, timeout, ended=False)

    def _wait(self, marker: str, timeout: float, *, ended: bool) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/replica/wait",
            params={"marker": marker, "timeout": timeout, "ended": ended},
            timeout=timeout + 10,
        )
        if response.status_code == 408:
            raise TimeoutError(f"no {'ended ' if ended else ''}request with {marker!r}")
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/replica/reset", timeout=10).raise_for_status()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Replica(_Control):
    """The replica served from a thread of this process; a context manager.

    ``port=0`` (the default) takes a free port; the socket is bound before the server starts,
    so there is no race for it.
    """

    def __init__(
        self, config: ReplicaConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or ReplicaConfig()
        self._sock = _bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Replica:
        import uvicorn

        # Stopping ends within a bound: a client's heartbeat stream, held open for as long as
        # the client lives, would otherwise keep uvicorn's graceful shutdown waiting.
        config = uvicorn.Config(build_app(self.config), log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=_SHUTDOWN_GRACE)
        logging.getLogger("uvicorn.error").addFilter(_quiet_shutdown)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="qvq-replica",
            daemon=True,
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the replica server failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()


class ReplicaProcess(_Control):
    """The replica in a child process (``python -m qvq_gradio replica``); a context manager.

    Use it where the test process must stay free of the server's own work, e.g. under
    ``blockbuster``, which would flag Gradio's blocking calls in the server's event loop.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        port: int = 0,
        python: str | None = None,
    ) -> None:
        self._args = list(args)
        self._env = env
        self._port = port
        # The interpreter to serve from: ``$QVQ_REPLICA_PYTHON`` runs the replica under another
        # environment (e.g. an older Gradio) while the client side stays in this one.
        self._python = python or os.environ.get("QVQ_REPLICA_PYTHON") or sys.executable
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> ReplicaProcess:
        self._proc = subprocess.Popen(
            [self._python, "-m", "qvq_gradio", "replica", "--port", str(self._port), *self._args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self._env,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                return self
        code = self._proc.wait()
        raise RuntimeError(f"the replica process exited with code {code} before serving")

    def alive(self) -> bool:
        """The child process is running."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait at most ``timeout`` seconds for the exit: its code (None if it was
        never started; ``subprocess.TimeoutExpired`` if it is still running)."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
        return self._proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()


def serve(
    config: ReplicaConfig,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the replica in the foreground until interrupted; ``ready(url)`` once bound."""
    import uvicorn

    sock = _bind(host, port)
    app = build_app(config)
    sock.listen(2048)  # connections made after ready() wait in the backlog, never refused
    if ready is not None:
        ready(f"http://{host}:{sock.getsockname()[1]}")
    # SIGTERM ends it within a bound: a client's heartbeat stream, held open for as long as the
    # client lives, would otherwise keep uvicorn's graceful shutdown waiting forever.
    settings = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=_SHUTDOWN_GRACE)
    logging.getLogger("uvicorn.error").addFilter(_quiet_shutdown)
    uvicorn.Server(settings).run(sockets=[sock])


def _quiet_shutdown(record: logging.LogRecord) -> bool:
    """uvicorn's reports of the streams a stopping replica cancels are expected, not errors."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, asyncio.CancelledError):
        return False
    return "graceful shutdown exceeded" not in record.getMessage()
