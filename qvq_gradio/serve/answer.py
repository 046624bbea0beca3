"""One answer as one ASGI coroutine: the session's events in, the response out.

The request's task follows the session's event stream itself and writes each event as it comes
through a :class:`~.writers.Writer`: no task or queue between the Space and the client. For
``stream: true`` the headers wait for the first text (or an error, which then gets its real
HTTP status) up to ``hold`` seconds; a timer task beside the answer sends them then, and
keep-alive comments (``: queued 3/7``) every ``keepalive`` seconds in which nothing else was
written. A later error travels as a last ``data: {"error": ...}`` chunk. A client that
disconnects, at any point, cancels the answer: the session cancels the Space job upstream and
the request's slot is freed. A server that stops (see :mod:`.draining`) ends a waiting request
at once and a running answer once its grace period is over, each with a 503 or, once a stream
has begun, an error chunk and ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, Protocol

import anyio
from starlette.responses import JSONResponse, Response

from ..errors import QVQError
from ..events import Finished, QueueUpdate, ReasoningDelta, ShapeFound, TextDelta
from .draining import Draining, shutting_down
from .errors import APIError, api_error
from .writers import Writer

__all__ = ["Answer", "Settings", "Slots", "error_response"]


class Settings(Protocol):
    """What an answer needs of its server: its slots, its stream timings, its stop."""

    slots: Slots
    hold: float
    keepalive: float
    draining: Draining


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def error_response(error: APIError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``error`` as OpenAI gives it; ``headers``: more of them (a 405's ``Allow``)."""
    return JSONResponse(error.body(), status_code=error.status,
                        headers={**error.headers(), **(headers or {})})


class Slots:
    """At most ``running`` answers at once, ``waiting`` more in line; past that, 429."""

    def __init__(self, running: int, waiting: int) -> None:
        self._limit = anyio.Semaphore(running)
        self._bound = running + waiting
        self._taken = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._taken >= self._bound:
            raise APIError(429, "The server is at capacity; retry shortly", "rate_limit_error",
                           "server_busy", retry_after=1)
        self._taken += 1
        try:
            async with self._limit:
                yield
        finally:
            self._taken -= 1


class _Stream:
    """A streamed response, written by two tasks: the answer and its timer.

    Each write is one ASGI message, so the two interleave safely; the headers are claimed
    before they are sent, and a task finding them claimed by the other waits until they are
    out. ``writes`` counts the body writes (the timer sends a keep-alive only after a quiet
    period).
    """

    def __init__(self, send: Send, shape: Writer) -> None:
        self._send = send
        self._shape = shape
        self._claimed = False
        self._out = anyio.Event()
        self.ready = False  #: the headers and the opening chunk are out
        self.ended = False  #: the last chunk is out
        self.writes = 0

    @property
    def started(self) -> bool:
        """The headers are claimed: an error now travels in the stream."""
        return self._claimed

    async def start(self) -> None:
        if self._claimed:
            await self._out.wait()  # out already, or being sent by the other task
            return
        self._claimed = True
        # Shielded: headers claimed are headers sent, whichever task is cancelled meanwhile.
        with anyio.CancelScope(shield=True):
            await self._send(
                {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS}
            )
            await self.write(self._shape.opening())
            self.ready = True
            self._out.set()

    async def write(self, data: bytes) -> None:
        if data:
            self.writes += 1
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes) -> None:
        await self.start()
        with anyio.CancelScope(shield=True):  # a stream ended is ended whole, once
            await self.write(data)
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            self.ended = True


class Answer(Response):
    """One answer, streamed or not, with everything that happens to it in this task."""

    def __init__(self, settings: Settings, events: Any, prompt: str, stream: bool,
                 shape: Writer) -> None:
        super().__init__()
        self._server = settings
        self._events = events
        self._prompt = prompt
        self._stream = stream
        self._shape = shape
        self._queue: QueueUpdate | None = None
        self._running = False  # it has a slot
        self._gone = False  # the client disconnected
        self._stopped = False  # the server stopped it
        self._answered = False  # a whole answer was sent

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        out = _Stream(send, self._shape) if self._stream else None
        error: APIError | None = None
        async with aclosing(self._events), anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch_disconnect, receive, tasks.cancel_scope)
            tasks.start_soon(self._watch_draining, tasks.cancel_scope)
            if out is not None:  # a stream waiting for a slot gets keep-alives too
                tasks.start_soon(self._timer, out)
            try:
                async with self._server.slots.slot():
                    self._running = True
                    if out is not None:
                        await self._streamed(out)
                    else:
                        await self._whole(send)
            except APIError as raised:
                error = raised
            finally:
                tasks.cancel_scope.cancel()
        # The events are closed here: a Space job still running has been cancelled.
        if self._gone or self._answered or (out is not None and out.ended):
            return
        if self._stopped:
            error = shutting_down()
        if error is None:
            return
        if out is not None and out.started:
            await out.end(self._shape.failed(error))
        else:
            await error_response(error)(scope, receive, send)

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                scope.cancel()  # the answer's stream closes: the Space job is cancelled upstream
                return

    async def _watch_draining(self, scope: anyio.CancelScope) -> None:
        """A waiting request ends when the server begins to stop, a running one when the
        grace period is over."""
        draining = self._server.draining
        await draining.stopping()
        if self._running:
            await draining.expired()
        self._stopped = True
        scope.cancel()

    async def _whole(self, send: Send) -> None:
        """The answer as one JSON body once it is done; an error has its real status."""
        shape = self._shape
        try:
            async for event in self._events:
                if isinstance(event, TextDelta):
                    shape.feed(event.text)
                elif isinstance(event, ReasoningDelta):
                    shape.thought(event.text)
                elif isinstance(event, ShapeFound):
                    shape.shaped(event.shape)
                elif isinstance(event, Finished):
                    body = json.dumps(shape.whole(event, self._prompt)).encode()
                    with anyio.CancelScope(shield=True):
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-type", b"application/json")]})
                        await send({"type": "http.response.body", "body": body})
                        self._answered = True
                    return
        except QVQError as error:
            raise api_error(error) from None

    async def _streamed(self, out: _Stream) -> None:
        """Chunks as the text comes; the headers once text (or ``hold``) comes first."""
        shape = self._shape
        try:
            async for event in self._events:
                if isinstance(event, (TextDelta, ReasoningDelta)):
                    if not out.ready:
                        await out.start()
                    if isinstance(event, TextDelta):
                        await out.write(shape.delta(event.text))
                    else:
                        await out.write(shape.thinking(event.text))
                elif isinstance(event, ShapeFound):
                    shape.shaped(event.shape)
                elif isinstance(event, QueueUpdate):
                    self._queue = event
                elif isinstance(event, Finished):
                    await out.end(shape.closing(event, self._prompt))
                    return
        except QVQError as error:
            if not out.started:
                raise api_error(error) from None  # before any text: a real HTTP status
            await out.end(shape.failed(api_error(error)))

    async def _timer(self, out: _Stream) -> None:
        """After ``hold`` seconds the headers go out; then a keep-alive comment every
        ``keepalive`` seconds in which nothing else was written."""
        await anyio.sleep(self._server.hold)
        await out.start()
        while True:
            seen = out.writes
            await anyio.sleep(self._server.keepalive)
            if out.writes == seen:
                await out.write(_comment(self._queue))


def _comment(queue: QueueUpdate | None) -> bytes:
    if queue is None or queue.position is None:
        return b": keep-alive\n\n"
    size = f"/{queue.queue_size}" if queue.queue_size is not None else ""
    return f": queued {queue.position}{size}\n\n".encode()
