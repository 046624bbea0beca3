"""The replica's request log: every request, how many tokens it generated, how it ended."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["STALLED", "RequestLog", "RequestRecord"]

#: Seconds a generator may sit at a ``yield`` before it counts as stopped by Gradio.
STALLED = 3.0


@dataclass
class RequestRecord:
    """One request the replica received."""

    id: int
    prompt: str
    image: dict[str, Any] | None = None
    tokens_planned: int = 0
    tokens_generated: int = 0
    state: Literal["running", "done", "failed", "cancelled"] = "running"
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)  #: ZeroGPU-relevant headers received
    started: float = 0.0  #: time.monotonic() in the replica's process
    ended: float | None = None
    #: Stopped by Gradio between two updates: a generator cancelled while suspended at a
    #: ``yield`` is never resumed nor finalised, so it cannot log its end. One that a client
    #: asked to cancel (``cancel_requested``) and that has sat there ``STALLED`` seconds is
    #: reported ``cancelled`` with this flag; a stall nobody asked for stays ``running``.
    abandoned: bool = False
    yielded_at: float | None = None  #: when it last yielded and has not been resumed since
    session: str | None = None  #: the Gradio session it ran in
    #: A ``/cancel`` for its session reached the replica: a real upstream cancel, not a stall.
    cancel_requested: bool = False
    #: A chat replica's other inputs as received (system prompt, sampling, history length)
    params: dict[str, Any] = field(default_factory=dict)
    #: Every image received (a chat takes several), each as ``image`` describes one
    images: list[dict[str, Any]] = field(default_factory=list)


class RequestLog:
    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._cancelled_sessions: set[str] = set()
        self._hits: collections.Counter[str] = collections.Counter()
        self._changed = threading.Condition()

    def hit(self, path: str) -> None:
        """A request for ``path`` arrived; counted by its last segment past the API prefix
        (``config``, ``info``, ``queue/join``, ``heartbeat``, ...)."""
        route = path.removeprefix("/").removeprefix("gradio_api/")
        if route.startswith("heartbeat/"):
            route = "heartbeat"
        with self._changed:
            self._hits[route or "/"] += 1

    def hits(self) -> dict[str, int]:
        with self._changed:
            return dict(self._hits)

    def start(self, prompt: str) -> RequestRecord:
        with self._changed:
            record = RequestRecord(id=len(self._records), prompt=prompt, started=time.monotonic())
            self._records.append(record)
            self._changed.notify_all()
            return record

    def update(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def cancel_requested(self, session: str | None) -> None:
        """A client asked ``/cancel`` for the jobs of ``session``."""
        if not session:
            return
        with self._changed:
            self._cancelled_sessions.add(session)
            for record in self._records:
                if record.session == session:
                    record.cancel_requested = True
            self._changed.notify_all()

    def joined(self, record: RequestRecord, session: str | None) -> None:
        """``record`` runs in Gradio session ``session`` (a cancel may have come first)."""
        with self._changed:
            record.session = session
            record.cancel_requested = session in self._cancelled_sessions

    def all(self) -> list[dict[str, Any]]:
        with self._changed:
            return [asdict(record) for record in self._records]

    def reset(self) -> None:
        with self._changed:
            self._records.clear()
            self._cancelled_sessions.clear()
            self._hits.clear()

    def wait(self, marker: str, timeout: float, *, ended: bool) -> dict[str, Any] | None:
        def find() -> RequestRecord | None:
            now = time.monotonic()
            for record in self._records:
                if marker not in record.prompt:
                    continue
                if not ended or record.state != "running":
                    return record
                stalled = record.yielded_at is not None and now - record.yielded_at > STALLED
                if stalled and record.cancel_requested:
                    record.state, record.abandoned = "cancelled", True
                    record.ended = record.yielded_at
                    return record
            return None

        deadline = time.monotonic() + timeout
        with self._changed:
            while (found := find()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.25))  # also re-checks stalled generators
            return asdict(found)
