"""The replica's app: a Gradio ``/generate`` like the QVQ Space's, and its control routes.

:func:`build_app` mounts the Gradio app on FastAPI beside ``/replica/...`` routes that tests
use to read the request log. Each failure mode is one small function; the generator that
answers calls them at the moment the mode strikes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .config import TOGETHER_WAIT, ReplicaConfig
from .log import RequestLog, RequestRecord
from .quota import Quota, quota_message
from .receipt import answer_head, describe_image, other_function, other_function_text, word

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["Answers", "build_app", "gradio"]

_RECORDED_HEADERS = ("x-ip-token", "x-zerogpu-token")


def gradio() -> Any:
    with warnings.catch_warnings():
        # Gradio imports tqdm.auto, which warns in notebooks without ipywidgets.
        warnings.simplefilter("ignore")
        import gradio as gr
    return gr


def _error(message: str) -> BaseException:
    return gradio().Error(message, print_exception=False)  # type: ignore[no-any-return]


# -- failure modes: each raises (or hangs) when its moment comes ----------------------------------


def _fail_before() -> None:
    raise _error("replica: failing before the first token, as asked")


def _refuse_over_quota(refusal: str) -> None:
    raise _error(refusal)


def _echo_token(headers: Any) -> None:
    # Some Spaces echo the credential they were sent in their error: ours must never show it.
    sent = headers.get("x-hf-authorization", "(none)")
    raise _error(f"Unauthorized: {sent} is not a valid token ({sent.removeprefix('Bearer ')})")


def _fail_mid(tokens: int) -> None:
    raise _error(f"replica: failing after {tokens} tokens, as asked")


async def _hang() -> None:
    await asyncio.Event().wait()  # until cancelled


def _before_first_token(
    settings: ReplicaConfig, quota: Quota, request: Any
) -> None:
    """The failure modes that strike before any text: before, quota, echo-token."""
    if settings.fail in ("before", "no-quota", "bad-request", "server"):
        _fail_before()
    refusal = quota.refusal()
    if settings.fail == "quota":
        refusal = quota_message(settings.quota_retry)
    if refusal is not None:
        _refuse_over_quota(refusal)
    if settings.fail == "echo-token":
        _echo_token(request.headers)


async def _at_token(settings: ReplicaConfig, index: int) -> None:
    """The failure modes that strike after ``fail_after`` tokens: mid, hang."""
    if index != settings.fail_after:
        return
    if settings.fail == "mid":
        _fail_mid(index)
    if settings.fail == "hang":
        await _hang()


class _Groups:
    """``together=NAME:N``: members of a group wait for each other before their first token.

    A group that never fills stops waiting after :data:`TOGETHER_WAIT` seconds and goes on (a
    test of concurrency then fails on its own assertion instead of hanging)."""

    def __init__(self) -> None:
        self._arrived: dict[str, int] = {}
        self._full: dict[str, asyncio.Event] = {}

    async def arrive(self, name: str, size: int) -> None:
        self._arrived[name] = self._arrived.get(name, 0) + 1
        full = self._full.setdefault(name, asyncio.Event())
        if self._arrived[name] >= size:
            full.set()
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(full.wait(), TOGETHER_WAIT)


# -- the answer -----------------------------------------------------------------------------------


class Answers:
    """How the replica answers, whatever its shape: a record per request in the log, the
    failure modes at their moments, then the receipt and the words (see :meth:`stream`)."""

    def __init__(self, base: ReplicaConfig, log: RequestLog, quota: Quota) -> None:
        self.base = base
        self.log = log
        self.quota = quota
        self._groups = _Groups()

    def start(self, text: str, request: Any) -> RequestRecord:
        record = self.log.start(text)
        record.headers = {
            name: request.headers[name] for name in _RECORDED_HEADERS if name in request.headers
        }
        self.log.joined(record, getattr(request, "session_hash", None))
        return record

    async def stream(
        self, record: RequestRecord, text: str, images: list[str] | list[bytes], request: Any,
        *, gate: bool = True,
    ) -> AsyncGenerator[str, None]:
        """The whole answer so far, update by update; the record says how it ended.
        ``gate=False``: the failure modes before the first token were the caller's."""
        gr = gradio()
        try:
            settings = self.base.with_directives(text)
            for image in images:
                record.images.append(await asyncio.to_thread(describe_image, image))
            record.image = record.images[0] if record.images else None  # (or described before)
            record.tokens_planned = settings.tokens
            if settings.together is not None:
                await self._groups.arrive(*settings.together)
            if gate:
                _before_first_token(settings, self.quota, request)
            out = answer_head(text, record.image)
            record.yielded_at = time.monotonic()
            yield out
            record.yielded_at = None
            for i in range(settings.tokens):
                await _at_token(settings, i)
                if settings.delay:
                    await asyncio.sleep(settings.delay)
                out += word(i)
                record.tokens_generated += 1
                record.text = out
                record.yielded_at = time.monotonic()
                yield out
                record.yielded_at = None
            if settings.final:
                out += f"\n\n**Final Answer**\n\n\\boxed{{{settings.tokens}}}"
            record.text = out
            record.state = "done"
            yield out
        except gr.Error:
            record.state = "failed"
            raise
        except BaseException:
            record.state = "cancelled" if record.state == "running" else record.state
            raise
        finally:
            if record.state == "running":
                record.state = "cancelled"
            record.ended = time.monotonic()
            self.log.update()


