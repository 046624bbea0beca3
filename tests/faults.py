"""A TCP proxy on 127.0.0.1 that breaks connections on command, for reliability tests.

``forward`` passes bytes both ways. ``freeze()`` stops forwarding on every connection (they stay
open, nothing flows) and holds new connections without ever connecting them upstream: a network
gone silent. ``reset()`` ends every connection with a TCP reset; ``resume()`` forwards again.
``gate``, if set, sees each chunk the client sends (with the number of its connection, counted
from 1 as accepted) before it is forwarded, and may hold it (it runs on that connection's
thread). Everything runs on daemon threads; ``close()`` ends them all.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.accepted = 0
        self.gate: Callable[[int, bytes], None] | None = None
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------

    def freeze(self) -> None:
        """Nothing flows any more, on old or new connections; none is closed."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def reset(self) -> None:
        """End every open connection with a TCP reset (RST)."""
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # Wake our own thread blocked reading it (that sends nothing to the peer); the
                # close, with a zero linger, then sends the reset.
                sock.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()

    # -- plumbing ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.add(client)
                self.accepted += 1
                number = self.accepted
            threading.Thread(target=self._connect, args=(client, number), daemon=True).start()

    def _connect(self, client: socket.socket, number: int) -> None:
        self._flowing.wait()  # a frozen network: accepted, never connected upstream
        if self._closed.is_set():
            return
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        with self._lock:
            self._sockets.add(upstream)
        for source, target, outbound in ((client, upstream, True), (upstream, client, False)):
            threading.Thread(
                target=self._pump, args=(source, target, number if outbound else 0), daemon=True
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket, outbound: int) -> None:
        """Forward ``source`` to ``target``; ``outbound``: the connection's number when
        ``source`` is the client, else 0."""
        try:
            while True:
                data = source.recv(65536)
                self._flowing.wait()  # frozen: hold the bytes, keep the connection open
                if not data or self._closed.is_set():
                    break
                if outbound and self.gate is not None:
                    self.gate(outbound, data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
