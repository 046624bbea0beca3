"""An OpenAI-compatible endpoint as an upstream: chat completions over httpx, streamed.

:class:`OpenAIUpstream` answers a :class:`~qvq_gradio.upstreams.Request` with one streamed
``POST {base}/chat/completions`` (a caller who wants a whole answer gets the stream gathered:
some providers answer their reasoning models only streaming). The system message and the
turns go as they are; the images, prepared as for a Space (several each on its own, no
grid), as ``data:`` URI parts of the last user message; temperature, max tokens and top_p
are passed through. Thinking comes from ``reasoning_content`` or ``reasoning`` (both names
are in use) as :class:`~qvq_gradio.events.ReasoningDelta`, the answer from ``content``.

Errors become ours here, at one point (:func:`_refused`, :func:`_failed`): a 429 with
``Retry-After`` is a quota error the pool cools down on (but one saying the account has no
quota or billing is permanent: the member is not asked again); 401/403 an authentication error
naming the key's variable; other 4xx the endpoint's own message; 5xx, resets and timeouts are
transient, retried and failed over as a Space's are. Closing the stream (a client leaving, an
early ``break``, Ctrl-C) closes the request at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import time
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import httpx

from ..._tls import shared_ssl_context
from ...endpoints import Endpoint, parse_endpoint
from ...errors import (
    AppError,
    AuthenticationError,
    ConnectTimeoutError,
    IdleTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
    SpaceConnectionError,
    TotalTimeoutError,
)
from ...events import Event, Finished, ReasoningDelta, ShapeFound, TextDelta
from ...thinking import Said as Split
from ...thinking import split_thinking
from .. import Limits, Request

__all__ = ["OpenAIUpstream"]

#: What a 429 says when the account itself cannot be served (not a moment's rate limit).
_NO_QUOTA: Final = ("insufficient_quota", "billing", "quota_exceeded_permanently", "arrearage")
_REASONING: Final = ("reasoning_content", "reasoning")


class OpenAIUpstream:
    """One model at one OpenAI-compatible endpoint (a spec: ``openai+BASE_URL#MODEL``)."""

    #: Several images go as several ``image_url`` parts (no grid).
    several_images = True

    def __init__(
        self,
        spec: str | Endpoint,
        *,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.endpoint = spec if isinstance(spec, Endpoint) else parse_endpoint(spec)
        self.proxy = proxy
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        #: one pooled client per event loop (httpx's pools belong to one loop), with its loop
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<OpenAIUpstream {self.endpoint.name}>"

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the connection ---------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        """The running loop's pooled client (httpx's pools belong to one loop)."""
        loop = asyncio.get_running_loop()
        found = self._clients.get(id(loop))
        if found is None or found[0] is not loop:
            client = httpx.AsyncClient(
                proxy=self.proxy,
                verify=shared_ssl_context(),
                timeout=httpx.Timeout(60.0, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            found = self._clients[id(loop)] = (loop, client)
        return found[1]

    def _headers(self) -> dict[str, str]:
        headers = {**self.headers, "Accept": "text/event-stream"}
        key = self.endpoint.key()
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def aclose(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        here = asyncio.get_running_loop()
        with anyio.CancelScope(shield=True):
            for loop, client in clients:
                if loop is here:
                    await client.aclose()
                else:
                    _close_on(loop, client)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`: each client closed on its own loop (waiting at
        most a second for each; a loop that has ended took its connections with it)."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for loop, client in clients:
            _close_on(loop, client)

    # -- health -------------------------------------------------------------------------------

    async def ready(self) -> None:
        """``GET {base}/models``: the endpoint answers and takes the key."""
        await self.models()

    async def models(self) -> list[str]:
        """The model ids the endpoint lists (``GET {base}/models``; raises what a question
        would meet: the key refused, the endpoint unreachable)."""
        try:
            response = await self._client().get(
                self.endpoint.url("models"), headers=self._headers(),
                timeout=self.connect_timeout,
            )
        except httpx.HTTPError as exc:
            raise _failed(exc, self.name, "") from exc
        if response.status_code >= 400:
            raise _refused(response, response.text, self.endpoint, "")
        try:
            listed = response.json().get("data") or []
        except (ValueError, AttributeError):
            return []
        return [str(m.get("id")) for m in listed if isinstance(m, dict) and m.get("id")]

    def describe(self) -> str:
        """How it is asked, in one line (``qvq status``, ``qvq info``)."""
        key = (f"the key from ${self.endpoint.key_var}" if self.endpoint.key_var
               else "no key sent")
        return (f"openai: streamed chat completions, model {self.endpoint.model!r} ({key}; "
                "images as data: URI parts; thinking from reasoning_content, reasoning or "
                "<think> tags)")

    def probe_blocking(self, timeout: float) -> bool:
        try:
            response = httpx.get(
                self.endpoint.url("models"), headers=self._headers(), timeout=timeout,
                proxy=self.proxy, verify=shared_ssl_context(),
            )
        except (httpx.HTTPError, ResponseError, ValueError):
            return False
        return response.status_code < 500 and response.status_code != 429

    async def app(self) -> str | None:
        return None  # an endpoint's model id says nothing of a rebuild

    # -- answers ------------------------------------------------------------------------------

    def answer(self, request: Request) -> AsyncGenerator[Event, None]:
        return self._answer(request)

    async def _body(self, request: Request) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [
            {"role": role, "content": text} for role, text in request.turns
        ] or [{"role": "user", "content": request.text}]
        upload = request.upload
        if upload is not None and (upload.parts or upload.target):
            # several images as several parts; one as its part (a grid only for a Space)
            paths = [part.path for part in upload.parts] or [upload.target]
            images = await anyio.to_thread.run_sync(lambda: [_data_uri(p) for p in paths])
            last = max(i for i, m in enumerate(messages) if m["role"] != "assistant")
            text = messages[last]["content"]
            if upload.note and not upload.parts:
                text = f"{upload.note}\n{text}"
            messages[last] = {"role": messages[last]["role"], "content": [
                {"type": "text", "text": text},
                *({"type": "image_url", "image_url": {"url": image}} for image in images),
            ]}
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(dict(request.sampling))
        return body

    async def _answer(self, request: Request) -> AsyncGenerator[Event, None]:
        start, limits = request.start, request.limits
        body = await self._body(request)
        headers = self._headers()  # an unset key variable raises here: nothing sent
        yield ShapeFound(self.name, "openai", None)
        said = _Said()
        deadline = limits.deadline(start)
        # No cancel scope spans a yield here (the blocking API resumes this generator from
        # one task after another): each read is bounded by httpx, the total checked per line.
        read = min(filter(None, (limits.idle, limits.total)), default=None)
        url = self.endpoint.url("chat/completions")
        try:
            async with self._client().stream(
                "POST", url, json=body, headers=headers,
                timeout=httpx.Timeout(read, connect=limits.connect),
            ) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode("utf-8", "replace")
                    raise _refused(response, text, self.endpoint, "")
                async for line in response.aiter_lines():  # closed with the response
                    if anyio.current_time() > deadline:
                        raise _too_long(limits, said.text, self.name)
                    for event in said.line(line):
                        yield event
                for event in said.end():
                    yield event
        except httpx.HTTPError as exc:
            if anyio.current_time() > deadline:
                raise _too_long(limits, said.text, self.name) from None
            raise _failed(exc, self.name, said.text, limits) from exc
        now = anyio.current_time()
        applied = {k: v for k, v in request.sampling.items() if v is not None}
        yield Finished(
            text=said.text, space=self.name, elapsed=now - start,
            time_to_first_token=None if said.first is None else said.first - start,
            queue_wait=None, reasoning=said.reasoning, shape="openai", applied=applied,
            model=said.model, usage=said.counts(),
        )


class _Said:
    """The stream read line by line: thinking, text, the model id and usage it reported.

    Thinking comes in a delta field (``reasoning_content`` or ``reasoning``) or, from a server
    that does not parse it out (vLLM without a reasoning parser), inside ``<think>`` tags in
    the content: split as a Space's are (:func:`~qvq_gradio.thinking.split_thinking`).
    """

    def __init__(self) -> None:
        self.text = ""
        self.reasoning = ""
        self.first: float | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self._content = ""  #: the content as sent, while it may still hold thinking in tags
        self._split = Split()  #: what of it was given out as thinking and as text

    def counts(self) -> dict[str, int] | None:
        """The usage the endpoint reported, as whole token counts (None without one)."""
        given = self.usage or {}
        names = ("prompt_tokens", "completion_tokens", "total_tokens")
        if not all(isinstance(given.get(n), int) for n in names):
            return None
        return {n: int(given[n]) for n in names}

    def line(self, line: str) -> list[Event]:
        if not line.startswith("data:"):
            return []
        data = line[5:].strip()
        if not data or data == "[DONE]":
            return []
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            return []
        if isinstance(chunk, dict) and "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise AppError(str(error.get("message") or chunk["error"]), text=self.text)
        self.model = chunk.get("model") or self.model
        self.usage = chunk.get("usage") or self.usage
        events: list[Event] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            thought = next((delta[k] for k in _REASONING if delta.get(k)), None)
            if thought:
                self.reasoning += thought
                events.append(ReasoningDelta(thought))
            if delta.get("content"):
                events += self._content_of(str(delta["content"]))
        if events and self.first is None:
            self.first = anyio.current_time()
        return events

    def end(self) -> list[Event]:
        """What a tag held back at the end of the stream still owes."""
        return self._content_of("", final=True) if self._content else []

    def _content_of(self, more: str, final: bool = False) -> list[Event]:
        if self._split.text:  # the answer has begun: the rest is answer, tags and all
            self.text += more
            return [TextDelta(more)] if more else []
        self._content += more
        split = split_thinking(self._content, final=final)
        thought = split.reasoning[len(self._split.reasoning) :]
        text = split.text[len(self._split.text) :]
        self._split = split
        events: list[Event] = []
        if thought:
            self.reasoning += thought
            events.append(ReasoningDelta(thought))
        if text:
            self.text += text
            events.append(TextDelta(text))
        return events


def _close_on(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
    """Close ``client`` on ``loop`` from another thread (or schedule it, from that loop)."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(client.aclose())
        return
    if not loop.is_running():
        return
    future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
    try:
        future.result(timeout=1.0)
    except Exception:  # the loop is ending: its sockets go with it
        future.cancel()


def _data_uri(path: str) -> str:
    """The prepared image file as a ``data:`` URI (blocking: a worker thread)."""
    kind = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def _message(text: str) -> tuple[str, str]:
    """The error body's message and code (an OpenAI error object, or the raw text)."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:500], ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or ""), str(error.get("code") or error.get("type") or "")
    return str(body)[:500], ""


def _refused(response: httpx.Response, text: str, endpoint: Endpoint, said: str) -> ResponseError:
    """The error for an HTTP error status from the endpoint (the one mapping point)."""
    status = response.status_code
    message, code = _message(text)
    where = endpoint.name
    if status == 429:
        if any(word in f"{code} {message}".lower() for word in _NO_QUOTA):
            return AuthenticationError(
                f"{endpoint.host} has no quota or billing for this account ({code or message})"
                f"{_key_hint(endpoint)}: it is not asked again", text=said, space=where,
            )
        wait = _retry_after(response)
        if wait is not None:
            return QuotaExceededError(f"{endpoint.host} is rate limiting us (429): {message}",
                                      retry_after=wait, text=said, space=where)
        return RateLimitError(f"{endpoint.host} is rate limiting us (429): {message}",
                              text=said, space=where)
    if status in (401, 403):
        return AuthenticationError(
            f"{endpoint.host} refused the key ({status}: {message}){_key_hint(endpoint)}",
            text=said, space=where,
        )
    if status >= 500:
        return SpaceConnectionError(f"{endpoint.host} failed ({status}): {message}",
                                    text=said, space=where)
    return AppError(f"{endpoint.host} refused the request ({status}): {message}",
                    text=said, space=where)


def _too_long(limits: Limits, said: str, where: str) -> TotalTimeoutError:
    return TotalTimeoutError(
        f"No complete answer within total_timeout={limits.total:g} s", text=said, space=where
    )


def _key_hint(endpoint: Endpoint) -> str:
    if endpoint.key_var is None:
        return "; no key is sent to this host: name its variable with &key=VAR"
    return f"; the key comes from ${endpoint.key_var}"


def _failed(
    exc: httpx.HTTPError, where: str, said: str, limits: Limits | None = None
) -> ResponseError:
    """The error for a request that failed on the way (no HTTP status)."""
    if isinstance(exc, httpx.ConnectTimeout):
        connect = limits.connect if limits is not None else 0.0
        return ConnectTimeoutError(f"{where} did not answer within {connect:g} s",
                                   text=said, space=where)
    if isinstance(exc, httpx.ReadTimeout) and limits is not None:
        return IdleTimeoutError(f"No new text for idle_timeout={limits.idle:g} s",
                                text=said, space=where)
    return SpaceConnectionError(f"Could not reach {where}: {type(exc).__name__}",
                                text=said, space=where)
