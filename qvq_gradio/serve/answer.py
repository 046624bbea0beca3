"""One answer as one ASGI coroutine: the session's events in, the response out.

A pump task follows the session's event stream (all of it in one task), and the request's
task turns the events into the response through a :class:`~.writers.Writer`. For
``stream: true`` the headers wait for the first text (or an error, which then gets its real
HTTP status) up to ``hold`` seconds; a question still queued after that gets its headers and
keep-alive comments (``: queued 3/7``) every ``keepalive`` seconds, and a later error travels
as a last ``data: {"error": ...}`` chunk. A client that disconnects, at any point, cancels the
pump: the session cancels the Space job upstream and the request's slot is freed.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, Protocol

import anyio
from starlette.responses import JSONResponse, Response

from ..errors import QVQError
from ..events import Finished, QueueUpdate, TextDelta
from .errors import APIError, api_error
from .writers import Writer

__all__ = ["Answer", "Settings", "Slots", "error_response"]


class Settings(Protocol):
    """What an answer needs of its server: its slots and its stream timings."""

    slots: Slots
    hold: float
    keepalive: float


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


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

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_disconnect, receive, tasks.cancel_scope)
            try:
                async with self._server.slots.slot():
                    await self._answer(send, tasks)
            except APIError as error:
                await error_response(error)(scope, receive, send)
            finally:
                tasks.cancel_scope.cancel()

    async def _answer(self, send: Send, tasks: Any) -> None:
        sender, receiver = anyio.create_memory_object_stream[Any](math.inf)
        tasks.start_soon(_pump, self._events, sender)
        shape = self._shape
        started = False  # the stream's headers (and its opening chunk) are sent

        async def start() -> None:
            nonlocal started
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await _write(send, shape.opening())
            started = True

        # A whole answer has nothing to send before its end; a stream holds its headers up
        # to ``hold`` seconds, then keeps the connection alive every ``keepalive`` seconds.
        hold_until = anyio.current_time() + self._server.hold if self._stream else math.inf
        queue: QueueUpdate | None = None
        async with receiver:
            while True:
                wait = self._server.keepalive if started else hold_until - anyio.current_time()
                item: Any = None
                with anyio.move_on_after(max(wait, 0.0)) as timer:
                    try:
                        item = await receiver.receive()
                    except anyio.EndOfStream:
                        return
                if timer.cancelled_caught:
                    if not started:
                        await start()
                    await _write(send, _comment(queue))
                    continue
                if isinstance(item, QueueUpdate):
                    queue = item
                    continue
                if isinstance(item, QVQError) and not started:
                    raise api_error(item)  # a real HTTP status (always, for a whole answer)
                if not isinstance(item, (TextDelta, Finished, QVQError)):
                    continue
                if not self._stream:
                    if isinstance(item, Finished):
                        body = json.dumps(shape.whole(item, self._prompt)).encode()
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-type", b"application/json")]})
                        await send({"type": "http.response.body", "body": body})
                        return
                    if isinstance(item, TextDelta):  # an error was raised above
                        shape.feed(item.text)
                    continue
                if not started:
                    await start()
                # What else has arrived goes out in the same write (fewer sends under load).
                out, ended = b"", False
                while True:
                    if isinstance(item, TextDelta):
                        out += shape.delta(item.text)
                    elif isinstance(item, Finished):
                        out += shape.closing(item, self._prompt)
                        ended = True
                        break
                    elif isinstance(item, QVQError):
                        out += shape.failed(api_error(item))
                        ended = True
                        break
                    try:
                        item = receiver.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await _write(send, out)
                if ended:
                    await _end(send)
                    return


async def _pump(events: Any, sender: Any) -> None:
    """Follow the session's event stream (all of it in this one task) into ``sender``."""
    async with sender, aclosing(events):
        try:
            async for event in events:
                await sender.send(event)
        except QVQError as error:
            await sender.send(error)


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()  # the pump's stream closes: the Space job is cancelled upstream
            return


async def _write(send: Send, data: bytes) -> None:
    if data:
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def _end(send: Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _comment(queue: QueueUpdate | None) -> bytes:
    if queue is None or queue.position is None:
        return b": keep-alive\n\n"
    size = f"/{queue.queue_size}" if queue.queue_size is not None else ""
    return f": queued {queue.position}{size}\n\n".encode()