def _generate_fn(answers: Answers) -> Callable[..., AsyncIterator[str]]:
    """The function served as ``/generate``: a generator of the whole answer so far."""
    gr = gradio()

    async def generate(image: str | None, text: str, request: Any) -> AsyncIterator[str]:
        record = answers.start(text, request)
        async for out in answers.stream(record, text, [image] if image else [], request):
            yield out

    # Gradio finds the request parameter by its annotation; with postponed annotations that is
    # a string naming a local import, so give it the class itself.
    generate.__annotations__["request"] = gr.Request
    return generate


def _blocks(base: ReplicaConfig, generate: Callable[..., AsyncIterator[str]]) -> Any:
    gr = gradio()
    with gr.Blocks(title="QVQ-72B replica", analytics_enabled=False) as blocks:
        gr.Markdown("# QVQ-72B replica\nA local stand-in for the QVQ-72B Space.")
        image_in = gr.Image(type="filepath", label="Image")
        text_in = gr.Textbox(label="Question")
        answer = gr.Textbox(label="Answer")
        if base.layout == "reordered":
            # Another function first: a client holding the old config's function index for
            # /generate would run this one.
            gr.Button("Describe").click(
                other_function, [image_in, text_in], answer, api_name="describe"
            )
        if base.layout == "text-only":
            gr.Button("Submit").click(other_function_text, [text_in], answer, api_name="generate")
        else:
            gr.Button("Submit").click(generate, [image_in, text_in], answer, api_name="generate")
    blocks.queue(default_concurrency_limit=base.concurrency, max_size=base.max_queue)
    return blocks


# -- the control routes ---------------------------------------------------------------------------


def control_routes(app: FastAPI, base: ReplicaConfig, log: RequestLog) -> None:
    from fastapi import Request
    from fastapi.responses import JSONResponse

    if base.token:
        expected = f"Bearer {base.token}"

        @app.middleware("http")
        async def require_token(request: Request, call_next: Any) -> Any:
            if not request.url.path.startswith("/replica/"):
                given = request.headers.get("x-hf-authorization") or request.headers.get(
                    "authorization"
                )
                if given != expected:
                    return JSONResponse({"detail": "Unauthorized"}, status_code=401)
            return await call_next(request)

    @app.get("/replica/requests")
    def requests() -> list[dict[str, Any]]:
        return log.all()

    @app.get("/replica/hits")
    def hits() -> dict[str, int]:
        return log.hits()

    @app.get("/replica/wait")
    def wait(marker: str, timeout: float = 30.0, ended: bool = True) -> Any:
        found = log.wait(marker, timeout, ended=ended)
        if found is None:
            return JSONResponse({"detail": f"no request with {marker!r}"}, status_code=408)
        return found

    @app.post("/replica/reset")
    def reset() -> dict[str, bool]:
        log.reset()
        return {"ok": True}


class _CancelWatch:
    """Pure ASGI: counts the requests per route (``/replica/hits``: how often a client read
    the config, say) and notes every ``/cancel`` a client sends (its session), then passes it
    on untouched, so the log tells a real upstream cancel from a generator that only stalled."""

    def __init__(self, app: Any, log: RequestLog) -> None:
        self._app = app
        self._log = log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and not path.startswith("/replica/"):
            self._log.hit(path)
        if scope["type"] != "http" or scope.get("method") != "POST" or not path.endswith(
            "/cancel"
        ):
            await self._app(scope, receive, send)
            return
        messages = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        with contextlib.suppress(ValueError, AttributeError):
            self._log.cancel_requested(json.loads(body or b"{}").get("session_hash"))
        replay = iter(messages)

        async def receive_again() -> Any:
            for message in replay:
                return message
            return await receive()

        await self._app(scope, receive_again, send)


def build_app(config: ReplicaConfig | None = None) -> Any:
    """The replica as an ASGI app (FastAPI with the Gradio app mounted at ``/``)."""
    from fastapi import FastAPI

    gr = gradio()
    base = config or ReplicaConfig()
    log = RequestLog()
    answers = Answers(base, log, Quota(base.quota_budget, base.quota_retry))
    if base.shape == "openai":
        from .endpoint import endpoint_app

        return _CancelWatch(endpoint_app(answers), log)
    if base.shape == "qvq":
        blocks = _blocks(base, _generate_fn(answers))
    else:
        from .shapes import blocks_demo, chat_interface

        blocks = (chat_interface if base.shape == "chat" else blocks_demo)(answers)
        blocks.queue(default_concurrency_limit=base.concurrency, max_size=base.max_queue)
    app = FastAPI()
    control_routes(app, base, log)
    return _CancelWatch(gr.mount_gradio_app(app, blocks, path="/"), log)
