"""Exponential backoff with jitter: the one formula the pool and the batch engine share."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(failures: int, *, first: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row (1 or more): ``first`` doubled per
    failure, at most ``cap``, then scaled by a random factor in [0.5, 1] so that many waiters
    do not come back at the same moment."""
    return float(min(cap, first * 2 ** (max(failures, 1) - 1)) * random.uniform(0.5, 1.0))
