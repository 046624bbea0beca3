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
    rate, ETA, and the quota countdown while paused. Call :meth:`close` at the end.

    ``disable``: ``None`` shows the bar only when ``file`` is a terminal (or in Jupyter),
    ``False`` always (a forced bar on a pipe or a log file is redrawn at most every 5 s, as
    lines), ``True`` never. tqdm paces the drawing itself (``mininterval``): updates between two
    draws cost a counter, so thousands of items cost the bar nothing.
    """

    def __init__(self, *, file: Any = None, disable: bool | None = None) -> None:
        from tqdm.auto import tqdm

        stream = file or sys.stderr
        terminal = bool(getattr(stream, "isatty", lambda: False)())
        self._bar = tqdm(
            total=None,
            unit="q",
            desc="qvq",
            file=stream,
            disable=disable,
            dynamic_ncols=terminal,
            mininterval=0.1 if terminal else 5.0,
            ascii=None if terminal else True,
        )
        self._done = 0
        self._paused = False

    def __call__(self, progress: Progress) -> None:
        bar = self._bar
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        paused = bool(progress.paused_for)
        if paused or paused != self._paused:
            self._paused = paused
            desc = f"quota: resuming in {progress.paused_for:.0f} s" if paused else "qvq"
            bar.set_description_str(desc, refresh=False)
        bar.set_postfix(
            ok=progress.done, failed=progress.failed, in_flight=progress.in_flight, refresh=False
        )
        finished = progress.done + progress.failed
        bar.update(finished - self._done)  # draws when mininterval has passed, not before
        self._done = finished

    def close(self) -> None:
        self._bar.close()
