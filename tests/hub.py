"""A small local stand-in for the Hugging Face Hub's Space API, served on 127.0.0.1.

Point the real ``huggingface_hub`` code path at it with ``HF_ENDPOINT`` (in a child process:
``huggingface_hub`` reads the variable when imported). Each Space has a host (where its app is
served) and the stages its runtime reports, one per request, the last one repeating.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass
class HubSpace:
    host: str
    stages: list[str] = field(default_factory=lambda: ["RUNNING"])
    status: int = 200  # e.g. 401 for a Space our token may not see
    runtime_calls: int = 0


class FakeHub:
    def __init__(self) -> None:
        self.spaces: dict[str, HubSpace] = {}
        self.requests: list[str] = []  # every path asked for, in order
        self._lock = threading.Lock()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, request: http.server.BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0]
        with self._lock:
            self.requests.append(path)
        parts = path.strip("/").split("/")
        body: dict[str, Any]
        headers = {"Content-Type": "application/json"}
        space = None
        if len(parts) >= 4 and parts[:2] == ["api", "spaces"]:
            space = self.spaces.get(f"{parts[2]}/{parts[3]}")
        if space is None:
            status, body = 404, {"error": "Repository not found"}
            headers["X-Error-Code"] = "RepoNotFound"
        elif space.status != 200:
            status, body = space.status, {"error": "Invalid credentials"}
        else:
            with self._lock:
                stage = space.stages[min(space.runtime_calls, len(space.stages) - 1)]
                if parts[4:] == ["runtime"]:
                    space.runtime_calls += 1
            runtime = {"stage": stage, "hardware": {"current": "zero-a10g", "requested": None}}
            if parts[4:] == ["runtime"]:
                status, body = 200, runtime
            else:
                status = 200
                body = {"id": f"{parts[2]}/{parts[3]}", "host": space.host, "private": False,
                        "runtime": runtime, "sdk": "gradio"}
        data = json.dumps(body).encode()
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
