"""The server: Starlette routes over one session (or pool), every answer in the request's task.

Each answer runs as one ASGI coroutine (:class:`~.answer.Answer`) and is written by the
API's :class:`~.writers.Writer`. ``/v1/...`` needs the API key when one is set (a pure ASGI
middleware, so a 401 is in OpenAI's shape too); CORS, when asked for, is outermost.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InputError
from ..prompt import build_prompt
from ..protocol import SessionLike
from .answer import Answer, Receive, Send, Slots, error_response
from .draining import Draining, shutting_down
from .errors import APIError, api_error
from .limits import Limits, body_too_large, check_images
from .shapes import MODELS, ChatRequest, ResponsesRequest, model_card
from .writers import ChatWriter, Reasoning, ResponsesWriter, Writer

__all__ = ["Reasoning", "app"]

log = logging.getLogger("qvq_gradio")

_Asked = TypeVar("_Asked", ChatRequest, ResponsesRequest)


class _RequireKey:
    """Pure ASGI: ``/v1/...`` needs ``Authorization: Bearer <key>`` (a 401 in OpenAI's shape)."""

    def __init__(self, app: Any, key: str) -> None:
        self._app = app
        self._key = f"Bearer {key}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/v1"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._key):
                error = APIError(401, "Invalid or missing API key: send it in the "
                                 "Authorization header, with the scheme Bearer",
                                 "invalid_request_error", "invalid_api_key")
                await error_response(error)(scope, receive, send)
                return
        await self._app(scope, receive, send)


# -- the server --------------------------------------------------------------------------------


class _Server:
    def __init__(self, models: Mapping[str, SessionLike], reasoning: Reasoning, running: int,
                 waiting: int, hold: float, keepalive: float, limits: Limits,
                 draining: Draining) -> None:
        self.models = dict(models)
        #: each session once (a model may have several names)
        self.sessions = list({id(s): s for s in self.models.values()}.values())
        self.reasoning = reasoning
        self.slots = Slots(running, waiting)
        self.hold = hold
        self.keepalive = keepalive
        self.limits = limits
        self.draining = draining
        #: each model's image options (its session's), within the server's caps
        self.image_options = {
            name: limits.image_options(getattr(session, "image_options", None))
            for name, session in self.models.items()
        }

    async def _body(self, request: Request) -> Any:
        cap = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise body_too_large(cap)  # refused before a byte of the body is read
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cap:
                raise body_too_large(cap)  # a chunked body: read no further
        try:
            return json.loads(body)
        except ValueError as exc:
            raise APIError(400, f"The request body is not JSON: {exc}") from None

    async def _serve(
        self, request: Request, parse: Callable[[Any], _Asked], writer: Callable[[_Asked], Writer]
    ) -> Response:
        """The answer to one request of either API; bad input is a 400 before anything is
        sent."""
        try:
            if self.draining.begun:
                raise shutting_down()
            asked = parse(await self._body(request))
            prompt = build_prompt(asked.messages)
            check_images(prompt.images)  # nothing on this server's disk, on a client's word
            events = self.models[asked.model].events(
                asked.messages, image_options=self.image_options[asked.model], **asked.sampling
            )
        except APIError as error:
            return error_response(error)
        except InputError as exc:
            return error_response(api_error(exc))
        return Answer(self, events, prompt.text, asked.stream, writer(asked))

    async def chat(self, request: Request) -> Response:
        return await self._serve(
            request, lambda raw: ChatRequest.parse(raw, self.names),
            lambda asked: ChatWriter(asked.model, self.reasoning, asked.include_usage),
        )

    async def responses(self, request: Request) -> Response:
        return await self._serve(
            request, lambda raw: ResponsesRequest.parse(raw, self.names),
            lambda asked: ResponsesWriter(asked.model, self.reasoning),
        )

    @property
    def names(self) -> list[str]:
        return list(self.models)

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(m) for m in self.models]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in self.models:
            return error_response(APIError(
                404, f"The model {name!r} does not exist", code="model_not_found", param="model"
            ))
        return JSONResponse(model_card(name))

    async def health(self, request: Request) -> Response:
        spaces: list[dict[str, Any]] = []
        for session in self.sessions:
            status = getattr(session, "status", None)
            if callable(status):
                spaces.extend(_jsonable(asdict(row)) for row in status())
            else:
                spaces.append({"space": getattr(session, "space", "?"), "state": "ok"})
        healthy = any(row.get("state") == "ok" for row in spaces)
        return JSONResponse({"status": "ok" if healthy else "degraded", "spaces": spaces},
                            status_code=200 if healthy else 503)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


