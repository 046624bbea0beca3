"""The adapter to gradio_client: the only module that knows its internals.

Three things are changed about ``gradio_client.Client`` (measured facts in FACTS.md):

* telemetry: ``analytics_enabled`` is pinned to False, so no telemetry thread is ever started
  (the constructor argument alone does not do that; it is OR-ed with an environment variable);
* memory: each job's ``Communicator`` keeps only the newest cumulative output, and its
  ``updates`` queue (which nothing drains when jobs are consumed from threads) is replaced by a
  :class:`JobFeed` that keeps only the newest output and status. Without this, an answer of
  8,000 tokens costs ~150 MB because every cumulative text is kept twice;
* latency and CPU: the :class:`JobFeed` wakes the waiting stream the moment gradio_client's
  worker thread has something, instead of the stream polling (or gradio_client's own iterator
  busy-waiting in 1 ms sleeps);
* isolation: Gradio's ``/cancel`` cancels every running task of the *session* (session hash +
  endpoint), and gradio_client uses one session per ``Client``. Cancelling one stream would
  stop every other stream sharing the client, and leave them waiting for text that never comes.
  :meth:`QVQClient.for_one_job` gives each job its own session (and SSE reader) while sharing
  the config, API description, headers and worker pools: no extra network round trip;
* threads: gradio_client's three ``ThreadPoolExecutor`` pools are replaced by
  :class:`~qvq_gradio._threads.ElasticExecutor` pools, whose idle threads end after a burst and
  whose threads are daemons: a thread stuck reading a dead connection never holds up closing or
  interpreter exit;
* dead connections: every request of one of our jobs passes a :class:`StreamWatch` (an
  ``httpx.Auth``, the one hook that both ``httpx.post`` and ``httpx.Client`` accept), which
  keeps the job's sockets so :meth:`JobClient.abort` can shut them down from another thread,
  and turns a broken event stream into a logged, quiet end instead of a traceback that
  gradio_client prints to stderr;
* bounded memory applies to our own jobs only (:class:`JobClient`); jobs that users submit
  through the session's client behave exactly as gradio_client documents.

:func:`translate_error` is the one place where errors from gradio_client and httpx become ours.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import html
import json
import logging
import re
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from gradio_client import Client
from gradio_client import exceptions as gc_exceptions
from gradio_client import utils as gc_utils
from gradio_client.client import Endpoint

from ._threads import ElasticExecutor
from .errors import (
    AppError,
    AuthenticationError,
    ConnectTimeoutError,
    GPUUnavailableError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
    SpaceConnectionError,
    SpaceUnavailableError,
    redact,
    register_secret,
)

__all__ = [
    "SPACE_STATES",
    "JobClient",
    "JobFeed",
    "QVQClient",
    "Snapshot",
    "StreamWatch",
    "endpoint_signature",
    "scrub",
    "translate_error",
    "unavailable",
]

log = logging.getLogger("qvq_gradio")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a :class:`JobFeed` holds at one moment; replaced whole, never mutated."""

    version: int = 0
    output: Any = None
    has_output: bool = False
    status: gc_utils.StatusUpdate | None = None


class JobFeed:
    """Stands in for ``Communicator.updates``; gradio_client's threads call :meth:`put_nowait`.

    It keeps only the newest output and status (outputs are cumulative, so nothing is lost) and
    calls the waker set by :meth:`attach`. State is one immutable :class:`Snapshot` swapped by a
    single assignment, so the event loop reads it without taking any lock.
    """

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._wake: Callable[[], None] | None = None

    def put_nowait(self, update: Any) -> None:
        # Called by gradio_client's worker threads, under the Communicator's lock.
        old = self._snapshot
        if isinstance(update, gc_utils.OutputUpdate):
            if update.final:
                return  # the raw completion message; the job's Future holds the real result
            new = Snapshot(old.version + 1, update.outputs, True, old.status)
        elif isinstance(update, gc_utils.StatusUpdate):
            new = Snapshot(old.version + 1, old.output, old.has_output, update)
        else:
            return
        self._snapshot = new
        wake = self._wake
        if wake is not None:
            wake()

    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def detach(self) -> None:
        self._wake = None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot


