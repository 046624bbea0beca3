"""The event loop seen from worker threads and from hot paths: wake-ups, and its clock.

Each job's thread tells the stream following it on the event loop that the job has joined the
Space's queue, and that it has ended. Scheduling a callback from another thread
(``call_soon_threadsafe``) writes to the loop's self-pipe and wakes it: with a burst of jobs,
that is a system call and a loop iteration each. :class:`Wakeups` (one per loop) gathers the
callbacks of every thread into one queue and schedules one drain for all that queued before it
ran, so a burst costs a few loop wake-ups instead of one per job. :func:`loop_clock` is the
loop's clock as a plain function, for code that reads it for every message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["Wakeups", "loop_clock", "wakeups"]

_HUBS: weakref.WeakKeyDictionary[Any, Wakeups] = weakref.WeakKeyDictionary()


class Wakeups:
    """Runs callbacks queued from any thread on one loop, coalescing the loop's wake-ups."""

    def __init__(self, schedule: Callable[[Callable[[], None]], Any]) -> None:
        self._schedule = schedule
        self._ready: collections.deque[Callable[[], None]] = collections.deque()
        self._scheduled = False

    def call(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop soon (from any thread; never blocks)."""
        self._ready.append(callback)
        if self._scheduled:
            return  # the drain already scheduled runs it (it has not started, or it re-reads)
        self._scheduled = True
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._schedule(self._drain)

    def _drain(self) -> None:
        # Cleared first: a callback queued from now on schedules a drain of its own.
        self._scheduled = False
        ready = self._ready
        while ready:
            ready.popleft()()


def wakeups(native: Any) -> Wakeups:
    """The hub of the running loop (``native``: an asyncio loop or a trio token)."""
    hub = _HUBS.get(native)
    if hub is None:
        if isinstance(native, asyncio.AbstractEventLoop):
            hub = Wakeups(native.call_soon_threadsafe)
        else:  # trio
            hub = Wakeups(native.run_sync_soon)
        _HUBS[native] = hub
    return hub


def loop_clock() -> Callable[[], float]:
    """The running loop's clock (``anyio.current_time``'s), as a plain function: called per
    message, where ``anyio.current_time`` looks the async library up on every call."""
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.time
    return anyio.current_time
