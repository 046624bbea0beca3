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
* TLS set-up: gradio_client calls ``httpx.post(..., verify=ssl_verify)`` for every request, and
  httpx builds a new SSL context (loading the whole CA bundle, ~40 ms holding the GIL) for
  each call unless ``verify`` already is one. :func:`shared_ssl_context` is built once and
  passed as ``ssl_verify``; with 32 streams starting at once this took the event loop's p99
  lag from ~45 ms to a few ms.

:func:`translate_error` is the one place where errors from gradio_client and httpx become ours.
"""

from __future__ import annotations

import concurrent.futures
import functools
import html
import os
import re
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from gradio_client import Client
from gradio_client import exceptions as gc_exceptions
from gradio_client import utils as gc_utils
from gradio_client.client import Endpoint

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
)

__all__ = [
    "JobClient",
    "JobFeed",
    "QVQClient",
    "Snapshot",
    "shared_ssl_context",
    "translate_error",
]


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The SSL context httpx would build by default, built once per process."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


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


class QVQClient(Client):  # type: ignore[misc]  # gradio_client ships no type information
    """``gradio_client.Client`` with no telemetry and bounded per-job memory."""

    @property
    def analytics_enabled(self) -> bool:
        return False

    @analytics_enabled.setter
    def analytics_enabled(self, value: bool) -> None:
        # Client.__init__ assigns this and starts the telemetry thread when it reads True.
        pass

    def new_helper(self, fn_index: int, headers: dict[str, str] | None = None) -> Any:
        helper = super().new_helper(fn_index, headers=headers)
        helper.job.outputs = _KeepLast()
        helper.updates = JobFeed()
        return helper

    def __repr__(self) -> str:
        # The base class renders the whole API description (a network call on some versions).
        return f"<{type(self).__name__} {self.src}>"

    __str__ = __repr__

    def for_one_job(self) -> JobClient:
        """A view of this client with a Gradio session of its own, for exactly one job.

        It shares config, API description, headers, cookies and worker pools (so it costs no
        network round trip) but has its own session hash, SSE state and SSE reader thread, and
        endpoints bound to it. Keep a reference while its job runs (endpoints hold it weakly)
        and call :meth:`JobClient.release` afterwards.
        """
        view = JobClient.__new__(JobClient)
        view.__dict__.update(self.__dict__)
        view.session_hash = str(uuid.uuid4())
        # Per-session SSE state, as Client.__init__ sets it up.
        view.stream_open = False
        view.streaming_future = None
        view.pending_messages_per_event = {}
        view.pending_event_ids = set()
        view.pending_lock = threading.Lock()
        view.stream_epoch = 0
        view.pending_event_epoch = {}
        view.stream_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="qvq-sse"
        )
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

    def release(self) -> None:
        """Let this view's SSE reader thread end once its stream closes."""
        self.stream_executor.shutdown(wait=False)

    def __del__(self) -> None:
        # The worker pools belong to the parent client: never shut them down from a view.
        pass


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
            f"The Space refused our credentials (HTTP {code}); check the Hugging Face token",
            space=space,
        )
    if code == 429:
        return RateLimitError(f"Too many requests to the Space (HTTP 429): {detail}", space=space)
    if code == 503:
        return RateLimitError("The Space's queue is full (HTTP 503); retry later", space=space)
    return SpaceConnectionError(f"The Space answered HTTP {code}: {detail}", space=space)


def translate_error(exc: BaseException, *, space: str) -> ResponseError:
    """Map an error raised by gradio_client (or httpx under it) to our tree.

    Callers raise the result ``from exc``. Already-translated errors pass through.
    """
    if isinstance(exc, ResponseError):
        return exc
    if isinstance(exc, gc_exceptions.AppError):
        return _classify_app_error(exc.message, space)
    if isinstance(exc, gc_exceptions.AuthenticationError):
        return AuthenticationError(
            "The Space refused our credentials; check the Hugging Face token", space=space
        )
    if isinstance(exc, gc_exceptions.ValidationError):
        return AppError(f"The Space rejected the input: {clean_message(str(exc))}", space=space)
    if isinstance(exc, gc_utils.QueueError):
        return RateLimitError("The Space's queue is full; retry later", space=space)
    if isinstance(exc, gc_utils.TooManyRequestsError):
        return RateLimitError("Too many requests to the Space; retry later", space=space)
    if isinstance(exc, httpx.HTTPStatusError):
        return _from_status(exc.response.status_code, exc.response.reason_phrase, space)
    if isinstance(exc, httpx.TimeoutException):
        return ConnectTimeoutError(f"Timed out talking to the Space: {exc!r}", space=space)
    if isinstance(exc, httpx.TransportError):
        return SpaceConnectionError(f"Could not reach the Space: {exc}", space=space)
    if isinstance(exc, concurrent.futures.CancelledError):
        return SpaceConnectionError(
            "The job was cancelled by the Space or the connection to it was lost", space=space
        )
    text = str(exc)
    if "Cannot find a function with `api_name`" in text:
        return ProtocolError(f"The Space has no /generate endpoint: {text}", space=space)
    if "Server stopped" in text:
        return SpaceConnectionError("The Space stopped while answering", space=space)
    if "Could not fetch config" in text or "Could not find Space" in text:
        return SpaceConnectionError(text, space=space)
    if "Could not fetch api info" in text:
        return SpaceConnectionError(f"Could not read the Space's API: {text}", space=space)
    return ResponseError(f"{type(exc).__name__}: {text}", space=space)