class _KeepLast(list[Any]):
    """``JobStatus.outputs`` that keeps only its newest item (outputs are cumulative)."""

    def append(self, item: Any) -> None:
        self.clear()
        super().append(item)


class _QuietEnd(httpx.SyncByteStream):
    """An event stream whose transport errors end it quietly (logged at debug level).

    gradio_client prints a traceback to stderr for any error of its event-stream reader except
    ``RemoteProtocolError``, which it takes as the stream closing. The job's outcome is the same
    either way (its waiters are told the stream ended), so the error is logged and re-raised as
    that one.
    """

    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except httpx.RemoteProtocolError:
            raise
        except httpx.TransportError as exc:
            log.debug("the Space's event stream broke: %r", exc)
            raise httpx.RemoteProtocolError(f"event stream ended: {exc!r}") from exc

    def close(self) -> None:
        self._inner.close()


class StreamWatch(httpx.Auth):
    """Sees every response of one job (httpx hands each to the auth flow before its body).

    It keeps each response's socket, so that :meth:`abort` can shut them down from any thread:
    a thread blocked reading a frozen connection then wakes at once (closing a socket from
    another thread does not wake a blocked read; shutting it down does).
    """

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._aborted = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.add(sock)
                aborted = self._aborted
            if aborted:
                _shut(sock)
        event_stream = request.method == "GET" and request.url.path.endswith("/queue/data")
        if event_stream and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _QuietEnd(response.stream)

    def abort(self) -> None:
        """Shut down every connection of this job, now and from now on."""
        with self._lock:
            self._aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_POOLS = ("executor", "helper_executor", "stream_executor")


def _elastic_pools(client: Any, max_workers: int) -> None:
    """Replace gradio_client's pools (no thread of theirs has started yet)."""
    sizes = {"executor": max_workers, "helper_executor": 2 * max_workers, "stream_executor": 1}
    for name, size in sizes.items():
        old = getattr(client, name, None)
        if isinstance(old, concurrent.futures.Executor):
            old.shutdown(wait=False)
            setattr(client, name, ElasticExecutor(size, name=f"qvq-{name.split('_')[0]}"))


