"""The life of one job on the Space: submit, follow, verify, cancel, release.

A :class:`SpaceJob` is submitted to a worker thread on a Gradio session of its own (a
:class:`~qvq_gradio.upstreams.gradio.JobHandle`): the thread uploads the image and joins the Space's
queue. :meth:`SpaceJob.follow` then reads the job's event stream on the event loop and turns
each cumulative output into a delta; the stream's completion goes back to the thread, which
finishes the job, and the outcome is decided from the job's Future, never from a status alone.

When the Space's config is due to be read again (see :mod:`qvq_gradio.upstreams.gradio.freshness`),
:meth:`SpaceJob.follow` uses nothing of the job until that read confirms ``/generate`` is still
the function we submitted to: a Space restarted with its functions in another order would
otherwise run another function for our cached function index. The job's stream is opened
meanwhile (the read went out with the join: it costs no round trip of its own).

Cancelling upstream never delays the caller: :class:`Background` sends it from a daemon thread,
bounded, and a session closing waits for pending cancels at most ``CLOSE_WAIT`` seconds.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx

from ..._threads import ElasticExecutor
from ..._wakeups import wakeups
from ...errors import IdleTimeoutError, ProtocolError, TotalTimeoutError
from ...events import Event, QueueUpdate, ReasoningDelta, TextDelta
from ...thinking import Said
from . import JobHandle, QVQClient, Update, endpoint_signature, translate_error
from .shapes import Call, Shape, Unreadable

__all__ = ["CLOSE_WAIT", "Background", "Redeployed", "SpaceJob", "new_text"]

log = logging.getLogger("qvq_gradio")

#: How long a closing session waits for cancels still being sent before abandoning them.
CLOSE_WAIT: Final = 1.0
# How long cancelling a job upstream may take before we give up on it (it is one POST).
_CANCEL_TIMEOUT: Final = 10.0
# When to cancel again a job that had not started generating (seconds after the first cancel;
# the first two fit in the second a closing session waits for its cancels;
# see cancel_blocking). Cheap: it runs in the background and the caller never waits on it.
_RECANCEL_AT: Final = (0.2, 0.5, 2.5)


class Redeployed(Exception):
    """The Space was restarted with another app: the job ran on a stale function index."""


class _Waker:
    """Wakes one waiting stream from any thread (the job joined, ended; the config was read
    again), without blocking that thread.

    Calls coalesce: at most one wake-up per stream is queued at a time, and the loop's
    :class:`~qvq_gradio._wakeups.Wakeups` drains those of every stream at once. No lock is
    taken on the loop side (a lock held by a worker thread would block the loop).
    """

    def __init__(self) -> None:
        self._hub = wakeups(anyio.lowlevel.current_token().native_token)
        self._event = anyio.Event()
        self._pending = False

    def __call__(self, *_: Any) -> None:
        if self._pending:
            return
        self._pending = True
        self._hub.call(self._fire)

    def _fire(self) -> None:
        self._pending = False
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


def new_text(previous: str, output: str, space: str) -> str:
    """The delta from ``previous`` to the cumulative ``output``."""
    if not output.startswith(previous):
        raise ProtocolError(
            "The Space rewrote text it had already sent", text=previous, space=space
        )
    return output[len(previous) :]


class Background:
    """Blocking work that nobody waits for: upstream cancels.

    Daemon threads (an :class:`~qvq_gradio._threads.ElasticExecutor`), so a cancel stuck on a
    dead network never holds up the caller, closing or interpreter exit.
    """

    def __init__(self) -> None:
        self._pool = ElasticExecutor(64, name="qvq-background")
        self._cancels: set[concurrent.futures.Future[None]] = set()

    def cancel(self, job: SpaceJob) -> None:
        """Cancel ``job`` upstream, in the background."""
        try:
            future = self._pool.submit(job.cancel_blocking)
        except RuntimeError:
            # Shut down (the session closed while this job was being submitted): a thread of
            # its own, never the caller's, which may be the event loop's.
            threading.Thread(target=job.cancel_blocking, name="qvq-cancel", daemon=True).start()
            return
        self._cancels.add(future)
        future.add_done_callback(self._cancels.discard)

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Wait at most ``wait`` seconds for pending cancels, then abandon what is left."""
        deadline = time.monotonic() + wait
        concurrent.futures.wait(list(self._cancels), timeout=wait)
        self._pool.shutdown(timeout=max(deadline - time.monotonic(), 0.0))


@dataclass(frozen=True, slots=True)
class _Timing:
    """One job's time limits: the total deadline (anyio time) and the limits as given."""

    deadline: float
    idle: float | None
    total: float | None


