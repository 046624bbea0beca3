"""Several Spaces as one: :class:`Pool`, with routing, failover and Space health.

One public ZeroGPU Space is small, shared and rationed; users who outgrow it run the same app on
more Spaces. A pool runs the question pipeline of a :class:`~qvq_gradio.Session` (images
prepared once, the cache, the history) over several upstreams — Spaces it builds from names,
or :class:`~qvq_gradio.upstreams.Upstream` objects it is given, of any shape — and is a
:class:`~qvq_gradio.protocol.SessionLike` itself, so it goes wherever a session goes.

* Routing: each question goes to the healthy Space with the most free capacity (fewest in
  flight relative to ``max_in_flight_per_space``); ties rotate. When every healthy Space is
  full, the question waits for a free slot.
* Failover, only before the first token: a question that fails before any text reached the
  caller because the Space could not take it (unreachable, connect timeout, HTTP 429 or a full
  queue, no GPU, quota, not running) moves to another Space, and ``events()`` says so with a
  :class:`~qvq_gradio.SpaceChanged`. After the first token the error is raised as from a
  session: an answer is never duplicated or spliced. Input errors, app errors and protocol
  errors never move; an authentication failure disables that Space for the pool's life.
* Health: a failing Space cools down — for a quota error its ``retry_after``, otherwise an
  exponential backoff with jitter, capped — and comes back by itself. When every Space is
  cooling, the question raises the error of the Space that recovers first (a
  ``QuotaExceededError`` carries the time left), or with ``wait=True`` waits for it.

    async with Pool(["owner/qvq-a", "owner/qvq-b", "https://my-mirror.example"]) as pool:
        print(await pool.ask("What is in this picture?", image="cat.jpg"))
        for row in pool.status():
            print(row.space, row.state, row.answered)
"""

from __future__ import annotations

import copy
import datetime
import itertools
import logging
import statistics
import threading
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
from typing_extensions import Unpack

from .cooling import BACKOFF_CAP, BACKOFF_FIRST, Health, State
from .endpoints import is_endpoint
from .errors import (
    AuthenticationError,
    QuotaExceededError,
    ResponseError,
    SpaceConnectionError,
)
from .events import Event, Finished, ReasoningDelta, SpaceChanged, TextDelta
from .history import HistoryOption, default_path
from .imaging import ImageOptions
from .media import Layout
from .models import ModelEntry, resolve
from .options import AskOptions
from .pipeline import Question, layout_for
from .prompt import Messages
from .protocol import SessionLike
from .session import Pipeline, Session
from .spaces import parse_named, parse_spaces
from .upstreams import Request, Upstream
from .upstreams.gradio.upstream import GradioUpstream
from .upstreams.openai import OpenAIUpstream

__all__ = ["Pool", "SpaceStatus", "connect", "connect_named"]

log = logging.getLogger("qvq_gradio")

# The backoff each Space's health starts with (read when the pool is made).
_BACKOFF_FIRST = BACKOFF_FIRST
_BACKOFF_CAP = BACKOFF_CAP
# A Space cooling after a failure other than quota is asked for its config this often (and
# this long at most), so one back within seconds is used within seconds, whatever the backoff.
_PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class SpaceStatus:
    """One Space of a pool, as :meth:`Pool.status` sees it now."""

    space: str
    state: State
    until: datetime.datetime | None  #: when cooling ends (UTC); None unless cooling
    in_flight: int
    limit: int
    answered: int
    failed: int
    last_error: str | None  #: "ErrorType: message" of the last failure
    median_time_to_first_token: float | None  #: seconds, over recent answers


@dataclass(eq=False)
class _Member:
    upstream: Upstream
    limit: int
    health: Health
    in_flight: int = 0

    @property
    def space(self) -> str:
        return self.upstream.name


