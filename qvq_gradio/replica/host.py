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
the :class:`ReplicaHost` that started it is closed, or its parent dies.

Other processes may share a host (the test processes of one ``pytest -n`` run):
``ReplicaHost(share=PATH)`` also takes commands on a Unix socket at ``PATH``, and
``ReplicaHost.connect(PATH)`` gives a host object speaking over it (closing that object ends
its connection, not the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import socket
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

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        python: str | None = None,
        share: str | None = None,
    ) -> None:
        self._python = python or os.environ.get("QVQ_REPLICA_PYTHON") or sys.executable
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        command = [self._python, "-m", "qvq_gradio.replica.host"]
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [*command, *(["--share", share] if share else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._send, self._receive = self._proc.stdin, self._proc.stdout
        self._pid = self._proc.pid
        if share:
            self.call(op="ping")  # listening once it answers

    @classmethod
    def connect(cls, path: str) -> ReplicaHost:
        """The host another process started with ``share=path``, over its socket."""
        host = cls.__new__(cls)
        host._lock = threading.Lock()
        host._proc = None
        host._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        host._sock.connect(path)
        host._send, host._receive = host._sock.makefile("w"), host._sock.makefile("r")
        host._pid = int(host.call(op="ping")["pid"])
        return host

    @property
    def pid(self) -> int:
        return self._pid

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            os.kill(self._pid, 0)
        except OSError:
            return False
        return True

    def call(self, **command: Any) -> dict[str, Any]:
        """Send one command; its reply (``RuntimeError`` when the host failed to do it)."""
        with self._lock:
            self._send.write(json.dumps(command) + "\n")
            self._send.flush()
            line = self._receive.readline()
        if not line:
            raise RuntimeError("the replica host has gone")
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
        """End the host and every replica in it (for a connection: end the connection)."""
        with contextlib.suppress(OSError):
            self._send.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._receive.close()
        if self._sock is not None:
            self._sock.close()


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


_numbers = itertools.count(1)  # a replica's number: never one an ended replica had


async def _do(command: dict[str, Any], served: dict[int, _Served]) -> dict[str, Any]:
    """One command's reply."""
    try:
        if command["op"] == "start":
            replica = _Served(_config(command["config"]), int(command["port"]))
            await replica.started()
            number = next(_numbers)
            served[number] = replica
            return {"id": number, "url": replica.url}
        if command["op"] == "kill":
            served.pop(command["id"]).kill()
        elif command["op"] == "stop":
            await served.pop(command["id"]).stop()
        elif command["op"] == "ping":
            return {"pid": os.getpid()}
        else:
            raise ValueError(f"unknown op {command['op']!r}")
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {}


async def _host(replies: Any, share: str | None) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)  # the parent is gone

    threading.Thread(target=read, name="replica-host-commands", daemon=True).start()
    served: dict[int, _Served] = {}

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.closing(writer):
            while line := await reader.readline():
                reply = await _do(json.loads(line), served)
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()

    listener = await asyncio.start_unix_server(client, share) if share else None
    while (line := await lines.get()) is not None:
        replies.write(json.dumps(await _do(json.loads(line), served)) + "\n")
        replies.flush()
    if listener is not None:
        listener.close()
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
    share = sys.argv[2] if sys.argv[1:2] == ["--share"] else None
    asyncio.run(_host(replies, share))
    os._exit(0)  # not waiting on Gradio's worker threads: every replica ends with the host


if __name__ == "__main__":
    main()
