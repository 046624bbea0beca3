"""A tiny web server on loopback for tests: each GET answered by a function of its path.

``answer(path)`` returns ``(status, headers, body)``; every path asked is kept in ``paths``.
It runs on a daemon thread; use it as a context manager (or call ``close``).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

Answer = Callable[[str], tuple[int, dict[str, str], bytes]]


class Web(http.server.ThreadingHTTPServer):
    def __init__(self, answer: Answer, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.paths: list[str] = []
        super().__init__((host, 0), functools.partial(_Handler, self))
        self.url = f"http://{host}:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> Web:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def __init__(self, web: Web, *args: Any) -> None:
        self.web = web
        super().__init__(*args)

    def do_GET(self) -> None:
        self.web.paths.append(self.path)
        status, headers, body = self.web.answer(self.path)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def page(body: bytes, status: int = 200) -> Answer:
    """Every path answered with the HTML ``body``."""
    return lambda _: (status, {"Content-Type": "text/html"}, body)
