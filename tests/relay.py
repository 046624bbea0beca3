"""Relays on loopback for tests, on an asyncio loop of their own thread: a TLS front for a
plain HTTP server (``https://localhost:PORT`` with a certificate a test's CA signed), and an
HTTP ``CONNECT`` proxy that notes every tunnel it opened."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from types import TracebackType
from typing import Any


class Relay:
    """One listening relay; ``url`` is where to reach it. A TLS front when ``target`` and
    ``tls`` are given (each connection forwarded to ``target``); otherwise a CONNECT proxy
    (``tunnels``: each ``host:port`` asked for)."""

    def __init__(
        self, target: tuple[str, int] | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.target, self.tls = target, tls
        self.tunnels: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.port = port
        self.url = f"https://localhost:{port}" if tls is not None else f"http://127.0.0.1:{port}"

    async def _start(self) -> asyncio.base_events.Server:
        serve = self._front if self.tls is not None else self._proxy
        return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.tls)

    async def _front(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.target is not None
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _pipe_both(*ends: Any) -> None:
    reader, writer, up_reader, up_writer = ends
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
