"""A replica of the QVQ-72B Space, for tests, demos and your own offline tests.

Needs the ``replica`` extra (``pip install 'qvq-gradio[replica]'``): it is a real Gradio app
with the Space's API — endpoint ``/generate``, inputs ``[image filepath or None, text]``, a
generator whose every update is the whole answer so far — served by uvicorn on 127.0.0.1.

Its answer proves what it received: the first line carries the prompt (and its sha256), the
second the image's size, mode, format and a sha256 of its RGB pixel bytes. Then come
``tokens`` words of fake reasoning, ``delay`` seconds apart, and a ``**Final Answer**``.

Behaviour is set per replica (:class:`ReplicaConfig`) and can be overridden per request by a
directive anywhere in the prompt, e.g. ``[[replica tokens=200 delay=0.01 fail=mid after=5]]``.
Failure modes: ``before`` (``gr.Error`` before the first token), ``mid`` (``gr.Error`` after
``after`` tokens), ``quota`` (a ZeroGPU quota message), ``hang`` (stop after ``after`` tokens
and never finish), ``echo-token`` (an error that echoes the credential it was sent, as some
Spaces do). ``layout`` changes the app itself: ``reordered`` puts another function with the same
inputs before ``/generate`` (a redeployed Space), ``text-only`` gives ``/generate`` one input.

Every request is logged with how many tokens it really generated and how it ended
(``done``, ``failed``, ``cancelled``), so tests can prove that cancelling stopped the server::

    from qvq_gradio.replica import Replica

    with Replica() as replica:                      # a free port on 127.0.0.1
        ...  # point qvq_gradio at replica.url (space=replica.url or QVQ_SPACE)
        record = replica.wait_ended("my marker")    # blocks until that request ended

From the command line: ``qvq replica`` or ``python -m qvq_gradio replica --port 7860``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import httpx

__all__ = [
    "QUOTA_MESSAGE",
    "REASONING_WORDS",
    "Replica",
    "ReplicaConfig",
    "ReplicaProcess",
    "RequestRecord",
    "answer_head",
    "build_app",
    "describe_image",
    "quota_message",
]



def _require_extra() -> None:
    """Importing the replica without the ``replica`` extra says which extra to install."""
    missing = []
    for name in ("gradio", "uvicorn"):
        present = sys.modules[name] is not None if name in sys.modules else None
        if present is None:
            present = importlib.util.find_spec(name) is not None
        if not present:
            missing.append(name)
    if missing:
        raise ImportError(
            f"the replica needs the 'replica' extra (missing: {', '.join(missing)}): "
            "pip install 'qvq-gradio[replica]'"
        )


_require_extra()

FailMode = Literal["before", "mid", "quota", "hang", "echo-token"]
FAIL_MODES: tuple[str, ...] = ("before", "mid", "quota", "hang", "echo-token")
Layout = Literal["qvq", "reordered", "text-only"]
LAYOUTS: tuple[str, ...] = ("qvq", "reordered", "text-only")

#: What ZeroGPU Spaces say when the quota is used up (with the HTML link they carry).
QUOTA_MESSAGE = (
    "You have exceeded your GPU quota (60s requested vs. 56s left). "
    '<a style="white-space: nowrap;text-underline-offset: 2px;color: var(--body-text-color)" '
    'href="https://huggingface.co/settings/billing">Subscribe to Pro</a> to get more quota, '
    "or retry in 0:09:48"
)
#: The words the replica reasons with, one per token, cycled.
REASONING_WORDS: tuple[str, ...] = tuple(
    "Let me look at this carefully and reason step by step . The question asks what is "
    "shown , so I will check each detail , compare it with what I know , and then decide .".split()
)
_RECORDED_HEADERS = ("x-ip-token", "x-zerogpu-token")
_DIRECTIVE = re.compile(r"\[\[replica([^\]]*)\]\]")


@dataclass(frozen=True)
class ReplicaConfig:
    """How the replica answers (each field can be overridden per request by a directive)."""

    tokens: int = 40  #: words of reasoning after the receipt
    delay: float = 0.01  #: seconds between two words
    concurrency: int = 16  #: requests generated at once; more wait in the queue
    fail: FailMode | None = None
    fail_after: int = 5  #: tokens before ``mid`` / ``hang`` happen
    max_queue: int | None = None  #: queue size beyond which joins get HTTP 503
    layout: Layout = "qvq"  #: the app's functions (see the module docstring)
    #: A ZeroGPU-like quota: after this many requests, requests fail with a quota error for
    #: ``quota_retry`` seconds (the message says so), then the budget starts again.
    quota_budget: int | None = None
    quota_retry: float = 588.0  #: seconds a quota error asks to wait (``fail=quota`` too)
    token: str | None = field(default=None, repr=False)  #: required HF token, if any

    def with_directives(self, prompt: str) -> ReplicaConfig:
        """This config with the ``[[replica ...]]`` directives of ``prompt`` applied."""
        changes: dict[str, Any] = {}
        for match in _DIRECTIVE.finditer(prompt):
            for item in match.group(1).split():
                key, _, value = item.partition("=")
                if key == "tokens":
                    changes["tokens"] = int(value)
                elif key == "delay":
                    changes["delay"] = float(value)
                elif key == "fail":
                    if value not in FAIL_MODES:
                        raise ValueError(f"fail must be one of {FAIL_MODES}, got {value!r}")
                    changes["fail"] = value
                elif key == "after":
                    changes["fail_after"] = int(value)
                else:
                    raise ValueError(f"unknown replica directive {key!r}")
        return replace(self, **changes)


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
    #: ``yield`` is never resumed nor finalised, so it cannot log its end; once it has waited
    #: there ``STALLED`` seconds it is reported ``cancelled`` with this flag.
    abandoned: bool = False
    yielded_at: float | None = None  #: when it last yielded and has not been resumed since


def describe_image(path: str) -> dict[str, Any]:
    """Size, mode, format and sha256 of the RGB pixel bytes of the image file at ``path``."""
    from PIL import Image

    with Image.open(path) as image:
        fmt = image.format
        mode = image.mode
        rgb = image.convert("RGB")
        return {
            "width": rgb.width,
            "height": rgb.height,
            "mode": mode,
            "format": fmt,
            "sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
            "bytes": os.path.getsize(path),
        }


def answer_head(prompt: str, image: dict[str, Any] | None) -> str:
    """The replica's first piece of every answer: what it received."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    lines = [f"Received prompt sha256:{digest} ({len(prompt)} chars): {prompt}"]
    if image is None:
        lines.append("Image: none")
    else:
        lines.append(
            f"Image: {image['width']}x{image['height']} {image['mode']} {image['format']} "
            f"pixels-sha256:{image['sha256']}"
        )
    return "\n".join(lines) + "\n\n"


