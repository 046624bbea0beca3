"""The server: Starlette routes over one session (or pool), every answer in the request's task.

An answer runs as one ASGI coroutine (:class:`_Answer`): a pump task follows the session's
event stream, and the request's task turns the events into the response. For ``stream: true``
the headers wait for the first text (or an error, which then gets its real HTTP status) up to
``hold`` seconds; a question still queued after that gets its headers and keep-alive comments
(``: queued 3/7``) every ``keepalive`` seconds, and a later error travels as a last
``data: {"error": ...}`` chunk. A client that disconnects, at any point, cancels the pump:
the session cancels the Space job upstream and the request's slot is freed.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import asdict
from typing import Any, Literal

import anyio
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InputError, QVQError
from ..events import Finished, QueueUpdate, TextDelta
from ..prompt import build_prompt
from ..protocol import SessionLike
from .errors import APIError, api_error
from .reasoning import Splitter
from .shapes import MODELS, ChatRequest, ResponsesRequest, model_card, new_id, now, usage

__all__ = ["Reasoning", "app"]

log = logging.getLogger("qvq_gradio")

Reasoning = Literal["split", "inline"]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


class _Slots:
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


class _RequireKey:
    """Pure ASGI: ``/v1/...`` needs ``Authorization: Bearer <key>`` (a 401 in OpenAI's shape)."""

    def __init__(self, app: Any, key: str) -> None:
        self._app = app
        self._key = f"Bearer {key}".encode()

    async def __call__(self, scope: dict[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/v1"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._key):
                error = APIError(401, "Invalid or missing API key (Authorization: Bearer ...)",
                                 "invalid_request_error", "invalid_api_key")
                await _error_response(error)(scope, receive, send)
                return
        await self._app(scope, receive, send)


class _Answer(Response):
    """One answer, streamed or not, with everything that happens to it in this task."""

    def __init__(self, server: _Server, events: Any, prompt: str, stream: bool,
                 shape: _Shape) -> None:
        super().__init__()
        self._server = server
        self._events = events
        self._prompt = prompt
        self._stream = stream
        self._shape = shape

    async def __call__(self, scope: Any, receive: _Receive, send: _Send) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_watch_disconnect, receive, tasks.cancel_scope)
            try:
                async with self._server.slots.slot():
                    await self._answer(send, tasks)
            except APIError as error:
                await _error_response(error)(scope, receive, send)
            finally:
                tasks.cancel_scope.cancel()

    async def _answer(self, send: _Send, tasks: Any) -> None:
        sender, receiver = anyio.create_memory_object_stream[Any](math.inf)
        tasks.start_soon(_pump, self._events, sender)
        shape = self._shape
        started = False
        hold_until = anyio.current_time() + self._server.hold
        queue: QueueUpdate | None = None
        async with receiver:
            while True:
                wait = (hold_until - anyio.current_time() if not started
                        else self._server.keepalive)
                item: Any = None
                with anyio.move_on_after(max(wait, 0.0)) as timer:
                    try:
                        item = await receiver.receive()
                    except anyio.EndOfStream:
                        return
                if timer.cancelled_caught:
                    if self._stream:
                        if not started:
                            started = await _start_stream(send)
                            await _write(send, shape.opening())
                        await _write(send, _comment(queue))
                    hold_until = math.inf if not self._stream else hold_until
                    continue
                if isinstance(item, QueueUpdate):
                    queue = item
                    continue
                if isinstance(item, QVQError):
                    if not started:
                        raise api_error(item)
                    await _write(send, shape.failed(api_error(item)))
                    await _end(send)
                    return
                if not isinstance(item, (TextDelta, Finished)):
                    continue
                if not self._stream:
                    if isinstance(item, Finished):
                        body = json.dumps(shape.whole(item, self._prompt)).encode()
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": [(b"content-type", b"application/json")]})
                        await send({"type": "http.response.body", "body": body})
                        return
                    shape.feed(item.text)
                    continue
                if not started:
                    started = await _start_stream(send)
                    await _write(send, shape.opening())
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


async def _watch_disconnect(receive: _Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()  # the pump's stream closes: the Space job is cancelled upstream
            return


async def _start_stream(send: _Send) -> bool:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
    ]})
    return True


