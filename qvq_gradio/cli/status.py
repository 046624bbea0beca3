"""The one-line status on a terminal's stderr: the Space's queue, a Space waking up."""

from __future__ import annotations

import itertools
from typing import TextIO

import anyio

from ..events import QueueUpdate, SpaceWaking

__all__ = ["StatusLine"]

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class StatusLine:
    """A one-line queue status on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.live = stream.isatty()
        self._frames = itertools.cycle(_SPINNER)
        self._line: str | None = None  # what is on screen now, without the spinner

    def queued(self, update: QueueUpdate) -> None:
        if not self.live:
            return
        where = "" if update.position is None else f": position {update.position + 1}"
        if update.queue_size:
            where += f" of {update.queue_size}"
        eta = "" if update.eta is None else f", about {update.eta:.0f} s"
        self._line = f"waiting in the Space's queue{where}{eta}"
        self.tick()

    def tick(self) -> None:
        """Redraw the line with the next spinner frame (it turns between the Space's updates)."""
        if self._line is not None:
            self._stream.write(f"\r\x1b[K{next(self._frames)} {self._line}")
            self._stream.flush()

    async def spin(self, period: float = 0.1) -> None:
        while True:
            await anyio.sleep(period)
            self.tick()

    def waking(self, event: SpaceWaking) -> None:
        if self.live:
            self._line = f"{event.space} is {event.state.lower()}; waiting for it to start"
            self.tick()

    def clear(self) -> None:
        if self._line is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._line = None
