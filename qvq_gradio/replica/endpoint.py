"""The replica as an OpenAI-compatible endpoint (``--shape openai``): a stand-in for DashScope's
compatible mode, the Hugging Face router or vLLM, on 127.0.0.1.

``POST /v1/chat/completions`` (streamed or whole) answers with the replica's receipt and words,
and ``GET /v1/models`` lists its model. The thinking goes where ``think`` says: a delta field
named ``reasoning_content`` or ``reasoning`` (both are in use), ``<think>`` tags in the content,
or (``none``) the content itself; the final answer is the content. Usage is counted in words.

What tests need to see is in the request log like any replica's: the text of every message
(``prompt``), every image part (``images``: ``data:`` URIs decoded and described; a URL is
refused with a 400, the replica fetches nothing), the model and sampling asked (``params``), and
how the request ended: ``cancelled`` when the client left mid-stream (a disconnect log).

``--require-token KEY`` is the key check (401 otherwise). The failure modes as an endpoint has
them: ``quota`` (429 with ``Retry-After``, as does the quota budget), ``no-quota`` (429 saying
the account has no quota: ``insufficient_quota``), ``bad-request`` (400), ``server`` and
``before`` (500), ``echo-token`` (401 that echoes the key it was sent, as some servers do),
``mid`` (an error chunk after ``after`` tokens) and ``hang`` (silence after ``after`` tokens).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from .app import Answers, control_routes, gradio
from .config import ReplicaConfig
from .receipt import describe_image

__all__ = ["endpoint_app"]

_HEADING = "\n\n**Final Answer**\n\n"


class _Refused(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code}}


def _read(messages: Any) -> tuple[str, list[bytes], str]:
    """The texts of the messages (one per line), their images' bytes, and the system text."""
    if not isinstance(messages, list) or not messages:
        raise _Refused(400, "'messages' must be a non-empty list", "invalid_request_error")
    texts: list[str] = []
    images: list[bytes] = []
    system = ""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if not isinstance(part, dict):
                raise _Refused(400, "a content part must be an object", "invalid_request_error")
            if part.get("type") == "image_url":
                images.append(_image(part.get("image_url")))
            elif part.get("text") is not None:
                texts.append(str(part["text"]))
                if message.get("role") == "system":
                    system += str(part["text"])
    return "\n".join(texts), images, system


def _image(given: Any) -> bytes:
    url = str(given.get("url") if isinstance(given, dict) else given or "")
    head, comma, data = url.partition(",")
    if not url.startswith("data:") or not comma or ";base64" not in head:
        raise _Refused(400, "the replica takes images as data: URIs only (it fetches nothing)",
                       "invalid_request_error")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(400, "an image's data: URI is not base64", "invalid_request_error") from None


def _refusal(settings: ReplicaConfig, answers: Answers, authorization: str) -> None:
    """The failure modes that strike before the first token, as an endpoint answers them."""
    fail = settings.fail
    if fail in ("before", "server"):
        raise _Refused(500, "replica: failing before the first token, as asked", "server_error")
    if fail == "bad-request":
        raise _Refused(400, "replica: refusing the request, as asked", "invalid_request_error")
    if fail == "no-quota":
        raise _Refused(429, "You exceeded your current quota, please check your plan and billing "
                       "details.", "insufficient_quota", "insufficient_quota")
    if fail == "echo-token":
        raise _Refused(401, f"Incorrect API key provided: {authorization.removeprefix('Bearer ')}",
                       "invalid_request_error", "invalid_api_key")
    wait = settings.quota_retry if fail == "quota" else answers.quota.wait()
    if wait is not None:
        raise _Refused(429, f"Rate limit reached for requests: retry in {wait:.0f} s",
                       "requests", "rate_limit_exceeded", {"Retry-After": f"{max(wait, 0):.0f}"})


class _Deltas:
    """The replica's whole answer so far, update by update, as an endpoint's deltas."""

    def __init__(self, think: str) -> None:
        self.think = think
        self.sent: dict[str, str] = {}

    def __call__(self, out: str) -> dict[str, str]:
        thinking, heading, answer = out.partition(_HEADING)
        if self.think in ("reasoning_content", "reasoning"):
            shown = {self.think: thinking, "content": answer}
        elif self.think == "tags":
            shown = {"content": f"<think>\n{thinking}" + (
                f"\n</think>\n\n{answer}" if heading else "")}
        else:
            shown = {"content": out}
        delta = {}
        for field, text in shown.items():
            before = self.sent.get(field, "")
            if len(text) > len(before):
                delta[field] = text[len(before):]
                self.sent[field] = text
        return delta


