"""The session: one cached gradio_client ``Client`` and the async streams over it.

A stream runs in three steps, all without blocking the event loop:

1. the image (if any) is normalised in a worker thread; input errors stop here, nothing sent;
2. the ``Client`` is created once per session, lazily, in a worker thread, under
   ``connect_timeout``; the job is submitted from a worker thread;
3. gradio_client's threads push each cumulative output into the job's :class:`JobFeed`, which
   wakes the stream; the stream turns outputs into deltas. Completion is decided from the job's
   Future, never from its status alone.

When the consumer stops early (``break``, ``aclose()``, task cancellation, a timeout) the job is
cancelled upstream, so the Space stops generating, and the temporary image file is removed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
from gradio_client import handle_file
from gradio_client.utils import Status

from ._gradio import (
    JobClient,
    JobFeed,
    QVQClient,
    job_feed,
    shared_ssl_context,
    translate_error,
)
from .errors import (
    ConnectTimeoutError,
    IdleTimeoutError,
    ProtocolError,
    SpaceConnectionError,
    TotalTimeoutError,
)
from .events import Event, Finished, QueueUpdate, TextDelta
from .imaging import ImageOptions
from .media import MediaItem, Upload, classify, prepare_upload
from .prompt import Messages, build_prompt

__all__ = ["API_NAME", "DEFAULT_SPACE", "SPACE_ENV", "Session", "SpaceConfig", "resolve_space"]

log = logging.getLogger("qvq_gradio")

#: The seed's Space address.
DEFAULT_SPACE: Final = "https://qwen-qvq-72b-preview.hf.space"
#: Environment variable naming the Space (a URL or a ``owner/name`` Space id).
SPACE_ENV: Final = "QVQ_SPACE"
#: The Space's endpoint: inputs ``[image or None, text]``, a generator of the text so far.
API_NAME: Final = "/generate"

# httpx read timeout under gradio_client. The SSE stream carries a heartbeat every 15 s, so a
# silent minute means the connection is dead; it also bounds every other request.
_READ_TIMEOUT: Final = 60.0
# How long cancelling a job upstream may take before we give up on it (it is one POST).
_CANCEL_TIMEOUT: Final = 10.0
# Pause before the second cancel of a job that had not started generating (see _cancel_job).
_RECANCEL_DELAY: Final = 0.3
_GENERATING = (Status.PROCESSING, Status.ITERATING, Status.PROGRESS)


class _Unset:
    def __repr__(self) -> str:
        return "<default>"


_UNSET: Final = _Unset()


def resolve_space(space: str | None = None, *, default: str = DEFAULT_SPACE) -> str:
    """``space`` if given, else ``$QVQ_SPACE``, else ``default`` (the seed's Space)."""
    return space or os.environ.get(SPACE_ENV) or default


@dataclass(frozen=True)
class SpaceConfig:
    """Everything that identifies one ``gradio_client.Client``. Secrets stay out of ``repr``."""

    space: str
    token: str | None = field(default=None, repr=False)
    proxy: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        parts = [f"space={self.space!r}", f"token={'***' if self.token else None}"]
        if self.proxy:
            parts.append("proxy=***")
        if self.headers:
            parts.append(f"headers=[{', '.join(name for name, _ in self.headers)}]")
        return f"SpaceConfig({', '.join(parts)})"


class _Waker:
    """Wakes one waiting stream from any thread, without blocking that thread.

    Calls coalesce: at most one wake-up is scheduled on the loop at a time. No lock is taken on
    the loop side (a lock held by a worker thread would block the loop).
    """

    def __init__(self) -> None:
        native = anyio.lowlevel.current_token().native_token
        self._schedule: Callable[[Callable[[], None]], Any]
        if isinstance(native, asyncio.AbstractEventLoop):
            self._schedule = native.call_soon_threadsafe
        else:  # trio
            self._schedule = native.run_sync_soon  # type: ignore[attr-defined]
        self._event = anyio.Event()
        self._pending = False

    def __call__(self) -> None:
        if self._pending:
            return
        self._pending = True
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._schedule(self._fire)

    def _fire(self) -> None:
        self._pending = False
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


def _new_text(previous: str, output: Any, space: str) -> str:
    """The delta from ``previous`` to the cumulative ``output``."""
    if output is None:
        output = ""
    if not isinstance(output, str):
        raise ProtocolError(
            f"The Space sent {type(output).__name__} where text was expected",
            text=previous,
            space=space,
        )
    if not output.startswith(previous):
        raise ProtocolError(
            "The Space rewrote text it had already sent", text=previous, space=space
        )
    return output[len(previous) :]


async def _texts(events: AsyncGenerator[Event, None]) -> AsyncGenerator[str, None]:
    """The text of each :class:`TextDelta`; closing this closes ``events`` (so cancels)."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                yield event.text


def _build_client(config: SpaceConfig, connect_timeout: float, max_workers: int) -> QVQClient:
    # While connecting, every request (config, API info) must answer within connect_timeout.
    httpx_kwargs: dict[str, Any] = {"timeout": httpx.Timeout(connect_timeout)}
    if config.proxy:
        httpx_kwargs["proxy"] = config.proxy
    client = QVQClient(
        config.space,
        token=config.token,
        max_workers=max_workers,
        verbose=False,
        headers=dict(config.headers) or None,
        download_files=False,
        httpx_kwargs=httpx_kwargs,
        ssl_verify=shared_ssl_context(),
    )
    # From now on: streams, uploads and joins, which may legitimately take longer.
    client.httpx_kwargs["timeout"] = httpx.Timeout(_READ_TIMEOUT, connect=connect_timeout)
    return client


def _shutdown_client(client: QVQClient) -> None:
    client.close()  # stops the heartbeat thread
    for name in ("executor", "helper_executor", "stream_executor"):
        pool = getattr(client, name, None)
        if isinstance(pool, concurrent.futures.ThreadPoolExecutor):
            pool.shutdown(wait=True, cancel_futures=True)


def _cancel_job(job: Any, started: bool = False) -> None:
    """Cancel ``job`` on the Space (blocking; run it in a worker thread).

    ``started``: the Space had reported the job generating, so it is a running task there.
    """
    try:
        # A cancel sent before the job has joined the Space's queue carries no event id: the
        # Space never hears of it and runs the job anyway (gradio_client's /reset after joining
        # does not stop it). So first wait for gradio_client's worker to join and learn the id.
        # It sets no event we could wait on, hence short polls, bounded by _CANCEL_TIMEOUT.
        deadline = time.monotonic() + _CANCEL_TIMEOUT
        while job.communicator.event_id is None and not job.future.done():
            if time.monotonic() > deadline:
                log.warning("cancelling a job that has not reached the Space's queue yet")
                break
            time.sleep(0.01)
        job.cancel()
        if not started:
            # Gradio's /cancel stops running tasks and removes queued events, but misses an
            # event caught between the two (just taken off the queue, its task not yet
            # running). Measured here: about 1 cancel in 6 right after joining. A second cancel
            # a moment later finds it running. The session is this job's alone, so it is safe.
            time.sleep(_RECANCEL_DELAY)
            job.cancel_fn()
    except Exception as exc:  # the Space may be gone; the job is abandoned either way
        log.debug("cancelling job upstream failed: %r", exc)


class Session:
    """A connection to the QVQ Space, shared by any number of concurrent streams.

    Use it as ``async with Session() as s:`` or call :meth:`aclose` (or :meth:`close` from
    synchronous code) when done; it cancels open jobs and stops gradio_client's threads.

    Args:
        space: a Space URL or ``owner/name`` id; default ``$QVQ_SPACE``, else the seed's Space.
        token: Hugging Face token (sent as ``X-HF-Authorization``); default: as gradio_client
            does, ``$HF_TOKEN`` or the locally saved token. Logged-in users get more ZeroGPU quota.
        proxy: an HTTP(S) proxy URL for every request to the Space.
        headers: extra headers for every request, e.g. ZeroGPU's ``x-ip-token``.
        connect_timeout: seconds to reach the Space and read its API.
        idle_timeout: seconds without new text, once generation started (None: no limit).
        total_timeout: seconds for a whole answer, queue included (None: no limit).
        max_workers: gradio_client worker capacity; each running stream takes three threads
            (created on demand), so up to ``max_workers`` streams run at once without queueing.
        image_options: how images are normalised, and what happens to several images
            (:class:`~qvq_gradio.imaging.ImageOptions`); each call may override it.

    Example::

        async with Session() as session:
            async for delta in session.stream("What is in this picture?", image="cat.jpg"):
                print(delta, end="", flush=True)
    """

    def __init__(
        self,
        space: str | None = None,
        *,
        token: str | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 30.0,
        idle_timeout: float | None = 120.0,
        total_timeout: float | None = None,
        max_workers: int = 256,
        image_options: ImageOptions | None = None,
    ) -> None:
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("idle_timeout", idle_timeout),
            ("total_timeout", total_timeout),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self.config = SpaceConfig(
            space=resolve_space(space),
            token=token,
            proxy=proxy,
            headers=tuple(sorted((headers or {}).items())),
        )
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self.max_workers = max_workers
        self.image_options = image_options or ImageOptions()
        self._client: QVQClient | None = None
        self._state_lock = threading.Lock()  # guards _client and _closed; never held long
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._jobs: set[Any] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Session {self.config.space} token={'***' if self.config.token else None} {state}>"

    @property
    def space(self) -> str:
        return self.config.space

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel open jobs and stop every thread this session started."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for synchronous code."""
        with self._state_lock:
            self._closed = True
            client, self._client = self._client, None
        for job in list(self._jobs):
            _cancel_job(job)
        self._jobs.clear()
        if client is not None:
            _shutdown_client(client)

    # -- the client ---------------------------------------------------------------------------

    def _client_blocking(self) -> QVQClient:
        with self._connect_lock:
            with self._state_lock:
                if self._closed:
                    raise RuntimeError("this Session is closed")
                if self._client is not None:
                    return self._client
            log.debug("connecting to %s", self.config.space)
            client = _build_client(self.config, self.connect_timeout, self.max_workers)
            with self._state_lock:
                if not self._closed:
                    self._client = client
                    return client
            _shutdown_client(client)  # closed while we were connecting
            raise RuntimeError("this Session is closed")

    async def client(self) -> QVQClient:
        """The session's ``gradio_client.Client`` (created on first use, then reused)."""
        return await self._get_client(math.inf, self.connect_timeout)

    async def _get_client(self, deadline: float, connect_timeout: float) -> QVQClient:
        client = self._client
        if client is not None:
            return client
        budget = min(connect_timeout, deadline - anyio.current_time())
        with anyio.move_on_after(max(budget, 0.0)) as scope:
            try:
                # Abandoned on timeout: the thread finishes on its own (httpx connect timeout)
                # and a late client is kept for the next stream.
                return await anyio.to_thread.run_sync(self._client_blocking, abandon_on_cancel=True)
            except RuntimeError:
                raise
            except Exception as exc:
                raise translate_error(exc, space=self.space) from exc
        assert scope.cancelled_caught
        if budget < connect_timeout:
            raise TotalTimeoutError("total_timeout ran out while connecting", space=self.space)
        raise ConnectTimeoutError(
            f"The Space did not answer within {connect_timeout:g} s", space=self.space
        )

    async def api_info(self) -> dict[str, Any]:
        """The Space's API as gradio_client describes it (named endpoints and parameters)."""
        client = await self.client()
        try:
            info = await anyio.to_thread.run_sync(
                functools.partial(client.view_api, print_info=False, return_format="dict")
            )
        except Exception as exc:
            raise translate_error(exc, space=self.space) from exc
        return dict(info)

    # -- streams ------------------------------------------------------------------------------

    def events(
        self,
        prompt: str | Messages,
        image: Any = None,
        *,
        media: Sequence[Any] | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        total_timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        image_options: ImageOptions | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Stream events: :class:`QueueUpdate`, :class:`TextDelta`, then one :class:`Finished`.

        ``prompt`` is a string (one user message) or a list of messages. Bad input raises here,
        before anything is sent. Close the generator (or use ``contextlib.aclosing``) to cancel.
        """
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        built = build_prompt(messages)
        items = [
            classify(item)
            for item in (*([] if image is None else [image]), *(media or []), *built.images)
        ]
        idle = self.idle_timeout if isinstance(idle_timeout, _Unset) else idle_timeout
        total = self.total_timeout if isinstance(total_timeout, _Unset) else total_timeout
        connect = self.connect_timeout if isinstance(connect_timeout, _Unset) else connect_timeout
        return self._run(
            built.text, items, idle, total, connect, image_options or self.image_options
        )

    def stream(
        self,
        prompt: str | Messages,
        image: Any = None,
        *,
        media: Sequence[Any] | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        total_timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        image_options: ImageOptions | None = None,
    ) -> AsyncGenerator[str, None]:
        """Stream the answer as text deltas; their concatenation is the Space's final text.

        Like :meth:`events`, bad input raises here, before anything is sent.
        """
        return _texts(
            self.events(
                prompt,
                image,
                media=media,
                idle_timeout=idle_timeout,
                total_timeout=total_timeout,
                connect_timeout=connect_timeout,
                image_options=image_options,
            )
        )

    async def ask(
        self,
        prompt: str | Messages,
        image: Any = None,
        *,
        media: Sequence[Any] | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        total_timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        image_options: ImageOptions | None = None,
    ) -> str:
        """The whole answer as one string."""
        events = self.events(
            prompt,
            image,
            media=media,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            connect_timeout=connect_timeout,
            image_options=image_options,
        )
        async with aclosing(events):
            async for event in events:
                if isinstance(event, Finished):
                    return event.text
        raise ProtocolError(
            "the stream ended without an answer", space=self.space
        )  # pragma: no cover

    async def _run(
        self,
        text: str,
        items: list[MediaItem],
        idle: float | None,
        total: float | None,
        connect_timeout: float,
        image_options: ImageOptions,
    ) -> AsyncGenerator[Event, None]:
        space = self.space
        start = anyio.current_time()
        deadline = start + total if total is not None else math.inf
        upload: Upload | None = None
        started: float | None = None
        job: Any = None
        feed: JobFeed | None = None
        submitted: list[Any] = []  # filled by the worker thread (see the finally clause)
        views: list[JobClient] = []
        try:
            with anyio.move_on_after(total) as scope:
                upload = await prepare_upload(items, image_options, proxy=self.config.proxy)
            if scope.cancelled_caught:
                raise TotalTimeoutError(
                    f"Preparing the image took longer than total_timeout={total:g} s", space=space
                )
            if upload is not None and upload.note:
                text = f"{upload.note}\n{text}"
            client = await self._get_client(deadline, connect_timeout)
            image_target = upload.target if upload is not None else None

            def submit() -> Any:
                image_arg = handle_file(image_target) if image_target else None
                # A Gradio session of its own: cancelling this job stops no other stream.
                views.append(client.for_one_job())
                submitted.append(views[0].submit(image_arg, text, api_name=API_NAME))
                return submitted[0]

            try:
                job = await anyio.to_thread.run_sync(submit)
            except Exception as exc:
                raise translate_error(exc, space=space) from exc
            self._jobs.add(job)
            if self._closed:
                raise SpaceConnectionError("the Session was closed", space=space)

            waker = _Waker()
            feed = job_feed(job)
            feed.attach(waker)
            job.future.add_done_callback(lambda _future: waker())

            answer = ""
            seen = -1
            last_queue: QueueUpdate | None = None
            first_token: float | None = None
            last_progress = start
            while True:
                # Read "done" before the snapshot: the worker pushes every output before the
                # Future completes, so a snapshot taken after seeing "done" holds all the text.
                done = job.future.done()
                snapshot = feed.snapshot
                if snapshot.version != seen:
                    seen = snapshot.version
                    status = snapshot.status
                    if status is not None and status.code == Status.IN_QUEUE:
                        update = QueueUpdate(status.rank, status.queue_size, status.eta)
                        if update != last_queue:
                            last_queue = update
                            yield update
                    elif status is not None and status.code in _GENERATING and started is None:
                        started = last_progress = anyio.current_time()
                    if snapshot.has_output:
                        delta = _new_text(answer, snapshot.output, space)
                        if delta:
                            answer += delta
                            last_progress = anyio.current_time()
                            if first_token is None:
                                first_token = last_progress
                                started = started or first_token
                            yield TextDelta(delta)
                if done:
                    final = self._final_text(job)
                    delta = _new_text(answer, final, space)
                    if delta:
                        answer += delta
                        first_token = first_token or anyio.current_time()
                        yield TextDelta(delta)
                    now = anyio.current_time()
                    yield Finished(
                        text=answer,
                        space=space,
                        elapsed=now - start,
                        time_to_first_token=None if first_token is None else first_token - start,
                        queue_wait=None if started is None else started - start,
                    )
                    return
                idle_deadline = (
                    last_progress + idle if idle is not None and started is not None else math.inf
                )
                wake_by = min(deadline, idle_deadline)
                delay = None if wake_by == math.inf else max(wake_by - anyio.current_time(), 0.0)
                with anyio.move_on_after(delay):
                    await waker.wait()
                if feed.snapshot.version != seen or job.future.done():
                    continue
                now = anyio.current_time()
                if now >= deadline:
                    raise TotalTimeoutError(
                        f"No complete answer within total_timeout={total:g} s",
                        text=answer,
                        space=space,
                    )
                if now >= idle_deadline:
                    raise IdleTimeoutError(
                        f"No new text for idle_timeout={idle:g} s", text=answer, space=space
                    )
        finally:
            if feed is not None:
                feed.detach()
            # Defensive: anyio hands back the job even when we are cancelled while submit()
            # runs (the cancellation lands at the next checkpoint). Should that ever change,
            # the job would exist upstream without us holding it; cancel it all the same.
            job = job if job is not None else (submitted[0] if submitted else None)
            with anyio.CancelScope(shield=True):
                if job is not None:
                    self._jobs.discard(job)
                    if not job.future.done():
                        log.debug("cancelling unfinished job upstream")
                        with anyio.move_on_after(_CANCEL_TIMEOUT + _RECANCEL_DELAY):
                            await anyio.to_thread.run_sync(
                                _cancel_job, job, started is not None, abandon_on_cancel=True
                            )
                for view in views:
                    view.release()
                if upload is not None:
                    await anyio.to_thread.run_sync(upload.close)

    def _final_text(self, job: Any) -> Any:
        future: concurrent.futures.Future[Any] = job.future
        try:
            exc = future.exception()
        except concurrent.futures.CancelledError as cancelled:
            exc = cancelled
        if exc is not None:
            if self._closed:
                raise SpaceConnectionError("the Session was closed", space=self.space) from exc
            error = translate_error(exc, space=self.space)
            raise error from exc
        return future.result()