#: Seconds a generator may sit at a ``yield`` before it counts as stopped by Gradio.
STALLED = 3.0

#: What the replica's other functions answer (see ``layout``).
OTHER_FUNCTION_TEXT = "replica: another function answered"


async def _other_function(image: str | None, text: str) -> AsyncIterator[str]:
    yield OTHER_FUNCTION_TEXT


async def _other_function_text(text: str) -> AsyncIterator[str]:
    yield OTHER_FUNCTION_TEXT


def quota_message(retry: float) -> str:
    """ZeroGPU's quota wording, asking to retry in ``retry`` seconds (H:MM:SS)."""
    seconds = max(round(retry), 0)
    clock = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return QUOTA_MESSAGE.replace("0:09:48", clock)


class _Quota:
    """The replica's quota budget (see ``ReplicaConfig.quota_budget``)."""

    def __init__(self, budget: int | None, retry: float) -> None:
        self._budget, self._retry = budget, retry
        self._used = 0
        self._until = 0.0
        self._lock = threading.Lock()

    def refusal(self) -> str | None:
        """The quota message if this request is over the budget, else None (and count it)."""
        if self._budget is None:
            return None
        with self._lock:
            now = time.monotonic()
            if self._until:
                if now < self._until:
                    return quota_message(self._until - now)
                self._until, self._used = 0.0, 0  # the quota is back
            if self._used >= self._budget:
                self._until = now + self._retry
                return quota_message(self._retry)
            self._used += 1
            return None