class SpaceJob:
    """One job on the Space, on a Gradio session of its own."""

    def __init__(self, handle: JobHandle, space: str, shape: Shape) -> None:
        self.handle = handle
        self.space = space
        self.shape = shape
        self.answer = ""  #: the answer's text so far
        self.reasoning = ""  #: the thinking so far
        self.started: float | None = None  #: when the Space began generating (anyio time)
        self.first_token: float | None = None
        self._progress = 0.0  #: when text last arrived (or generation started), anyio time
        self._queue: QueueUpdate | None = None
        self._released = False

    @classmethod
    def open(
        cls,
        client: QVQClient,
        limits: httpx.Timeout,
        space: str,
        shape: Shape,
        alone: bool,
        session: str | None = None,
    ) -> SpaceJob:
        """A job on a Gradio session of its own (``session``: that one, shared by a
        question's steps), nothing sent yet (no I/O). ``alone``: no other question is in
        flight (see :meth:`~qvq_gradio.upstreams.gradio.JobHandle.open`)."""
        return cls(JobHandle.open(client, limits, alone, session), space, shape)

    def start(self, call: Call) -> None:
        """Hand the job to gradio_client's executor (it never blocks: the job's own thread
        uploads and joins the queue; the stream is read by :meth:`follow`)."""
        try:
            self.handle.start(call)
        except Exception as exc:
            raise translate_error(exc, space=self.space) from exc

    @property
    def done(self) -> bool:
        return self.handle.done

    async def follow(
        self,
        *,
        start: float,
        deadline: float,
        idle: float | None,
        total: float | None,
        verify: concurrent.futures.Future[Any] | None,
        signature: tuple[Any, ...],
    ) -> AsyncGenerator[Event, None]:
        """Queue updates and text deltas until the job is done (then it returns).

        ``verify``, if given, is the Space's config read again: nothing the job's stream
        brings is used before it confirms that ``/generate`` is still the function we
        submitted to (else :class:`Redeployed`, which also wins over the job's failing). The
        stream is opened meanwhile: the read and the join went out together, so the check
        costs no round trip of its own.
        """
        timing = _Timing(deadline, idle, total)
        self._progress = start
        handle = self.handle
        waker = _Waker()
        handle.hand_over.attach(waker)
        handle.future.add_done_callback(waker)
        if verify is not None:
            verify.add_done_callback(waker)
        try:
            # Until the job's thread has joined the queue (or failed before: its Future says
            # why).
            while handle.hand_over.event_id is None and not self.done:
                await self._wait(waker, timing)
            if not self.done:
                updates = handle.updates(functools.partial(self._wake_by, timing))
                try:
                    async with aclosing(updates):
                        async for update in updates:
                            if verify is not None:
                                await self._confirm(verify, signature, waker, timing)
                                verify = None
                            if update is None:
                                self._timed_out(timing)
                            for event in self._news(update):
                                yield event
                except Redeployed:
                    raise
                except Exception:
                    if verify is not None:  # a redeploy explains the failure better
                        await self._confirm(verify, signature, waker, timing)
                    raise
            # The stream handed its end to the job's thread: the Future holds the outcome.
            while not self.done:
                await self._wait(waker, timing)
            if verify is not None:
                await self._confirm(verify, signature, waker, timing)
            said = self._read(handle.result(self.space), final=True)
            for event in self._deltas(said, anyio.current_time()):
                yield event
        finally:
            handle.hand_over.detach()

    async def _confirm(
        self,
        verify: concurrent.futures.Future[Any],
        signature: tuple[Any, ...],
        waker: _Waker,
        timing: _Timing,
    ) -> None:
        """Until the config read again has answered; :class:`Redeployed` if it says the
        Space runs another app now."""
        while not verify.done():
            await self._wait(waker, timing)
        self._check(verify, signature)

    def _news(self, update: Update) -> list[Event]:
        """The events one read of the job's stream brings (a list: this runs per message)."""
        events: list[Event] = []
        if update.queued is not None:
            queue = QueueUpdate(*update.queued)
            if queue != self._queue:
                self._queue = queue
                events.append(queue)
        if update.started and self.started is None:
            self.started = self._progress = update.at
        if update.has_output:
            events.extend(self._deltas(self._read(update.output, final=False), update.at))
        return events

    def _read(self, output: Any, *, final: bool) -> Said:
        try:
            return self.shape.read(output, final=final, text_started=bool(self.answer))
        except Unreadable as exc:
            raise ProtocolError(str(exc), text=self.answer, space=self.space) from None

    def _deltas(self, said: Said, at: float) -> list[Event]:
        """The news in ``said`` (cumulative) since the last read: thinking, then text."""
        events: list[Event] = []
        thought = new_text(self.reasoning, said.reasoning, self.space)
        if thought:
            self.reasoning = said.reasoning
            self._add("", at)
            events.append(ReasoningDelta(thought))
        delta = new_text(self.answer, said.text, self.space)
        if delta:
            self._add(delta, at)
            events.append(TextDelta(delta))
        return events

    def _wake_by(self, timing: _Timing) -> float:
        """The loop time by which the job must bring news: its total deadline, and once it
        generates, its idle deadline."""
        if timing.idle is None or self.started is None:
            return timing.deadline
        return min(timing.deadline, self._progress + timing.idle)

    async def _wait(self, waker: _Waker, timing: _Timing) -> None:
        """Until the job's thread or the config check has news; a timeout raises."""
        wake_by = self._wake_by(timing)
        delay = None if wake_by == math.inf else max(wake_by - anyio.current_time(), 0.0)
        with anyio.move_on_after(delay) as scope:
            await waker.wait()
        if scope.cancelled_caught:
            self._timed_out(timing)

    def _timed_out(self, timing: _Timing) -> NoReturn:
        if anyio.current_time() >= timing.deadline:
            raise TotalTimeoutError(
                f"No complete answer within total_timeout={timing.total:g} s",
                text=self.answer,
                space=self.space,
            )
        raise IdleTimeoutError(
            f"No new text for idle_timeout={timing.idle:g} s", text=self.answer, space=self.space
        )

    def _add(self, delta: str, now: float) -> None:
        self.answer += delta
        self._progress = now
        if self.first_token is None:
            self.first_token = now
            self.started = self.started or now

    def _check(self, verify: concurrent.futures.Future[Any], signature: tuple[Any, ...]) -> None:
        try:
            config = verify.result()
        except Exception as exc:  # the job's own outcome will say what went wrong
            log.debug("could not re-read the Space's config: %r", exc)
            return
        if endpoint_signature(config, self.shape.api_name) != signature:
            raise Redeployed()

    def abort(self) -> None:
        """Shut down the job's connections (a thread reading a frozen one wakes now)."""
        self.handle.abort()

    def cancel_blocking(self) -> None:
        """Cancel the job on the Space (blocking; run it in a worker thread), bounded."""
        handle = self.handle
        try:
            handle.set_timeout(httpx.Timeout(_CANCEL_TIMEOUT))
            # A cancel sent before the job has joined the Space's queue carries no event id:
            # the Space never hears of it and runs the job anyway (gradio_client's /reset after
            # joining does not stop it). So first wait for gradio_client's worker to join and
            # learn the id. It sets no event we could wait on, hence short polls, bounded.
            deadline = time.monotonic() + _CANCEL_TIMEOUT
            while not handle.has_event_id and not handle.done:
                if time.monotonic() > deadline:
                    log.warning("cancelling a job that has not reached the Space's queue yet")
                    break
                time.sleep(0.01)
            if self.first_token is None:
                # Gradio's /cancel stops running tasks and removes queued events, but misses an
                # event caught between the two (just taken off the queue, its task not yet
                # running): about 1 cancel in 6 right after joining, more on Gradio 5.9 or a
                # loaded machine, and the stream's "started" comes before the task runs: only
                # a first token proves it does. So until then cancel again a few times
                # (_RECANCEL_AT); closing the job's event stream (its follower did) also has
                # Gradio drop the session's events. Only /cancel meanwhile: stopping the job
                # stops gradio_client from following it, so it comes last. The session is this
                # question's alone, so cancelling it is safe.
                self._cancel_again_and_again()
            handle.stop()
        except Exception as exc:  # the Space may be gone; the job is abandoned either way
            log.debug("cancelling job upstream failed: %r", exc)
        finally:
            self.abort()  # the job's thread, waiting for a completion, is told the stream ended
            handle.release()

    def _cancel_again_and_again(self) -> None:
        # Not "until the Future is done": when /cancel misses the task, Gradio still tells the
        # client the event completed (seen here), so done says nothing about the Space.
        sent = time.monotonic()
        self.handle.send_cancel()
        for at in _RECANCEL_AT:
            time.sleep(max(sent + at - time.monotonic(), 0.0))
            self.handle.send_cancel()

    def release(self, background: Background) -> None:
        """Done with the job: cancel it upstream if unfinished (in the background), free it."""
        if self._released:
            return
        self._released = True
        if self.done:
            self.handle.release()
            return
        log.debug("cancelling unfinished job upstream")
        background.cancel(self)