class Pool(Pipeline):
    """Several Spaces behind the interface of one :class:`~qvq_gradio.Session`.

    Args:
        spaces: Space URLs or ``owner/name`` ids (a list, or one comma-separated string), or
            :class:`~qvq_gradio.upstreams.Upstream` objects (a
            :class:`~qvq_gradio.upstreams.gradio.GradioUpstream` with a ``shape`` of its own,
            say); the pool closes them when it closes.
        max_in_flight_per_space: questions one Space is given at once (default 4: a ZeroGPU
            Space runs a few at a time and queues the rest; more only lengthens its queue).
        wait: when every Space is cooling, wait for the first to recover instead of raising
            its error.
        connect_timeout, idle_timeout, total_timeout, image_options, history, cache: as for
            :class:`~qvq_gradio.Session`, for the pool's questions.
        space_options: for each Space built from a name (``token``, ``proxy``, ``headers``,
            ``max_workers``, ``shape``, ``space_cache``).
    """

    def __init__(
        self,
        spaces: str | Sequence[str | Upstream],
        *,
        max_in_flight_per_space: int = 4,
        wait: bool = False,
        connect_timeout: float = 30.0,
        idle_timeout: float | None = 120.0,
        total_timeout: float | None = None,
        image_options: ImageOptions | None = None,
        history: HistoryOption = None,
        cache: bool = False,
        space_cache: bool = False,
        **space_options: Any,
    ) -> None:
        if max_in_flight_per_space < 1:
            raise ValueError(
                f"max_in_flight_per_space must be at least 1, got {max_in_flight_per_space!r}"
            )
        given = [spaces] if isinstance(spaces, str) else list(spaces)
        names = parse_spaces([s for s in given if isinstance(s, str)]) if any(
            isinstance(s, str) for s in given
        ) else []
        descriptions = default_path().parent / "spaces" if space_cache else None
        built = iter(
            OpenAIUpstream(
                name, connect_timeout=connect_timeout,
                **{k: v for k, v in space_options.items() if k in ("proxy", "headers")},
            )
            if is_endpoint(name)
            else GradioUpstream(
                name, connect_timeout=connect_timeout, descriptions=descriptions,
                **space_options,
            )
            for name in names
        )
        upstreams: list[Upstream] = []
        for item in given:
            if isinstance(item, str):
                upstreams.extend(built)  # the names, in their order, where the first stood
            else:
                upstreams.append(item)
        if not upstreams:
            raise ValueError("a Pool needs at least one Space")
        self._pipeline(
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            image_options=image_options,
            history=history,
            cache=cache,
        )
        self.shape = space_options.get("shape")
        self._proxy_url: str | None = space_options.get("proxy")
        self.wait = wait
        self._members = [
            _Member(upstream, max_in_flight_per_space,
                    Health(first=_BACKOFF_FIRST, cap=_BACKOFF_CAP))
            for upstream in upstreams
        ]
        self._lock = threading.Lock()  # guards member counters; never held across an await
        self._turn = itertools.count()
        self._changed: anyio.Event | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<Pool of {len(self._members)} Spaces: {self.space}>"

    @property
    def space(self) -> str:
        return ",".join(member.space for member in self._members)

    @property
    def spaces(self) -> list[str]:
        return [member.space for member in self._members]

    @property
    def upstreams(self) -> list[Upstream]:
        """Each Space's upstream, in the order given."""
        return [member.upstream for member in self._members]

    # -- lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every Space (concurrently), then the history the pool opened."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for member in self._members:
                    tg.start_soon(member.upstream.aclose)
            await anyio.to_thread.run_sync(self._close_history)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`."""
        self._closing = True
        threads = [
            threading.Thread(target=member.upstream.close, daemon=True)
            for member in self._members
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self._close_history()

    def _closed(self) -> bool:
        return self._closing

    def _spaces(self) -> list[str]:
        return self.spaces

    async def _app_of(self, space: str) -> str | None:
        for member in self._members:
            if member.space == space:
                return await member.upstream.app()
        return None

    def _proxy(self) -> str | None:
        return self._proxy_url

    def _layout(self) -> Layout:
        return layout_for([member.upstream for member in self._members])

    # -- health -----------------------------------------------------------------------------

    async def ready(self) -> None:
        """Check every Space as :meth:`Session.ready` does, at once: fine when one of them is
        ready; else the error of each, in one :class:`SpaceConnectionError` (or the one error
        when the pool has a single Space)."""
        errors: list[ResponseError | None] = [None] * len(self._members)

        async def check(index: int, member: _Member) -> None:
            try:
                await member.upstream.ready()
            except ResponseError as error:
                errors[index] = error

        async with anyio.create_task_group() as tg:
            for index, member in enumerate(self._members):
                tg.start_soon(check, index, member)
        if any(error is None for error in errors):
            return
        found = [error for error in errors if error is not None]
        if len(found) == 1:
            raise found[0]
        raise SpaceConnectionError(
            "no Space of the pool is ready: " + "; ".join(
                f"{member.space}: {type(error).__name__}: {error}"
                for member, error in zip(self._members, found, strict=True)
            ),
            space=self.space,
        )

    def status(self) -> list[SpaceStatus]:
        """Each Space's state, load, counts, last error and median time to first token."""
        wall = time.time()
        rows = []
        with self._lock:
            for m in self._members:
                health = m.health
                state = health.state()
                until = (
                    datetime.datetime.fromtimestamp(wall + health.left(), datetime.timezone.utc)
                    if state == "cooling"
                    else None
                )
                error = health.last_error
                rows.append(
                    SpaceStatus(
                        space=m.space,
                        state=state,
                        until=until,
                        in_flight=m.in_flight,
                        limit=m.limit,
                        answered=health.answered,
                        failed=health.failed,
                        last_error=None if error is None else f"{type(error).__name__}: {error}",
                        median_time_to_first_token=(
                            statistics.median(health.ttft) if health.ttft else None
                        ),
                    )
                )
        return rows

    def _cool(self, member: _Member, error: ResponseError, outage: int) -> None:
        """Record a failure of a question sent during ``outage`` (the member's outage count
        when it was sent)."""
        with self._lock:
            pause = member.health.failure(error, outage)
        if isinstance(error, AuthenticationError):
            log.warning(
                "%s refused our credentials; the pool will not use it again: %s",
                member.space,
                error,
            )
        elif pause is not None:
            log.info("%s cools down for %.1f s: %s", member.space, pause, error)
        self._notify()

    def _probe_due(self) -> None:
        """Ask each cooling Space whose probe is due for its config, in the background: one
        that answers is used again at once (caller holds the lock)."""
        for member in self._members:
            if member.health.take_probe():
                threading.Thread(
                    target=self._probe, args=(member, member.health.outage), name="qvq-probe",
                    daemon=True,
                ).start()

    def _probe(self, member: _Member, outage: int) -> None:
        back = member.upstream.probe_blocking(_PROBE_TIMEOUT)
        with self._lock:
            found = member.health.probed(back, outage)
        if found:  # a question waiting for it sees it at its next look (every probe_every)
            log.info("%s answers again; the pool uses it", member.space)

    def _succeeded(self, member: _Member, ttft: float | None) -> None:
        with self._lock:
            member.health.success(ttft)

    # -- routing ----------------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _take(self) -> _Member:
        """A slot on the healthy Space with the most free capacity (waits while all are full;
        raises, or waits with ``wait=True``, while all are cooling)."""
        while True:
            if self._closing:
                raise SpaceConnectionError("the Pool was closed", space=self.space)
            with self._lock:
                self._probe_due()
                live = [m for m in self._members if m.health.state() == "ok"]
                free = [m for m in live if m.in_flight < m.limit]
                if free:
                    turn = next(self._turn)
                    n = len(self._members)
                    index = {id(m): i for i, m in enumerate(self._members)}
                    chosen = min(
                        free,
                        key=lambda m: (m.in_flight / m.limit, (index[id(m)] - turn) % n),
                    )
                    chosen.in_flight += 1
                    return chosen
                waiting = [m for m in self._members if not m.health.disabled]
            if not waiting:
                raise self._error_of(None)
            if live:  # all full: wait for a slot
                await self._wait_change(None)
                continue
            first = min(waiting, key=lambda m: m.health.until)
            if not self.wait:
                raise self._error_of(first)
            left = first.health.left()
            log.info("every Space cools; waiting %.1f s for %s", left, first.space)
            # Until it recovers, or the next probe could have found one back.
            await self._wait_change(min(left, first.health.probe_every))

    async def _wait_change(self, at_most: float | None) -> None:
        """Until a slot frees or a Space's health changes (or ``at_most`` seconds)."""
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(at_most):
            await self._changed.wait()

    def _error_of(self, member: _Member | None) -> ResponseError:
        if member is None:  # every Space disabled
            errors = [m.health.last_error for m in self._members if m.health.last_error]
            return copy.copy(errors[-1]) if errors else SpaceConnectionError(
                "no Space of the pool can be used", space=self.space
            )
        left = member.health.left()
        error = member.health.last_error
        raised: ResponseError
        if isinstance(error, QuotaExceededError):
            raised = QuotaExceededError(error.message, retry_after=left, space=error.space)
        elif error is None:  # pragma: no cover - cooling always records its error
            raised = SpaceConnectionError(
                "every Space of the pool is cooling down", space=self.space
            )
        else:
            raised = copy.copy(error)
        raised.cooling_for = left
        return raised

    def _release(self, member: _Member) -> None:
        with self._lock:
            member.in_flight -= 1
        self._notify()

    # -- questions --------------------------------------------------------------------------

    def events(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> AsyncGenerator[Event, None]:
        """As :meth:`Session.events`, plus a :class:`~qvq_gradio.SpaceChanged` before each
        Space tried. Bad input raises here, before anything is sent."""
        return self.events_for(Question.of(prompt, image, options, where="events"))

    async def _answer(self, request: Request) -> AsyncGenerator[Event, None]:
        """The question asked of one Space after another, before any text came."""
        previous: _Member | None = None
        reason: ResponseError | None = None
        while True:
            member = await self._take()
            outage = member.health.outage
            try:
                yield SpaceChanged(
                    member.space,
                    None if previous is None else previous.space,
                    None if reason is None else f"{type(reason).__name__}: {reason}",
                )
                started = time.monotonic()
                first: float | None = None
                try:
                    events = member.upstream.answer(request)
                    async with aclosing(events):  # a consumer that stops early cancels now
                        async for event in events:
                            if first is None and isinstance(
                                event, (TextDelta, ReasoningDelta)
                            ):
                                first = time.monotonic() - started
                            if isinstance(event, Finished):
                                # Counted before it is handed over: ask() stops reading here.
                                self._succeeded(member, first)
                            yield event
                except ResponseError as error:
                    self._cool(member, error, outage)
                    if first is not None or not error.failover:
                        raise
                    log.info("%s failed before answering; moving the question", member.space)
                    previous, reason = member, error
                    continue
                return
            finally:
                self._release(member)


def connect_named(
    spaces: str | Sequence[str] | None = None,
    *,
    models: Mapping[str, ModelEntry] | None = None,
    **options: Any,
) -> dict[str | None, SessionLike]:
    """One :func:`connect` per model name: ``NAME=SPEC`` specs under one NAME are one pool
    (Spaces and endpoints alike); specs without a name are the ``None`` entry. ``models``: a
    models file's entries (:func:`~qvq_gradio.models.load_models`): a bare NAME of it stands
    for its specs, asked in its shape, with its sampling parameters by default."""
    given = [spaces] if isinstance(spaces, str) else list(spaces or [])
    resolved = resolve(given, models or {}) if given else [
        (name, spec, None) for name, spec in parse_named(None)
    ]
    groups: dict[str | None, list[str]] = {}
    entries: dict[str | None, ModelEntry] = {}
    for name, spec, entry in resolved:
        groups.setdefault(name, []).append(spec)
        if entry is not None:
            entries.setdefault(name, entry)
    sessions: dict[str | None, SessionLike] = {}
    for name, specs in groups.items():
        entry = entries.get(name)
        shaped = dict(options)
        if entry is not None and entry.shape is not None and options.get("shape") is None:
            shaped["shape"] = entry.shape
        session = sessions[name] = connect(specs, **shaped)
        if isinstance(session, Pipeline):
            session.model_name = name
            if entry is not None:
                session.sampling_defaults = dict(entry.sampling)
    return sessions


def connect(spaces: str | Sequence[str] | None = None, **options: Any) -> SessionLike:
    """A :class:`~qvq_gradio.Session` for one Space, a :class:`Pool` for several.

    ``spaces`` defaults to ``$QVQ_SPACE`` (comma-separated for several), else the seed's Space.
    ``options`` go to the session (or the pool: ``max_in_flight_per_space``, ``wait``).
    """
    names = parse_spaces(spaces)
    if len(names) == 1:
        for pool_only in ("max_in_flight_per_space", "wait"):
            options.pop(pool_only, None)
        return Session(names[0], **options)
    return Pool(names, **options)
