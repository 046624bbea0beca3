"""A job's feed: what gradio_client's worker threads report about one job, newest only.

gradio_client pushes every cumulative output and status of a job into the job's
``Communicator.updates`` (an ``asyncio.Queue`` that nothing drains when jobs are consumed from
threads) and keeps every output in ``JobStatus.outputs``: an 8,000-token answer then costs
~150 MB. :class:`JobFeed` stands in for that queue and keeps only the newest output and status
(outputs are cumulative, so nothing is lost); :class:`KeepLast` stands in for the list.

The feed wakes the waiting stream the moment a worker thread has something (no polling), and
:func:`queued` / :func:`generating` read a status without the caller knowing gradio_client's
status codes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradio_client import utils as gc_utils
from gradio_client.utils import Status

__all__ = ["JobFeed", "KeepLast", "QueuePlace", "Snapshot", "generating", "queued"]

_GENERATING = (Status.PROCESSING, Status.ITERATING, Status.PROGRESS)

#: (position, queue size, eta) of a job waiting in the Space's queue.
QueuePlace = tuple[int | None, int | None, float | None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a :class:`JobFeed` holds at one moment; replaced whole, never mutated."""

    version: int = 0
    output: Any = None
    has_output: bool = False
    status: gc_utils.StatusUpdate | None = None


class JobFeed:
    """Stands in for ``Communicator.updates``; gradio_client's threads call :meth:`put_nowait`.

    It keeps only the newest output and status (outputs are cumulative, so nothing is lost) and
    calls the waker set by :meth:`attach`. State is one immutable :class:`Snapshot` swapped by a
    single assignment, so the event loop reads it without taking any lock.
    """

    def __init__(self) -> None:
        self._snapshot = Snapshot()
        self._wake: Callable[[], None] | None = None

    def put_nowait(self, update: Any) -> None:
        # Called by gradio_client's worker threads, under the Communicator's lock.
        old = self._snapshot
        if isinstance(update, gc_utils.OutputUpdate):
            if update.final:
                return  # the raw completion message; the job's Future holds the real result
            new = Snapshot(old.version + 1, update.outputs, True, old.status)
        elif isinstance(update, gc_utils.StatusUpdate):
            new = Snapshot(old.version + 1, old.output, old.has_output, update)
        else:
            return
        self._snapshot = new
        wake = self._wake
        if wake is not None:
            wake()

    def attach(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def detach(self) -> None:
        self._wake = None

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot


class KeepLast(list[Any]):
    """``JobStatus.outputs`` that keeps only its newest item (outputs are cumulative)."""

    def append(self, item: Any) -> None:
        self.clear()
        super().append(item)


def queued(status: gc_utils.StatusUpdate | None) -> QueuePlace | None:
    """Where the job waits in the Space's queue, or None when it is not queued."""
    if status is None or status.code != Status.IN_QUEUE:
        return None
    return (status.rank, status.queue_size, status.eta)


def generating(status: gc_utils.StatusUpdate | None) -> bool:
    """Whether the status says the Space has started generating."""
    return status is not None and status.code in _GENERATING