def _word(i: int) -> str:
    return ("" if i == 0 else " ") + REASONING_WORDS[i % len(REASONING_WORDS)]


class _Log:
    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._changed = threading.Condition()

    def start(self, prompt: str) -> RequestRecord:
        with self._changed:
            record = RequestRecord(id=len(self._records), prompt=prompt, started=time.monotonic())
            self._records.append(record)
            self._changed.notify_all()
            return record

    def update(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def all(self) -> list[dict[str, Any]]:
        with self._changed:
            return [asdict(record) for record in self._records]

    def reset(self) -> None:
        with self._changed:
            self._records.clear()

    def wait(self, marker: str, timeout: float, *, ended: bool) -> dict[str, Any] | None:
        def find() -> RequestRecord | None:
            now = time.monotonic()
            for record in self._records:
                if marker not in record.prompt:
                    continue
                if not ended or record.state != "running":
                    return record
                if record.yielded_at is not None and now - record.yielded_at > STALLED:
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


def build_app(config: ReplicaConfig | None = None) -> Any:
    """The replica as an ASGI app (FastAPI with the Gradio app mounted at ``/``)."""
    with warnings.catch_warnings():
        # Gradio imports tqdm.auto, which warns in notebooks without ipywidgets.
        warnings.simplefilter("ignore")
        import gradio as gr
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    base = config or ReplicaConfig()
    log = _Log()
    quota = _Quota(base.quota_budget, base.quota_retry)

    async def generate(image: str | None, text: str, request: gr.Request) -> AsyncIterator[str]:
        record = log.start(text)
        record.headers = {
            name: request.headers[name] for name in _RECORDED_HEADERS if name in request.headers
        }
        try:
            settings = base.with_directives(text)
            if image:
                record.image = await asyncio.to_thread(describe_image, image)
            record.tokens_planned = settings.tokens
            if settings.fail == "before":
                raise gr.Error(
                    "replica: failing before the first token, as asked", print_exception=False
                )
            refusal = quota.refusal()
            if settings.fail == "quota":
                refusal = quota_message(settings.quota_retry)
            if refusal is not None:
                raise gr.Error(refusal, print_exception=False)
            if settings.fail == "echo-token":
                sent = request.headers.get("x-hf-authorization", "(none)")
                raise gr.Error(
                    f"Unauthorized: {sent} is not a valid token "
                    f"({sent.removeprefix('Bearer ')})",
                    print_exception=False,
                )
            out = answer_head(text, record.image)
            record.yielded_at = time.monotonic()
            yield out
            record.yielded_at = None
            for i in range(settings.tokens):
                if settings.fail in ("mid", "hang") and i == settings.fail_after:
                    if settings.fail == "mid":
                        raise gr.Error(
                            f"replica: failing after {i} tokens, as asked", print_exception=False
                        )
                    await asyncio.Event().wait()  # hang until cancelled
                if settings.delay:
                    await asyncio.sleep(settings.delay)
                out += _word(i)
                record.tokens_generated += 1
                record.text = out
                record.yielded_at = time.monotonic()
                yield out
                record.yielded_at = None
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
            log.update()

    # Gradio finds the request parameter by its annotation; with postponed annotations that is
    # a string naming a local import, so give it the class itself.
    generate.__annotations__["request"] = gr.Request

    with gr.Blocks(title="QVQ-72B replica", analytics_enabled=False) as blocks:
        gr.Markdown("# QVQ-72B replica\nA local stand-in for the QVQ-72B Space.")
        image_in = gr.Image(type="filepath", label="Image")
        text_in = gr.Textbox(label="Question")
        answer = gr.Textbox(label="Answer")
        if base.layout == "reordered":
            # Another function first: a client holding the old config's function index for
            # /generate would run this one.
            gr.Button("Describe").click(
                _other_function, [image_in, text_in], answer, api_name="describe"
            )
        if base.layout == "text-only":
            gr.Button("Submit").click(_other_function_text, [text_in], answer, api_name="generate")
        else:
            gr.Button("Submit").click(generate, [image_in, text_in], answer, api_name="generate")
    blocks.queue(default_concurrency_limit=base.concurrency, max_size=base.max_queue)

    app = FastAPI()

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

    return gr.mount_gradio_app(app, blocks, path="/")


_R = TypeVar("_R", bound="_Control")


class _Control:
    """A running replica: start/stop as a context manager, and its control routes over HTTP."""

    url: str

    def start(self: _R) -> _R:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _R) -> _R:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far (see :class:`RequestRecord`)."""
        response = httpx.get(f"{self.url}/replica/requests", timeout=10)
        response.raise_for_status()
        return cast(list[dict[str, Any]], response.json())

    def wait_ended(self, marker: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until the request whose prompt contains ``marker`` has ended; its record."""
        return self._wait(marker, timeout, ended=True)

    def wait_started(self, marker: str, timeout: float = 30.0) -> dict[str, Any]:
        """Block until a request whose prompt contains ``marker`` has arrived."""
        return self._wait(marker, timeout, ended=False)

    def _wait(self, marker: str, timeout: float, *, ended: bool) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/replica/wait",
            params={"marker": marker, "timeout": timeout, "ended": ended},
            timeout=timeout + 10,
        )
        if response.status_code == 408:
            raise TimeoutError(f"no {'ended ' if ended else ''}request with {marker!r}")
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/replica/reset", timeout=10).raise_for_status()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class Replica(_Control):
    """The replica served from a thread of this process; a context manager.

    ``port=0`` (the default) takes a free port; the socket is bound before the server starts,
    so there is no race for it.
    """

    def __init__(
        self, config: ReplicaConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or ReplicaConfig()
        self._sock = _bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Replica:
        import uvicorn

        config = uvicorn.Config(build_app(self.config), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="qvq-replica",
            daemon=True,
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the replica server failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()


class ReplicaProcess(_Control):
    """The replica in a child process (``python -m qvq_gradio replica``); a context manager.

    Use it where the test process must stay free of the server's own work, e.g. under
    ``blockbuster``, which would flag Gradio's blocking calls in the server's event loop.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        port: int = 0,
        python: str | None = None,
    ) -> None:
        self._args = list(args)
        self._env = env
        self._port = port
        # The interpreter to serve from: ``$QVQ_REPLICA_PYTHON`` runs the replica under another
        # environment (e.g. an older Gradio) while the client side stays in this one.
        self._python = python or os.environ.get("QVQ_REPLICA_PYTHON") or sys.executable
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> ReplicaProcess:
        self._proc = subprocess.Popen(
            [self._python, "-m", "qvq_gradio", "replica", "--port", str(self._port), *self._args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self._env,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                return self
        code = self._proc.wait()
        raise RuntimeError(f"the replica process exited with code {code} before serving")

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()


def serve(
    config: ReplicaConfig,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the replica in the foreground until interrupted; ``ready(url)`` once bound."""
    import uvicorn

    sock = _bind(host, port)
    app = build_app(config)
    sock.listen(2048)  # connections made after ready() wait in the backlog, never refused
    if ready is not None:
        ready(f"http://{host}:{sock.getsockname()[1]}")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
