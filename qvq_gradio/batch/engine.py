"""The batch engine: at most ``concurrency`` questions in flight, retries, the quota pause.

Transient failures (``transient`` on the error's class) are retried with exponential backoff
and jitter; input errors and the Space's app errors fail the item at once, and a bad item never
stops the next.
A ``QuotaExceededError`` pauses every new submission for its ``retry_after`` (the quota is per
user) and re-queues the question it cut; ``on_quota="stop"`` ends the run cleanly instead.
Records are handed to the :class:`~.output.Output` one at a time, as they finish (input order,
if asked, is restored when the run ends: :meth:`~.output.Output.reorder`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any

import anyio
import anyio.to_thread

from .._backoff import backoff
from ..errors import (
    QuotaExceededError,
    QVQError,
    ResponseError,
)
from ..events import Finished
from ..options import AskOptions
from ..protocol import SessionLike
from .items import BatchInputError, BatchItem, item_id
from .output import Key, Output, make_record
from .progress import Progress
from .summary import BatchSummary

__all__ = ["Run"]

log = logging.getLogger("qvq_gradio")

_CHUNK = 64  # items read per worker-thread hop
_BACKOFF_FIRST, _BACKOFF_CAP = 1.0, 60.0
_QUOTA_DEFAULT = 60.0


class _Pause:
    """One model's quota pause: a quota is per user and per Space (or endpoint), so one
    model's pause holds only that model's new questions."""

    def __init__(self) -> None:
        self.until = 0.0
        self.waited = 0.0
        self.resume = anyio.Event()
        self.resume.set()


class Run:
    """One batch run: scheduling, retries, the quota pause, and counting what happened.

    ``sessions``: the session asked for each model NAME; ``{None: session}`` for a run that
    compares nothing (its records name no model)."""

    def __init__(
        self,
        sessions: Mapping[str | None, SessionLike],
        output: Output,
        options: AskOptions,
        *,
        retries: int,
        on_quota: str,
        order: str,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.sessions, self.output, self.options = dict(sessions), output, options
        self.retries, self.on_quota, self.order = retries, on_quota, order
        self.progress = progress
        self.ok = self.failed = self.in_flight = self.skipped = self.skipped_failed = 0
        self.total: int | None = None
        self.failures: Counter[str] = Counter()
        self.graded = self.correct = self.ungraded = 0
        self.stopping = False
        self._pauses = {name: _Pause() for name in self.sessions}
        self._writing = anyio.Lock()
        #: id -> position in the input, for order="input" (the file is put in that order at
        #: the end; until then records are written as they finish, so a kill loses none).
        self.positions: dict[str, int] = {}
        self.seen = 0  #: items read from the input, done before or not
        #: set once each model's session was found ready (or not: the name is in _not_ready)
        self._ready: dict[str | None, anyio.Event] = {}
        self._not_ready: set[str | None] = set()

    @property
    def quota_wait(self) -> float:
        """Seconds spent paused for quota (the longest of the models' pauses)."""
        return max(pause.waited for pause in self._pauses.values())

    @property
    def paused_until(self) -> float:
        return max(pause.until for pause in self._pauses.values())

    def report(self) -> None:
        if self.progress is not None:
            left = self.paused_until - time.monotonic()
            self.progress(
                Progress(
                    self.ok, self.failed, self.in_flight, self.skipped, self.total,
                    left if left > 0 else None,
                )
            )

    async def pause(self, seconds: float, model: str | None = None) -> None:
        """Hold every new submission to ``model`` for ``seconds`` (quota), with a countdown."""
        state = self._pauses[model]
        until = time.monotonic() + seconds
        if until <= state.until:
            return
        first = state.until <= time.monotonic()
        state.until = until
        if not first:
            return
        where = "" if model is None else f" to {model}"
        log.warning("quota exceeded: pausing new questions%s for %.0f s", where, seconds)
        state.resume = anyio.Event()
        started = time.monotonic()
        try:
            while (left := state.until - time.monotonic()) > 0:
                self.report()
                await anyio.sleep(min(1.0, left))
        finally:
            state.waited += time.monotonic() - started
            state.resume.set()
            self.report()

    async def gate(self, model: str | None = None) -> None:
        state = self._pauses[model]
        while not state.resume.is_set():
            await state.resume.wait()

    async def _session_ready(self, model: str | None) -> bool:
        """Before a model's first question, once: its Spaces answer and have what a question
        needs (read from their configs, nothing generated). If none does, the first worker
        raises its error and the run ends with no record written; the others stop."""
        if model not in self._ready:
            self._ready[model] = anyio.Event()
            ready = getattr(self.sessions[model], "ready", None)
            try:
                if ready is not None:
                    await ready()
            except BaseException:
                self._not_ready.add(model)
                raise
            finally:
                self._ready[model].set()
        await self._ready[model].wait()
        return model not in self._not_ready

    async def ask(self, item: BatchItem, key: str, model: str | None = None) -> None:
        if not await self._session_ready(model):
            return
        attempts = 0
        while True:
            await self.gate(model)
            if self.stopping:
                return
            attempts += 1
            self.in_flight += 1
            self.report()
            try:
                finished, error = await self._once(item, model)
            finally:
                self.in_flight -= 1
                self.report()
            if isinstance(error, QuotaExceededError):
                attempts -= 1  # the quota cut the question: it is asked again, not failed
                if self.on_quota == "stop":
                    if not self.stopping:
                        log.warning("quota exceeded: stopping; run again to resume: %s", error)
                    self.stopping = True
                    return
                await self.pause(error.retry_after or _QUOTA_DEFAULT, model)
                continue
            transient = isinstance(error, QVQError) and error.transient
            if transient and attempts <= self.retries:
                delay = backoff(attempts, first=_BACKOFF_FIRST, cap=_BACKOFF_CAP)
                log.info("item %s: %s; retry %d in %.1f s", key, error, attempts, delay)
                await anyio.sleep(delay)
                continue
            await self.finish(item, key, finished, error, attempts, model)
            return

    async def _once(
        self, item: BatchItem, model: str | None = None
    ) -> tuple[Finished | None, BaseException | None]:
        """Ask once; the answer, or the error an item can meet (ours: input errors included,
        so item 17 never stops item 18). Anything else is a bug, and stops the run."""
        if item.problem is not None:
            return None, BatchInputError(item.problem)
        try:
            session = self.sessions[model]
            events = session.events(item.question(), item.image, **self.options)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, Finished):
                        return event, None
        except QVQError as error:
            return None, error
        raise ResponseError("the stream ended without an answer")  # pragma: no cover

    async def finish(
        self,
        item: BatchItem,
        key: str,
        finished: Finished | None,
        error: BaseException | None,
        attempts: int,
        model: str | None = None,
    ) -> None:
        text = finished.text if finished is not None else getattr(error, "text", "") or ""
        space = getattr(error, "space", None)
        record = make_record(
            item, key, finished=finished, error=error, text=text, attempts=attempts, space=space,
            model=model,
        )
        if finished is not None:
            self.ok += 1
        else:
            self.failed += 1
            self.failures[type(error).__name__] += 1
        if record["correct"] is not None:  # graded: an expected answer, and an answer
            self.graded += 1
            self.correct += bool(record["correct"])
        elif item.expected is not None:
            self.ungraded += 1
        await self._write(record)

    async def _write(self, record: dict[str, Any]) -> None:
        # Shielded: a record is written whole or not at all; one writer at a time.
        with anyio.CancelScope(shield=True):
            async with self._writing:
                await anyio.to_thread.run_sync(self.output.write, record)

    async def run_all(self, items: Iterable[Any], concurrency: int, limit: int | None) -> None:
        """Ask every item not yet done of every model, ``concurrency`` at a time per model
        (at most ``limit`` items). A model ahead of another reads at most a few chunks
        further into the input."""
        streams = {
            name: anyio.create_memory_object_stream[tuple[BatchItem, str]](_CHUNK * 4)
            for name in self.sessions
        }

        async def feed() -> None:
            try:
                async for chunk in _chunks(items, self.output.done, limit, self):
                    for item, key, models in chunk:
                        for model in models:
                            if self.stopping:
                                return
                            await streams[model][0].send((item, key))
            finally:
                for send, _ in streams.values():
                    send.close()

        async def work(model: str | None, mine: Any) -> None:
            async with mine:
                async for item, key in mine:
                    if not self.stopping:  # once stopping, what is handed out is not asked
                        await self.ask(item, key, model)

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            for model, (_, receive) in streams.items():
                with receive:
                    for _ in range(concurrency):
                        tg.start_soon(work, model, receive.clone())

    def summary(self, elapsed: float) -> BatchSummary:
        earlier = self.output.earlier
        earlier_ok = sum(status == "ok" for status in earlier.status.values())
        graded = self.graded + len(earlier.correct)
        correct = self.correct + sum(earlier.correct.values())
        return BatchSummary(
            asked=self.ok + self.failed,
            ok=self.ok,
            failed=self.failed,
            skipped=self.skipped,
            skipped_failed=self.skipped_failed,
            failures=dict(self.failures),
            elapsed=elapsed,
            quota_wait=self.quota_wait,
            accuracy=(correct / graded) if graded else None,
            graded=graded,
            ungraded=self.ungraded + len(earlier.ungraded),
            stopped_on_quota=self.stopping,
            file_ok=earlier_ok + self.ok,
            file_failed=len(earlier.status) - earlier_ok + self.failed,
            run_accuracy=(self.correct / self.graded) if self.graded else None,
            run_graded=self.graded,
        )