class QVQClient(Client):  # type: ignore[misc]  # gradio_client ships no type information
    """``gradio_client.Client`` with no telemetry and pools that shrink and never block exit."""

    def __init__(
        self,
        src: str,
        *args: Any,
        max_workers: int = 40,
        httpx_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # Every request of the client itself (its heartbeat stream, jobs users submit through
        # it) passes a StreamWatch too, so shutting down never waits on a read.
        self.watch = StreamWatch()
        httpx_kwargs = {**(httpx_kwargs or {}), "auth": self.watch}
        super().__init__(src, *args, max_workers=max_workers, httpx_kwargs=httpx_kwargs, **kwargs)
        _elastic_pools(self, max_workers)
        # gradio_client sends the token (given, $HF_TOKEN or the saved one) in this header: it
        # must never show in an error message, a traceback or a log line.
        credential = self.headers.get("x-hf-authorization", "")
        register_secret(credential.removeprefix("Bearer ").strip())

    @property
    def analytics_enabled(self) -> bool:
        return False

    @analytics_enabled.setter
    def analytics_enabled(self, value: bool) -> None:
        # Client.__init__ assigns this and starts the telemetry thread when it reads True.
        pass

    def close(self) -> None:
        # Client.close() joins the heartbeat thread for up to 1 s, longer than a dead
        # connection deserves; the thread is a daemon and ends at its next read.
        self._kill_heartbeat.set()

    def shutdown(self, timeout: float) -> None:
        """Stop the heartbeat and every worker thread, waiting at most ``timeout`` seconds in
        all: threads still busy then (stuck reading a dead connection) are abandoned."""
        self.close()
        self.watch.abort()  # the heartbeat's stream: its thread wakes and ends
        deadline = time.monotonic() + timeout
        pools = [getattr(self, name, None) for name in _POOLS]
        for pool in pools:
            if isinstance(pool, ElasticExecutor):
                pool.shutdown(wait=False, cancel_futures=True)
        for pool in pools:
            if isinstance(pool, ElasticExecutor):
                pool.shutdown(timeout=max(deadline - time.monotonic(), 0.0))
        if self.heartbeat.is_alive():
            self.heartbeat.join(max(deadline - time.monotonic(), 0.0))

    def __repr__(self) -> str:
        # The base class renders the whole API description (a network call on some versions).
        return f"<{type(self).__name__} {self.src}>"

    __str__ = __repr__

    def for_one_job(self, timeout: httpx.Timeout) -> JobClient:
        """A view of this client with a Gradio session of its own, for exactly one job.

        It shares config, API description, headers, cookies and worker pools (so it costs no
        network round trip) but has its own session hash, SSE state and SSE reader thread,
        endpoints bound to it, its own httpx settings (``timeout``; a :class:`StreamWatch`),
        and it keeps only the newest output of its job. Keep a reference while its job runs
        (endpoints hold it weakly) and call :meth:`JobClient.release` afterwards.
        """
        view = JobClient.__new__(JobClient)
        view.__dict__.update(self.__dict__)
        view.session_hash = str(uuid.uuid4())
        view.watch = StreamWatch()
        view.httpx_kwargs = {**self.httpx_kwargs, "timeout": timeout, "auth": view.watch}
        # Per-session SSE state, as Client.__init__ sets it up.
        view.stream_open = False
        view.streaming_future = None
        view.pending_messages_per_event = {}
        view.pending_event_ids = set()
        view.pending_lock = threading.Lock()
        view.stream_epoch = 0
        view.pending_event_epoch = {}
        view.stream_executor = ElasticExecutor(1, name="qvq-sse")
        view.cookies = dict(self.cookies)
        # No heartbeat for a one-job session (the HTTP API needs none); close() stays harmless.
        view._refresh_heartbeat = threading.Event()
        view._kill_heartbeat = threading.Event()
        view.heartbeat = threading.Thread(target=lambda: None)
        view.endpoints = {
            dependency.get("id", index): Endpoint(
                view, dependency.get("id", index), dependency, view.protocol
            )
            for index, dependency in enumerate(view.config["dependencies"])
        }
        return view


class JobClient(QVQClient):
    """One job's view of a :class:`QVQClient` (see :meth:`QVQClient.for_one_job`)."""

    watch: StreamWatch
    httpx_kwargs: dict[str, Any]

    def new_helper(self, fn_index: int, headers: dict[str, str] | None = None) -> Any:
        helper = super().new_helper(fn_index, headers=headers)
        helper.job.outputs = _KeepLast()
        helper.updates = JobFeed()
        return helper

    def set_timeout(self, timeout: httpx.Timeout) -> None:
        """The timeout of this job's requests from now on (e.g. a short one for its cancel)."""
        self.httpx_kwargs = {**self.httpx_kwargs, "timeout": timeout}

    def abort(self) -> None:
        """Shut down this job's connections: a reader blocked on a dead one wakes now."""
        self.watch.abort()

    def release(self) -> None:
        """Let this view's SSE reader thread end once its stream closes."""
        self.stream_executor.shutdown(wait=False)

    def __del__(self) -> None:
        # The worker pools belong to the parent client: never shut them down from a view.
        pass


def endpoint_signature(config: Mapping[str, Any], api_name: str) -> tuple[Any, ...] | None:
    """What identifies ``api_name`` in a Gradio config: its function index and input types.

    ``None`` when the app has no such endpoint. Two configs with the same signature run the
    same function for a job submitted to that index.
    """
    name = api_name.lstrip("/")
    components = {c.get("id"): c.get("type") for c in config.get("components", [])}
    for index, dependency in enumerate(config.get("dependencies", [])):
        if dependency.get("api_name") == name:
            inputs = tuple(components.get(i) for i in dependency.get("inputs", []))
            return (dependency.get("id", index), inputs)
    return None


def job_feed(job: Any) -> JobFeed:
    """The :class:`JobFeed` of a job submitted through :class:`QVQClient`."""
    feed = job.communicator.updates
    if not isinstance(feed, JobFeed):  # pragma: no cover - only if gradio_client changes shape
        raise ProtocolError("gradio_client did not use QVQClient.new_helper for this job")
    return feed


# -- the one mapping point from library errors to ours -------------------------------------------

_TAG = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")
_QUOTA = re.compile(r"GPU quota|exceeded your .*quota", re.IGNORECASE)
_NO_GPU = re.compile(r"No GPU (?:is )?(?:currently )?available", re.IGNORECASE)
_RETRY_CLOCK = re.compile(r"(?:retry|try again) in (?:(\d+):)?(\d{1,2}):(\d{2})\b", re.IGNORECASE)
_RETRY_SECONDS = re.compile(
    r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)


def clean_message(message: str) -> str:
    """Strip HTML (ZeroGPU messages carry links) and fold white space."""
    return _SPACES.sub(" ", html.unescape(_TAG.sub("", message))).strip()


def parse_retry_after(message: str) -> float | None:
    """Seconds to wait, from ``retry in 0:09:48`` / ``retry in 9:48`` / ``try again in 30s``."""
    clock = _RETRY_CLOCK.search(message)
    if clock:
        hours, minutes, seconds = clock.groups()
        return float(int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds))
    amount = _RETRY_SECONDS.search(message)
    if amount:
        value, unit = float(amount.group(1)), amount.group(2).lower()
        return value * 60 if unit.startswith("m") else value
    return None


