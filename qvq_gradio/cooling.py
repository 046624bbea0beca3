"""One Space's health in a pool: cooling after failures, probing while it cools, disabled.

:class:`Health` is plain state and arithmetic on a clock it is given (``time.monotonic`` by
default): no I/O, no threads, no lock (the pool holds its own around every call), so cooling,
backoff and probing are tested with a clock a test moves, never by sleeping.

* A failure that means "this Space could not take the question" (``failover`` on its class) starts a
  cooling period: a quota error's ``retry_after``, else an exponential backoff with jitter.
  The questions in flight when an outage struck fail together: they count as one failure.
* While it cools after anything but quota, the Space is due for a probe (one cheap request)
  every ``probe_every`` seconds; a probe that finds it back ends the cooling at once.
* An authentication failure disables it for good.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

from ._backoff import backoff
from .errors import (
    AuthenticationError,
    QuotaExceededError,
    ResponseError,
)

__all__ = ["Health", "State"]

BACKOFF_FIRST: Final = 1.0  # seconds of cooling after a first failure; doubles per failure
BACKOFF_CAP: Final = 120.0
QUOTA_DEFAULT: Final = 60.0  # a quota error that does not say when to retry
PROBE_EVERY: Final = 2.0
_TTFT_SAMPLES: Final = 100

State = Literal["ok", "cooling", "disabled"]


class Health:
    """A Space's health and counts, on ``clock`` (seconds; only differences matter)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        first: float = BACKOFF_FIRST,
        cap: float = BACKOFF_CAP,
        probe_every: float = PROBE_EVERY,
        quota_default: float = QUOTA_DEFAULT,
    ) -> None:
        self.clock = clock
        self.first, self.cap = first, cap
        self.probe_every, self.quota_default = probe_every, quota_default
        self.answered = self.failed = self.failures_in_row = 0
        self.until = 0.0  #: clock time at which cooling ends
        #: outages so far: a question sent during an outage that is already counted adds none
        self.outage = 0
        self.probe_at = 0.0  #: clock time at which a cooling Space is next probed
        self.probing = False
        self.disabled = False
        self.last_error: ResponseError | None = None
        self.ttft: deque[float] = deque(maxlen=_TTFT_SAMPLES)

    def state(self) -> State:
        if self.disabled:
            return "disabled"
        return "cooling" if self.until > self.clock() else "ok"

    def left(self) -> float:
        """Seconds of cooling left (0 when it does not cool)."""
        return max(self.until - self.clock(), 0.0)

    def failure(self, error: ResponseError, outage: int) -> float | None:
        """A question sent during ``outage`` (the count when it was sent) failed with
        ``error``; the cooling it started, in seconds, or None (no new cooling)."""
        self.failed += 1
        self.last_error = error
        if isinstance(error, AuthenticationError):
            self.disabled = True
            return None
        if not error.failover or outage != self.outage:
            return None
        self.outage += 1
        self.failures_in_row += 1
        now = self.clock()
        if isinstance(error, QuotaExceededError):
            pause = error.retry_after or self.quota_default
            self.probe_at = math.inf  # its config says nothing of its quota
        else:
            pause = backoff(self.failures_in_row, first=self.first, cap=self.cap)
            self.probe_at = now + min(self.probe_every, pause)
        self.until = now + pause
        return pause

    def success(self, ttft: float | None) -> None:
        self.answered += 1
        self.failures_in_row = 0
        if ttft is not None:
            self.ttft.append(ttft)

    def take_probe(self) -> bool:
        """Whether a probe is due now; if so it is taken (until :meth:`probed`)."""
        now = self.clock()
        due = not (self.disabled or self.probing or self.until <= now or self.probe_at > now)
        if due:
            self.probing = True
        return due

    def probed(self, back: bool, outage: int) -> bool:
        """A probe taken during ``outage`` ended; True when it found the Space back (its
        cooling ends now), else the next probe is scheduled."""
        self.probing = False
        if back and self.outage == outage and self.until > self.clock():
            self.until = 0.0
            return True
        self.probe_at = self.clock() + self.probe_every
        return False