async def _write(send: _Send, data: bytes) -> None:
    if data:
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def _end(send: _Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _comment(queue: QueueUpdate | None) -> bytes:
    if queue is None or queue.position is None:
        return b": keep-alive\n\n"
    size = f"/{queue.queue_size}" if queue.queue_size is not None else ""
    return f": queued {queue.position}{size}\n\n".encode()


def _data(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


# -- the two answer shapes ----------------------------------------------------------------------


class _Shape:
    """How one API writes an answer: its chunks (streaming) or its whole body."""

    def __init__(self, model: str, reasoning: Reasoning) -> None:
        self.model = model
        self.split = reasoning == "split"
        self.splitter = Splitter()

    def parts(self, text: str) -> tuple[str, str]:
        if not self.split:
            self.splitter.text += text
            return "", text
        got = self.splitter.feed(text)
        return got.reasoning, got.content

    def rest(self) -> tuple[str, str]:
        if not self.split:
            return "", ""
        got = self.splitter.finish()
        return got.reasoning, got.content

    def feed(self, text: str) -> None:
        self.parts(text)

    def answer(self) -> tuple[str, str]:
        """(reasoning, content) of the whole answer (after the last delta)."""
        if not self.split:
            return "", self.splitter.text
        self.splitter.finish()
        return self.splitter.reasoning, self.splitter.content

    def opening(self) -> bytes:
        raise NotImplementedError

    def delta(self, text: str) -> bytes:
        raise NotImplementedError

    def closing(self, done: Finished, prompt: str) -> bytes:
        raise NotImplementedError

    def failed(self, error: APIError) -> bytes:
        raise NotImplementedError

    def whole(self, done: Finished, prompt: str) -> Any:
        raise NotImplementedError


class _Chat(_Shape):
    def __init__(self, model: str, reasoning: Reasoning, include_usage: bool) -> None:
        super().__init__(model, reasoning)
        self.id = new_id("chatcmpl")
        self.created = now()
        self.include_usage = include_usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _data({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        })

    def _parts_delta(self, reasoning: str, content: str) -> bytes:
        out = b""
        if reasoning:
            out += self._chunk({"reasoning_content": reasoning, "reasoning": reasoning})
        if content:
            out += self._chunk({"content": content})
        return out

    def opening(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, text: str) -> bytes:
        return self._parts_delta(*self.parts(text))

    def closing(self, done: Finished, prompt: str) -> bytes:
        out = self._parts_delta(*self.rest()) + self._chunk({}, "stop")
        if self.include_usage:
            out += _data({"id": self.id, "object": "chat.completion.chunk",
                          "created": self.created, "model": self.model, "choices": [],
                          "usage": usage(prompt, done.text)})
        return out + b"data: [DONE]\n\n"

    def failed(self, error: APIError) -> bytes:
        return _data(error.body()) + b"data: [DONE]\n\n"

    def whole(self, done: Finished, prompt: str) -> Any:
        reasoning, content = self.answer()
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.split:
            message["reasoning_content"] = message["reasoning"] = reasoning
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": usage(prompt, done.text),
        }


class _Responses(_Shape):
    """The Responses API: reasoning and message output items, and its event sequence."""

    def __init__(self, model: str, reasoning: Reasoning) -> None:
        super().__init__(model, reasoning)
        self.id = new_id("resp")
        self.created = now()
        self.sequence = 0
        self.reasoning_id = new_id("rs")
        self.message_id = new_id("msg")
        self.open: str | None = None  # "reasoning" or "message": the item being streamed
        self.reasoning_text = ""
        self.content_text = ""

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        return f"event: {kind}\n".encode() + _data(payload)

    def _response(self, status: str, output: list[Any], use: Any = None) -> dict[str, Any]:
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": output, "parallel_tool_calls": False,
            "tool_choice": "none", "tools": [], "usage": use, "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {},
            "temperature": None, "top_p": None,
        }

    def _reasoning_item(self, text: str) -> dict[str, Any]:
        return {"type": "reasoning", "id": self.reasoning_id, "summary": [],
                "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}

    def _message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status else []
        return {"type": "message", "id": self.message_id, "role": "assistant",
                "status": status, "content": content}

    def _outputs(self) -> list[Any]:
        items = [self._reasoning_item(self.reasoning_text)] if self.reasoning_text else []
        return [*items, self._message_item(self.content_text)]

    def opening(self) -> bytes:
        return (self._event("response.created", response=self._response("in_progress", []))
                + self._event("response.in_progress",
                              response=self._response("in_progress", [])))

    def _close_reasoning(self) -> bytes:
        out = self._event("response.reasoning_text.done", item_id=self.reasoning_id,
                          output_index=0, content_index=0, text=self.reasoning_text)
        return out + self._event("response.output_item.done", output_index=0,
                                 item=self._reasoning_item(self.reasoning_text))

    def _stream_parts(self, reasoning: str, content: str) -> bytes:
        out = b""
        if reasoning:
            if self.open is None:
                self.open = "reasoning"
                out += self._event("response.output_item.added", output_index=0,
                                   item={**self._reasoning_item(""), "status": "in_progress"})
            self.reasoning_text += reasoning
            out += self._event("response.reasoning_text.delta", item_id=self.reasoning_id,
                               output_index=0, content_index=0, delta=reasoning)
        if content:
            out += self._open_message()
            self.content_text += content
            out += self._event("response.output_text.delta", item_id=self.message_id,
                               output_index=self._message_index(), content_index=0,
                               delta=content, logprobs=[])
        return out

    def _message_index(self) -> int:
        return 1 if self.reasoning_text else 0

    def _open_message(self) -> bytes:
        if self.open == "message":
            return b""
        out = self._close_reasoning() if self.open == "reasoning" else b""
        self.open = "message"
        index = self._message_index()
        out += self._event("response.output_item.added", output_index=index,
                           item=self._message_item("", "in_progress"))
        return out + self._event("response.content_part.added", item_id=self.message_id,
                                 output_index=index, content_index=0,
                                 part={"type": "output_text", "text": "", "annotations": []})

    def delta(self, text: str) -> bytes:
        return self._stream_parts(*self.parts(text))

    def closing(self, done: Finished, prompt: str) -> bytes:
        out = self._stream_parts(*self.rest()) + self._open_message()
        index = self._message_index()
        part = {"type": "output_text", "text": self.content_text, "annotations": []}
        out += self._event("response.output_text.done", item_id=self.message_id,
                           output_index=index, content_index=0, text=self.content_text,
                           logprobs=[])
        out += self._event("response.content_part.done", item_id=self.message_id,
                           output_index=index, content_index=0, part=part)
        out += self._event("response.output_item.done", output_index=index,
                           item=self._message_item(self.content_text))
        return out + self._event("response.completed", response={
            **self._response("completed", self._outputs(), self._usage(prompt, done.text)),
            "output_text": self.content_text,
        })

    @staticmethod
    def _usage(prompt: str, text: str) -> dict[str, int]:
        counts = usage(prompt, text)
        return {"input_tokens": counts["prompt_tokens"],
                "output_tokens": counts["completion_tokens"],
                "total_tokens": counts["total_tokens"]}

    def failed(self, error: APIError) -> bytes:
        body = error.body()["error"]
        return (self._event("error", message=body["message"], code=body["code"], param=None)
                + self._event("response.failed", response={
                    **self._response("failed", self._outputs()), "error": {
                        "code": body["code"], "message": body["message"]}}))

    def whole(self, done: Finished, prompt: str) -> Any:
        self.reasoning_text, self.content_text = self.answer()
        return {**self._response("completed", self._outputs(), self._usage(prompt, done.text)),
                "output_text": self.content_text}


# -- the server --------------------------------------------------------------------------------


class _Server:
    def __init__(self, session: SessionLike, reasoning: Reasoning, running: int, waiting: int,
                 hold: float, keepalive: float) -> None:
        self.session = session
        self.reasoning = reasoning
        self.slots = _Slots(running, waiting)
        self.hold = hold
        self.keepalive = keepalive

    async def _body(self, request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError as exc:
            raise APIError(400, f"The request body is not JSON: {exc}") from None

    def _ask(self, messages: list[Any]) -> tuple[Any, str]:
        """The session's event stream for ``messages`` (bad input raises now: a 400)."""
        try:
            prompt = build_prompt(messages).text
            return self.session.events(messages), prompt
        except InputError as exc:
            raise api_error(exc) from None

    async def chat(self, request: Request) -> Response:
        try:
            asked = ChatRequest.parse(await self._body(request))
            events, prompt = self._ask(asked.messages)
        except APIError as error:
            return _error_response(error)
        shape = _Chat(asked.model, self.reasoning, asked.include_usage)
        return _Answer(self, events, prompt, asked.stream, shape)

    async def responses(self, request: Request) -> Response:
        try:
            asked = ResponsesRequest.parse(await self._body(request))
            events, prompt = self._ask(asked.messages)
        except APIError as error:
            return _error_response(error)
        return _Answer(self, events, prompt, asked.stream, _Responses(asked.model, self.reasoning))

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(m) for m in MODELS]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in MODELS:
            return _error_response(APIError(
                404, f"The model {name!r} does not exist", code="model_not_found", param="model"
            ))
        return JSONResponse(model_card(name))

    async def health(self, request: Request) -> Response:
        status = getattr(self.session, "status", None)
        if callable(status):
            spaces = [_jsonable(asdict(row)) for row in status()]
        else:
            spaces = [{"space": getattr(self.session, "space", "?"), "state": "ok"}]
        healthy = any(row.get("state") == "ok" for row in spaces)
        return JSONResponse({"status": "ok" if healthy else "degraded", "spaces": spaces},
                            status_code=200 if healthy else 503)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_response(APIError(404, f"No route {request.method} {request.url.path}",
                                    code="not_found"))


def app(
    session: SessionLike,
    *,
    api_key: str | None = None,
    reasoning: Reasoning = "split",
    cors_origins: Sequence[str] = (),
    max_running: int = 64,
    max_waiting: int = 256,
    hold: float = 10.0,
    keepalive: float = 10.0,
    close_session: bool = False,
) -> Any:
    """An ASGI app serving ``session`` (a :class:`~qvq_gradio.Session` or
    :class:`~qvq_gradio.Pool`) as the OpenAI chat-completions and Responses APIs.

    ``api_key``: required as ``Authorization: Bearer ...`` on ``/v1/...``. ``reasoning``:
    ``split`` (the reasoning in ``reasoning_content``/``reasoning``, the final section in
    ``content``) or ``inline`` (the Space's text as is). ``max_running`` answers at once, up
    to ``max_waiting`` more in line, past that 429. ``hold``: seconds a stream's headers wait
    for the first text; ``keepalive``: seconds between keep-alive comments after that.
    ``close_session``: close the session when the app shuts down.
    """
    if reasoning not in ("split", "inline"):
        raise ValueError(f"reasoning must be 'split' or 'inline', got {reasoning!r}")
    server = _Server(session, reasoning, max_running, max_waiting, hold, keepalive)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_session:
                await session.aclose()

    routes = [
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.model, methods=["GET"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/responses", server.responses, methods=["POST"]),
        Route("/health", server.health, methods=["GET"]),
    ]
    served: Any = Starlette(routes=routes, lifespan=lifespan,
                            exception_handlers={404: _not_found})
    if api_key:
        served = _RequireKey(served, api_key)
    if cors_origins:
        # Outermost: a browser's preflight carries no key, and is answered before the check.
        served = CORSMiddleware(served, allow_origins=list(cors_origins),
                                allow_methods=["GET", "POST"],
                                allow_headers=["authorization", "content-type"])
    return served