def _classify_app_error(raw: str | None, space: str) -> ResponseError:
    if not raw:
        # An error with no message is NOT a quota error (FACTS.md).
        return AppError("The Space raised an error without a message", space=space)
    message = clean_message(raw)
    if _QUOTA.search(message):
        return QuotaExceededError(message, retry_after=parse_retry_after(message), space=space)
    if _NO_GPU.search(message):
        return GPUUnavailableError(message, space=space)
    return AppError(message, space=space)


def _from_status(code: int, detail: str, space: str) -> ResponseError:
    if code in (401, 403):
        return AuthenticationError(
            f"{space} refused our credentials (HTTP {code}); check the Hugging Face token",
            space=space,
        )
    if code == 429:
        return RateLimitError(f"Too many requests to {space} (HTTP 429): {detail}", space=space)
    if code == 503:
        return RateLimitError(f"The queue of {space} is full (HTTP 503); retry later", space=space)
    return SpaceConnectionError(f"{space} answered HTTP {code}: {detail}", space=space)


#: What each Hub state that is not "running" means, and what to do about it.
SPACE_STATES = {
    "PAUSED": "is paused by its owner: use another Space, or ask the owner to restart it",
    "STOPPED": "is stopped: use another Space, or ask the owner to restart it",
    "BUILD_ERROR": "failed to build: the owner must fix it; use another Space meanwhile",
    "RUNTIME_ERROR": "crashed (runtime error): the owner must restart it; use another Space",
    "CONFIG_ERROR": "has a broken configuration: the owner must fix it; use another Space",
    "NO_APP_FILE": "has no app file: it is not (yet) an app; check the Space id",
    "DELETING": "is being deleted: use another Space",
}
_INVALID_STATE = re.compile(r"invalid state: (\w+)")


def unavailable(space: str, state: str) -> SpaceUnavailableError:
    """The error for a Space in ``state`` (one of :data:`SPACE_STATES`)."""
    meaning = SPACE_STATES.get(state, f"is {state.lower()} and cannot answer; use another Space")
    return SpaceUnavailableError(f"{space} {meaning} (state {state})", state=state, space=space)


def _is_named(exc: BaseException, names: tuple[str, ...]) -> bool:
    """``exc`` derives from an httpx-family class named one of ``names`` (the Hub client uses
    httpx2, older versions httpx: their classes share names, not identity)."""
    return any(
        cls.__name__ in names and cls.__module__.split(".")[0].startswith("httpx")
        for cls in type(exc).__mro__
    )