def _chunk(ident: str, model: str, delta: dict[str, Any] | None,
           usage: dict[str, int] | None = None, finish: str | None = None) -> str:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": finish}
    ]
    chunk: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk",
                             "created": int(time.time()), "model": model, "choices": choices}
    if usage is not None:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk)}\n\n"


def endpoint_app(answers: Answers) -> Any:
    """The replica's endpoint as an ASGI app (FastAPI: ``/v1/...`` and ``/replica/...``)."""
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse

    gr = gradio()
    base = answers.base
    app = FastAPI()
    control_routes(app, replace(base, token=None), answers.log)  # the key is checked here

    def refused(error: _Refused) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    def check_key(request: Request) -> None:
        if base.token is not None and request.headers.get("authorization") != (
            f"Bearer {base.token}"
        ):
            raise _Refused(401, "Incorrect API key provided", "invalid_request_error",
                           "invalid_api_key")

    async def models(request: Request) -> Any:
        try:
            check_key(request)
        except _Refused as error:
            return refused(error)
        name = base.served_model or "replica"
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "replica"}
        ]})

    async def chat(request: Request) -> Any:
        try:
            check_key(request)
            try:
                body = await request.json()
            except ValueError:
                raise _Refused(400, "the body is not JSON", "invalid_request_error") from None
            if not isinstance(body, dict):
                raise _Refused(400, "the body is not an object", "invalid_request_error")
            text, images, system = _read(body.get("messages"))
            try:
                settings = base.with_directives(text)
            except ValueError as exc:
                raise _Refused(400, str(exc), "invalid_request_error") from None
        except _Refused as error:
            return refused(error)
        record = answers.start(text, request)
        for image in images:  # described before any refusal: the log shows what came
            record.images.append(await asyncio.to_thread(describe_image, image))
        record.params = {
            "model": body.get("model"), "system": system, "stream": bool(body.get("stream")),
            "messages": len(body["messages"]),
            **{k: body[k] for k in ("temperature", "max_tokens", "top_p") if k in body},
        }
        try:
            _refusal(settings, answers, request.headers.get("authorization", ""))
        except _Refused as error:
            record.state, record.ended = "failed", time.monotonic()
            answers.log.update()
            return refused(error)
        model = base.served_model or str(body.get("model") or "replica")
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        deltas = _Deltas(settings.think)
        prompt_tokens = len(text.split()) + 1

        def usage() -> dict[str, int]:
            done = record.tokens_generated + 2
            return {"prompt_tokens": prompt_tokens, "completion_tokens": done,
                    "total_tokens": prompt_tokens + done}

        async def chunks() -> AsyncIterator[str]:
            updates = answers.stream(record, text, [], request, gate=False)
            try:
                yield _chunk(ident, model, {"role": "assistant", "content": ""})
                async for out in updates:
                    delta = deltas(out)
                    if delta:
                        yield _chunk(ident, model, delta)
                yield _chunk(ident, model, {}, finish="stop")
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield _chunk(ident, model, None, usage())
            except gr.Error as exc:
                error = {"message": str(exc), "type": "server_error"}
                yield f"data: {json.dumps({'error': error})}\n\n"
            finally:
                await updates.aclose()  # a client that left: the record says cancelled
            yield "data: [DONE]\n\n"

        if body.get("stream"):
            return StreamingResponse(chunks(), media_type="text/event-stream")
        try:
            async for _ in answers.stream(record, text, [], request, gate=False):
                pass
        except gr.Error as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "server_error"}}, 500)
        message = {"role": "assistant", "content": "", **deltas(record.text)}
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": int(time.time()),
            "model": model, "usage": usage(),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        })

    # Starlette's own routes: no signature for FastAPI to read
    app.add_route("/v1/models", models, methods=["GET"])
    app.add_route("/v1/chat/completions", chat, methods=["POST"])
    return app
