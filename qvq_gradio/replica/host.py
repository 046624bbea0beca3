"""Many replicas in one child process: Gradio is imported once, each replica costs milliseconds.

A :class:`ReplicaHost` starts ``python -m qvq_gradio.replica.host`` and speaks to it in JSON
lines over its stdin and stdout. Each replica it starts is a uvicorn server of its own on a port
of its own, on the host's one event loop, so it looks from outside exactly as a replica process
does (``http://127.0.0.1:PORT``, its control routes); a :class:`HostedReplica` has the methods
of :class:`~.control.ReplicaProcess`:

* ``kill()`` is a crash as a client sees one: the port refuses at once and every open connection
  is cut (aborted, not closed gracefully); a later replica may take the same port again;
* ``terminate()`` stops it gracefully (its open requests get a second).

What only a real process can show (a process that must exit while a client holds a stream,
signals) is for :class:`~.control.ReplicaProcess`. The host ends when its stdin closes: when
the :class:`ReplicaHost` is closed, or its parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .config import ReplicaConfig
from .control import _SHUTDOWN_GRACE, _bind, _Control, _quiet_shutdown

__all__ = ["HostedReplica", "ReplicaHost"]


class ReplicaHost:
    """The host process (started at once), and the replicas it serves."""

    def __init__(self, *, env: dict[str, str] | None = None, python: str | None = None) -> None:
        self._python = python or os.environ.get("QVQ_REPLICA_PYTHON") or sys.executable
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [self._python, "-m", "qvq_gradio.replica.host"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def call(self, **command: Any) -> dict[str, Any]:
        """Send one command; its reply (``RuntimeError`` when the host failed to do it)."""
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the replica host exited (code {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the replica host could not {command['op']}: {reply['error']}")
        return reply

    def start(self, config: ReplicaConfig | None = None, *, port: int = 0) -> HostedReplica:
        """A new replica, serving once this returns."""
        fields = dataclasses.asdict(config or ReplicaConfig())
        reply = self.call(op="start", config=fields, port=port)
        return HostedReplica(self, int(reply["id"]), str(reply["url"]))

    def close(self) -> None:
        """End the host and every replica in it."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class HostedReplica(_Control):
    """One replica of a :class:`ReplicaHost`, with :class:`~.control.ReplicaProcess`'s methods."""

    def __init__(self, host: ReplicaHost, number: int, url: str) -> None:
        self.host = host
        self.number = number
        self.url = url
        self._ended = False

    @property
    def pid(self) -> int | None:
        """The host's process id (shared with every replica it serves)."""
        return self.host.pid

    def start(self) -> HostedReplica:
        return self  # serving since the host started it

    def alive(self) -> bool:
        return not self._ended and self.host.alive()

    def kill(self) -> None:
        """As a crash: the port refuses, every open connection is cut."""
        if not self._ended and self.host.alive():
            self.host.call(op="kill", id=self.number)
        self._ended = True

    def terminate(self, timeout: float = 30.0) -> int | None:
        """Stop gracefully (open requests get a second); 0, as a process's clean exit."""
        if not self._ended and self.host.alive():
            self.host.call(op="stop", id=self.number)
        self._ended = True
        return 0

    def stop(self) -> None:
        self.terminate()


# -- the host process ---------------------------------------------------------------------------


class _Served:
    """One replica in the host: its uvicorn server and the task serving it."""

    def __init__(self, config: ReplicaConfig, port: int) -> None:
        import uvicorn

        from .app import build_app

        self.sock = _bind("127.0.0.1", port)
        self.sock.listen(2048)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the host's signals are the host's, not each replica's

        settings = uvicorn.Config(build_app(config), log_level="warning", lifespan="on",
                                  timeout_graceful_shutdown=_SHUTDOWN_GRACE)
        self.server = Server(settings)
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))

    async def started(self) -> None:
        while not self.server.started:
            if self.task.done():
                self.task.result()  # its error
                raise RuntimeError("the replica's server ended before it started")
            await asyncio.sleep(0.005)

    def kill(self) -> None:
        for server in self.server.servers:
            server.close()  # the port refuses from now on
        self.sock.close()
        for connection in list(self.server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()  # cut, as the kernel does for a process that died
        self.server.should_exit = True  # its app shuts down (Gradio's queue stops)

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait({self.task}, timeout=_SHUTDOWN_GRACE + 10)


def _config(fields: dict[str, Any]) -> ReplicaConfig:
    if fields.get("together") is not None:
        fields["together"] = tuple(fields["together"])
    return ReplicaConfig(**fields)


async def _host(replies: Any) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)  # the parent is gone

    threading.Thread(target=read, name="replica-host-commands", daemon=True).start()
    served: dict[int, _Served] = {}
    while (line := await lines.get()) is not None:
        command = json.loads(line)
        try:
            reply: dict[str, Any] = {}
            if command["op"] == "start":
                replica = _Served(_config(command["config"]), int(command["port"]))
                await replica.started()
                served[id(replica)] = replica
                reply = {"id": id(replica), "url": replica.url}
            elif command["op"] == "kill":
                served.pop(command["id"]).kill()
            elif command["op"] == "stop":
                await served.pop(command["id"]).stop()
            else:
                raise ValueError(f"unknown op {command['op']!r}")
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    for replica in served.values():  # the parent is gone: end every replica, as a crash would
        replica.kill()
    if served:
        await asyncio.wait({replica.task for replica in served.values()},
                           timeout=_SHUTDOWN_GRACE + 2)


def main() -> None:
    # Replies go out on the stdout we were given; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.getLogger("uvicorn.error").addFilter(_quiet_shutdown)
    asyncio.run(_host(replies))
    os._exit(0)  # not waiting on Gradio's worker threads: every replica ends with the host


if __name__ == "__main__":
    main()