def _from_hub(exc: BaseException, space: str) -> ResponseError | None:
    """The Hub client's errors, met when a Space is given as ``owner/name``."""
    try:
        from huggingface_hub import errors as hub_errors
    except ImportError:  # pragma: no cover - gradio_client depends on huggingface_hub
        return None
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return SpaceUnavailableError(
            f"There is no Space {space} on the Hub (or it is private: give a token that can "
            "see it)",
            state="NOT_FOUND",
            space=space,
        )
    if isinstance(exc, hub_errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
        if code in (401, 403):
            return AuthenticationError(
                f"The Hub refused our credentials for {space} (HTTP {code}); check the token",
                space=space,
            )
        if code == 404:
            return SpaceUnavailableError(
                f"There is no Space {space} on the Hub", state="NOT_FOUND", space=space
            )
        return SpaceConnectionError(f"The Hub answered HTTP {code} about {space}", space=space)
    if _is_named(exc, ("TimeoutException",)):
        return ConnectTimeoutError(
            f"Timed out asking the Hugging Face Hub about {space}: {exc!r}", space=space
        )
    if _is_named(exc, ("TransportError",)):
        return SpaceConnectionError(
            f"Could not reach the Hugging Face Hub to look up {space}: {exc}", space=space
        )
    return None


def scrub(exc: BaseException) -> None:
    """Redact tokens in ``exc`` and every exception chained to it, in place (args, messages,
    notes): what a traceback or ``log.exception`` would print of them."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        with contextlib.suppress(Exception):  # an exception type may refuse new attributes
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
            for name, value in list(vars(current).items()):
                if isinstance(value, str):
                    setattr(current, name, redact(value))
                elif name == "__notes__" and isinstance(value, list):
                    value[:] = [redact(v) if isinstance(v, str) else v for v in value]
        pending += [current.__cause__, current.__context__]


def translate_error(exc: BaseException, *, space: str) -> ResponseError:
    """Map an error raised by gradio_client (or httpx under it) to our tree.

    Callers raise the result ``from exc``. Already-translated errors pass through. ``exc`` and
    every exception chained to it are scrubbed of tokens first: they stay reachable (and keep
    their types) as ``__cause__`` for debugging, without any credential a Space echoed.
    """
    scrub(exc)
    if isinstance(exc, ResponseError):
        return exc
    if isinstance(exc, gc_exceptions.AppError):
        return _classify_app_error(exc.message, space)
    if isinstance(exc, gc_exceptions.AuthenticationError):
        return AuthenticationError(
            f"{space} refused our credentials; check the Hugging Face token", space=space
        )
    if isinstance(exc, gc_exceptions.ValidationError):
        return AppError(f"The Space rejected the input: {clean_message(str(exc))}", space=space)
    if isinstance(exc, gc_utils.QueueError):
        return RateLimitError(f"The queue of {space} is full; retry later", space=space)
    if isinstance(exc, gc_utils.TooManyRequestsError):
        return RateLimitError(f"Too many requests to {space}; retry later", space=space)
    if isinstance(exc, httpx.HTTPStatusError):
        return _from_status(exc.response.status_code, exc.response.reason_phrase, space)
    if isinstance(exc, httpx.TimeoutException):
        return ConnectTimeoutError(f"Timed out talking to {space}: {exc!r}", space=space)
    if isinstance(exc, httpx.TransportError):
        return SpaceConnectionError(f"Could not reach {space}: {exc}", space=space)
    hub = _from_hub(exc, space)
    if hub is not None:
        return hub
    if isinstance(exc, concurrent.futures.CancelledError):
        return SpaceConnectionError(
            "The job was cancelled by the Space or the connection to it was lost", space=space
        )
    if isinstance(exc, json.JSONDecodeError):
        if re.match(r"\s*<(?:!doctype|html|head|body)", exc.doc[:200], re.IGNORECASE):
            return ProtocolError(
                "The address answered with an HTML page, not a Gradio app (a login page or "
                "a captive portal?); check the Space URL and any proxy",
                space=space,
            )
        return ProtocolError(f"The Space answered with text that is not JSON: {exc}", space=space)
    text = str(exc)
    invalid = _INVALID_STATE.search(text)
    if invalid:  # gradio_client's check of the Space's state on the Hub
        return unavailable(space, invalid.group(1))
    if "Cannot find a function with `api_name`" in text:
        return ProtocolError(f"The Space has no /generate endpoint: {text}", space=space)
    if "Server stopped" in text:
        return SpaceConnectionError("The Space stopped while answering", space=space)
    if "Could not fetch config" in text or "Could not find Space" in text:
        return SpaceConnectionError(text, space=space)
    if "Could not fetch api info" in text:
        return SpaceConnectionError(f"Could not read the Space's API: {text}", space=space)
    return ResponseError(f"{type(exc).__name__}: {text}", space=space)
