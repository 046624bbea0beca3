"""Batch progress: snapshots for a callback, and a tqdm bar that renders them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Progress", "TqdmProgress"]


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running batch, handed to the ``progress`` callback on every change."""

    done: int
    failed: int
    in_flight: int
    skipped: int  #: already in the output from earlier runs
    total: int | None  #: items to ask in this run, when known
    paused_for: float | None  #: seconds of quota pause left, while paused


class TqdmProgress:
    """A ``tqdm.auto`` bar for :func:`arun` (a widget in Jupyter): done / failed / in flight,
    rate, ETA, and the quota countdown while paused. Call :meth:`close` at the end."""

    def __init__(self, *, file: Any = None, disable: bool | None = None) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=None, unit="q", file=file or sys.stderr, disable=disable,
                         dynamic_ncols=True)
        self._done = 0

    def __call__(self, progress: Progress) -> None:
        bar = self._bar
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        finished = progress.done + progress.failed
        bar.update(finished - self._done)
        self._done = finished
        bar.set_description(
            f"quota: resuming in {progress.paused_for:.0f} s" if progress.paused_for else "qvq"
        )
        bar.set_postfix(
            ok=progress.done, failed=progress.failed, in_flight=progress.in_flight, refresh=False
        )
        bar.refresh()

    def close(self) -> None:
        self._bar.close()