async def _chunks(
    items: Iterable[Any], done: Mapping[Key, str], limit: int | None, run: Run
) -> AsyncIterator[list[tuple[BatchItem, str, list[str | None]]]]:
    """Items not yet done (with the models still to ask), read (and their ids derived) in
    worker threads, a chunk at a time."""
    iterator = iter(items)
    taken = 0
    exhausted = False
    names = list(run.sessions)

    def read() -> list[tuple[BatchItem, str, list[str | None]]]:
        nonlocal taken, exhausted
        chunk: list[tuple[BatchItem, str, list[str | None]]] = []
        while len(chunk) < _CHUNK and (limit is None or taken < limit):
            try:
                value = next(iterator)
            except StopIteration:
                exhausted = True
                break
            item = BatchItem.checked(value)
            key = item_id(item)
            run.seen += 1
            if run.order == "input":
                run.positions.setdefault(key, len(run.positions))
            models = []
            for model in names:
                status = done.get((key, model))
                if status is None:
                    models.append(model)
                else:
                    run.skipped += 1
                    run.skipped_failed += status != "ok"
            if not models:
                continue
            taken += 1
            chunk.append((item, key, models))
        if limit is not None and taken >= limit:
            exhausted = True
        return chunk

    while not exhausted:
        chunk = await anyio.to_thread.run_sync(read)
        if chunk:
            yield chunk