async def _framework_error(request: Request, exc: Exception) -> Response:
    """What Starlette answers itself (no such route, a method not allowed), in OpenAI's shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        error = APIError(404, f"No route {request.method} {request.url.path}", code="not_found")
    elif status == 405:
        error = APIError(405, f"{request.method} is not allowed on {request.url.path}",
                         code="method_not_allowed")
    else:
        detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error"
        error = APIError(status, str(detail))
    return error_response(error, exc.headers if isinstance(exc, HTTPException) else None)


def app(
    session: SessionLike | Mapping[str | None, SessionLike],
    *,
    api_key: str | None = None,
    reasoning: Reasoning = "split",
    cors_origins: Sequence[str] = (),
    max_running: int = 64,
    max_waiting: int = 256,
    hold: float = 10.0,
    keepalive: float = 10.0,
    close_session: bool = False,
    limits: Limits | None = None,
    draining: Draining | None = None,
) -> Any:
    """An ASGI app serving ``session`` (a :class:`~qvq_gradio.Session` or
    :class:`~qvq_gradio.Pool`) as the OpenAI chat-completions and Responses APIs; or several,
    one per model name (a mapping; its ``None`` entry answers to the seed's model ids), each
    request routed by its ``model``.

    ``api_key``: required as ``Authorization: Bearer ...`` on ``/v1/...``. ``reasoning``:
    ``split`` (the reasoning in ``reasoning_content``/``reasoning``, the final section in
    ``content``) or ``inline`` (the Space's text as is). ``max_running`` answers at once, up
    to ``max_waiting`` more in line, past that 429. ``hold``: seconds a stream's headers wait
    for the first text; ``keepalive``: seconds between keep-alive comments after that.
    ``close_session``: close the session when the app shuts down. ``limits``: the caps on
    what a request may make the server read (:class:`~.limits.Limits`; its defaults when not
    given). ``draining``: the server's stop (:class:`~.draining.Draining`), begun by whatever
    runs the app (``qvq serve`` does it on SIGINT and SIGTERM).

    Images in a request are ``data:`` URIs or http(s) URLs, nothing else: a path or any other
    scheme is a 400 that reads nothing (the server's disk is not its clients'); URLs are
    fetched from public addresses only unless ``limits.allow_private_urls``.
    """
    if reasoning not in ("split", "inline"):
        raise ValueError(f"reasoning must be 'split' or 'inline', got {reasoning!r}")
    named = session if isinstance(session, Mapping) else {None: session}
    models: dict[str, SessionLike] = {}
    for name, asking in named.items():  # unnamed specs answer to the seed's model ids
        models.update({name: asking} if name is not None else dict.fromkeys(MODELS, asking))
    server = _Server(models, reasoning, max_running, max_waiting, hold, keepalive,
                     limits or Limits(), draining or Draining())

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_session:
                for asking in server.sessions:
                    await asking.aclose()

    routes = [
        Route("/v1/models", server.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.model, methods=["GET"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/responses", server.responses, methods=["POST"]),
        Route("/health", server.health, methods=["GET"]),
    ]
    served: Any = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        HTTPException: _framework_error,
        Exception: _framework_error,  # our bug: a 500 in OpenAI's shape (uvicorn logs it)
    })
    if api_key:
        served = _RequireKey(served, api_key)
    if cors_origins:
        # Outermost: a browser's preflight carries no key, and is answered before the check.
        served = CORSMiddleware(served, allow_origins=list(cors_origins),
                                allow_methods=["GET", "POST"],
                                allow_headers=["authorization", "content-type"])
    return served


