"""A Gradio Space as an upstream: one cached gradio_client ``Client`` and the jobs over it.

:class:`GradioUpstream` answers a :class:`~qvq_gradio.upstreams.Request`:

1. a Space given as ``owner/name`` is looked up on the Hub (and waited for while it wakes);
2. the ``Client`` is created once, lazily, in a worker thread, under ``connect_timeout`` (and
   again after the Space was redeployed); the Space's shape is found from its API
   (:mod:`.shapes`) and says what is sent;
3. the job's life (steps, submit, follow, verify, cancel) is :class:`~.job.SpaceJob`'s; a job
   that finds the Space redeployed is asked once more on a new client.

When the consumer stops early (``break``, ``aclose()``, task cancellation, a timeout) the job is
cancelled upstream, in the background so the caller never waits on it. Closing never waits on
a dead connection for more than about a second: threads stuck in a read are woken or abandoned
(they are daemons).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import httpx

from ..._tls import shared_ssl_context
from ...errors import (
    ConnectTimeoutError,
    IdleTimeoutError,
    ProtocolError,
    ResponseError,
    SpaceConnectionError,
    TotalTimeoutError,
)
from ...events import Event, Finished, ShapeFound, SpaceWaking
from ...spaces import SpaceConfig, checked_space, on_hugging_face
from .. import Limits, Request
from . import (
    SPACE_STATES,
    WAKING,
    DescriptionCache,
    EventStreams,
    QVQClient,
    answers_config,
    app_identity,
    endpoint_signature,
    file_arg,
    space_state,
    translate_error,
    unavailable,
)
from .job import CLOSE_WAIT, Background, Redeployed, SpaceJob
from .shapes import SILENT, Asked, Call, Shape, Step, check_shape, detect

__all__ = ["GradioUpstream"]

log = logging.getLogger("qvq_gradio")

# httpx read timeout under gradio_client while nothing bounds a stream more tightly. The event
# stream carries a heartbeat every 15 s, so a silent minute means the connection is dead.
_READ_TIMEOUT: Final = 60.0
# A job's read timeout exceeds its idle timeout by this much: the idle timeout the user set is
# the one that fires on a silent stream, as an IdleTimeoutError with the text so far.
_READ_MARGIN: Final = 15.0
# How often to look again at the Hub while a Space starts.
_HUB_POLL: Final = 2.0
# What closing keeps of CLOSE_WAIT for idle worker threads to end.
_SETTLE: Final = 0.25


def _build_client(
    config: SpaceConfig,
    connect_timeout: float,
    max_workers: int,
    descriptions: DescriptionCache | None = None,
    streams: EventStreams | None = None,
) -> QVQClient:
    # While connecting, every request (config, API info) must answer within connect_timeout.
    httpx_kwargs: dict[str, Any] = {"timeout": httpx.Timeout(connect_timeout)}
    if config.proxy:
        httpx_kwargs["proxy"] = config.proxy
    # A token the user did not give (``$HF_TOKEN``, the saved login) goes to Hugging Face's
    # hosts only: False keeps gradio_client from reading one for any other address.
    token: str | bool | None = config.token
    if token is None and not on_hugging_face(config.space):
        token = False
    client = QVQClient(
        config.space,
        token=token,
        max_workers=max_workers,
        verbose=False,
        headers=dict(config.headers) or None,
        download_files=False,
        httpx_kwargs=httpx_kwargs,
        ssl_verify=shared_ssl_context(),
        descriptions=descriptions,
        streams=streams,
    )
    # From now on: streams, uploads and joins, which may legitimately take longer.
    client.httpx_kwargs["timeout"] = httpx.Timeout(_READ_TIMEOUT, connect=connect_timeout)
    return client


class GradioUpstream:
    """One Space (a URL or ``owner/name`` id), asked by any number of concurrent questions.

    Args: see :class:`~qvq_gradio.Session` (``token``, ``proxy``, ``headers``,
    ``connect_timeout``, ``max_workers``, ``shape``); ``descriptions``: a directory where the
    Space's config and API description are kept for a cold start (None: not kept).
    """

    def __init__(
        self,
        space: str | None = None,
        *,
        token: str | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 30.0,
        max_workers: int = 256,
        shape: str | None = None,
        descriptions: Path | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self.config = SpaceConfig(
            space=checked_space(space),
            token=token,
            proxy=proxy,
            headers=tuple(sorted((headers or {}).items())),
        )
        self.connect_timeout = connect_timeout
        self.max_workers = max_workers
        self.shape = check_shape(shape)
        self.descriptions = descriptions
        self._shape: tuple[QVQClient, Shape] | None = None  #: the shape found, per client
        self._client: QVQClient | None = None
        self._state_lock = threading.Lock()  # guards _client and _closed; never held long
        self._connect_lock = threading.Lock()  # one connection attempt at a time
        self._jobs: set[SpaceJob] = set()
        self._background = Background()
        # The event streams' kept-alive connections: the Space's, kept across redeploys.
        self._streams = EventStreams(max_workers)
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        token = "***" if self.config.token else None
        return f"<GradioUpstream {self.config.space} token={token} {state}>"

    @property
    def name(self) -> str:
        return self.config.space

    @property
    def space(self) -> str:
        return self.config.space

    @property
    def closed(self) -> bool:
        return self._closed

    # -- lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Cancel open jobs and stop every thread this upstream started."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for synchronous code.

        Cancels open jobs upstream (waiting at most about a second for that), then stops the
        client's threads. It never waits on a dead connection: threads stuck reading one are
        woken (their sockets shut down) or abandoned (they are daemons).
        """
        with self._state_lock:
            self._closed = True
            client, self._client = self._client, None
            jobs = list(self._jobs)
            self._jobs.clear()
        # About a second in all: most of it for cancels still going out, the rest for idle
        # worker threads to end; whatever is stuck after that is abandoned.
        deadline = time.monotonic() + CLOSE_WAIT
        for job in jobs:
            job.release(self._background)
        self._background.close(CLOSE_WAIT - _SETTLE)
        for job in jobs:
            job.abort()
        self._streams.close(max(deadline - time.monotonic(), _SETTLE))
        if client is not None:
            client.shutdown(max(deadline - time.monotonic(), _SETTLE))

    # -- the client ---------------------------------------------------------------------------

    def _client_blocking(self) -> QVQClient:
        with self._connect_lock:
            with self._state_lock:
                if self._closed:
                    raise RuntimeError("this Session is closed")
                if self._client is not None:
                    return self._client
            log.debug("connecting to %s", self.config.space)
            descriptions = (
                DescriptionCache(self.descriptions) if self.descriptions is not None else None
            )
            client = _build_client(
                self.config, self.connect_timeout, self.max_workers, descriptions, self._streams
            )
            with self._state_lock:
                if not self._closed:
                    self._client = client
                    return client
            client.shutdown(_SETTLE)  # closed while we were connecting
            raise RuntimeError("this Session is closed")

    def _forget(self, client: QVQClient) -> None:
        """Drop ``client`` (the Space was redeployed): the next question connects anew."""
        with self._state_lock:
            if self._client is client:
                self._client = None
        client.close()  # its jobs still running keep its pools; idle threads end on their own

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
                raise translate_error(exc, space=self.space, connecting=True) from exc
        assert scope.cancelled_caught
        if budget < connect_timeout:
            raise TotalTimeoutError("total_timeout ran out while connecting", space=self.space)
        raise ConnectTimeoutError(
            f"The Space did not answer within {connect_timeout:g} s", space=self.space
        )

    def probe_blocking(self, timeout: float) -> bool:
        """Whether the Space answers a cheap request again (its config), blocking; False when
        the session has no client yet (nothing known to ask)."""
        client = self._client
        return client is not None and answers_config(client, timeout)

    async def ready(self) -> None:
        """Check, without asking anything, that the Space can take a question: raises the
        error a question would meet (unreachable, not a Gradio app, no ``/generate``, paused).

        It reads the Space's state (a Space id) and its config, never generating or spending
        quota; a Space asleep or starting counts as ready (a question wakes it).
        """
        if not self.space.startswith(("http://", "https://")) and self._client is None:
            state = await anyio.to_thread.run_sync(self._hub_state, abandon_on_cancel=True)
            if state in SPACE_STATES:
                raise unavailable(self.space, state)
            if state in WAKING:
                return
        client = await self.client()
        self._shape_of(client)

    def _shape_of(self, client: QVQClient) -> Shape:
        """The shape of the app ``client`` found (read once per client)."""
        found = self._shape
        if found is not None and found[0] is client:
            return found[1]
        try:
            shape = detect(client.config, getattr(client, "_info", None), self.space, self.shape)
        except ProtocolError:
            client.forget_description()
            raise
        self._shape = (client, shape)
        return shape

    async def app(self) -> str | None:
        """Which build of the Space's app answers now (connecting if needed, within
        ``connect_timeout``); None when the Space cannot be reached."""
        try:
            client = await self.client()
        except (ResponseError, RuntimeError):
            return None
        return app_identity(client.config)

    async def describe_shape(self) -> str:
        """How this session asks the Space: its shape, endpoint and what reaches which input,
        in one line (``qvq status`` shows it). Connects if needed; raises what a question
        would meet when the Space is no chat."""
        return self._shape_of(await self.client()).describe()

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

    # -- answers ----------------------------------------------------------------------------

    @property
    def several_images(self) -> bool | None:
        """Whether several images go as several files: False once the shape found takes one
        (QVQ's: they become a grid), else None — a chat takes them apart, but a redeploy may
        change the shape, so both a grid and the parts are prepared."""
        found = self._shape
        return None if found is None or found[1].several_images else False

    def answer(self, request: Request) -> AsyncGenerator[Event, None]:
        """The events of one answer (see :class:`~qvq_gradio.upstreams.Upstream`)."""
        upload = request.upload
        asked = Asked(request.text, request.turns, request.sampling,
                      upload.note if upload is not None else None)
        files = [file_arg(upload.target)] if upload is not None and upload.target else []
        parts = [file_arg(part.path) for part in upload.parts] if upload is not None else []
        return self._answer(asked, files, request.start, request.limits, parts)

    def _hub_state(self) -> str:
        """The Space's state on the Hub (blocking; a worker thread)."""
        try:
            return space_state(self.space, self.config.token)
        except Exception as exc:
            raise translate_error(exc, space=self.space) from exc

    async def _wake(self, start: float, connect_timeout: float) -> AsyncGenerator[Event, None]:
        """For a Space given as ``owner/name``: its state on the Hub, before connecting. A
        Space that cannot run raises :class:`SpaceUnavailableError`; one that is asleep or
        starting is reported (:class:`SpaceWaking`) and waited for within ``connect_timeout``.
        """
        deadline = start + connect_timeout
        state = await anyio.to_thread.run_sync(self._hub_state, abandon_on_cancel=True)
        if state in SPACE_STATES:
            raise unavailable(self.space, state)
        if state not in WAKING:
            return
        yield SpaceWaking(self.space, state)
        while state in WAKING and state != "SLEEPING":  # a request wakes a sleeping Space
            if anyio.current_time() + _HUB_POLL > deadline:
                raise ConnectTimeoutError(
                    f"{self.space} was still {state} after connect_timeout={connect_timeout:g} s",
                    space=self.space,
                )
            await anyio.sleep(_HUB_POLL)
            state = await anyio.to_thread.run_sync(self._hub_state, abandon_on_cancel=True)
            if state in SPACE_STATES:
                raise unavailable(self.space, state)

    def _job_timeout(self, idle: float | None, connect_timeout: float) -> httpx.Timeout:
        read = _READ_TIMEOUT if idle is None else max(idle + _READ_MARGIN, _READ_TIMEOUT)
        return httpx.Timeout(read, connect=connect_timeout)

    async def _answer(
        self, asked: Asked, files: list[Any], start: float, limits: Limits,
        parts: list[Any] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Wake the Space if needed, then ask it: again once if it was redeployed meanwhile.
        ``parts``: several images each on its own, for a shape that takes several (then the
        grid ``files`` and its note are not sent)."""
        if self._client is None and not self.space.startswith(("http://", "https://")):
            waking = self._wake(start, limits.connect)
            async with aclosing(waking):
                async for event in waking:
                    yield event
        for attempt in (1, 2):
            client = await self._get_client(limits.deadline(start), limits.connect)
            shape = self._shape_of(client)
            signature = endpoint_signature(client.config, shape.api_name) or ()
            if parts and shape.several_images:
                call = shape.call(dataclasses.replace(asked, note=None), parts)
            else:
                call = shape.call(asked, files)  # bad input for this shape raises: nothing sent
            session = str(uuid.uuid4())  # the question's Gradio session: its steps' and job's
            job = self._submit(client, shape, limits, session)
            try:
                yield ShapeFound(self.space, shape.name, app_identity(client.config))
                for step in call.steps:
                    await self._step(client, step, start, limits, session)
                job.start(call)
                events = self._follow(job, client, signature, start, limits)
                async with aclosing(events):
                    async for event in events:
                        yield event
                now = anyio.current_time()
                yield Finished(
                    text=job.answer,
                    space=self.space,
                    elapsed=now - start,
                    time_to_first_token=(
                        None if job.first_token is None else job.first_token - start
                    ),
                    queue_wait=None if job.started is None else job.started - start,
                    reasoning=job.reasoning,
                    shape=shape.name,
                    applied=dict(call.applied),
                )
                return
            except Redeployed:
                log.info("%s was redeployed; reconnecting and asking again", self.space)
                client.forget_description()
                self._forget(client)
                if attempt == 2:
                    raise ProtocolError(
                        "The Space changed its API again while we asked", space=self.space
                    ) from None
            except ResponseError as error:
                if isinstance(error, (SpaceConnectionError, IdleTimeoutError)):
                    client.freshness.suspect()  # the server may have restarted
                if isinstance(error, (SpaceConnectionError, ProtocolError)):
                    client.forget_description()  # read it anew next time, to be sure
                # Nothing received is lost: the error carries the text that had arrived.
                if not error.text:
                    error.text = job.answer
                raise
            finally:
                self._release(job)  # never awaits: cancels go to the background

    async def _step(
        self, client: QVQClient, step: Step, start: float, limits: Limits, session: str
    ) -> None:
        """One call made before the streamed one, on the question's Gradio session, followed
        to its end as a job is (its output is not needed: the Space keeps its state)."""
        job = self._submit(client, SILENT, limits, session)
        try:
            job.start(Call(step.api_name, step.args))
            events = job.follow(
                start=start, deadline=limits.deadline(start), idle=limits.idle,
                total=limits.total, verify=None, signature=(),
            )
            async with aclosing(events):
                async for _ in events:
                    pass
        finally:
            self._release(job)

    def _submit(
        self, client: QVQClient, shape: Shape, limits: Limits, session: str | None = None
    ) -> SpaceJob:
        """A job for the question on the Space (not started), tracked until released (a
        closing session cancels it); ``session``: the Gradio session it runs in (else one of
        its own)."""
        timeout = self._job_timeout(limits.idle, limits.connect)
        with self._state_lock:
            alone = not self._jobs  # then it joins where it is followed (see SpaceJob.open)
        job = SpaceJob.open(client, timeout, self.space, shape, alone, session)
        with self._state_lock:
            closed = self._closed
            if not closed:
                self._jobs.add(job)
        if closed:
            self._release(job)
            raise SpaceConnectionError("the Session was closed", space=self.space)
        return job

    def _follow(
        self,
        job: SpaceJob,
        client: QVQClient,
        signature: tuple[Any, ...],
        start: float,
        limits: Limits,
    ) -> AsyncGenerator[Event, None]:
        # When the config is due (see _gradio.freshness) it is read again alongside the job:
        # a redeployed Space may run another function at our cached index. Text is held back
        # until the read confirms it.
        verify = client.freshness.check()
        return job.follow(
            start=start,
            deadline=limits.deadline(start),
            idle=limits.idle,
            total=limits.total,
            verify=verify,
            signature=signature,
        )

    def _release(self, job: SpaceJob) -> None:
        with self._state_lock:
            self._jobs.discard(job)
        job.release(self._background)
