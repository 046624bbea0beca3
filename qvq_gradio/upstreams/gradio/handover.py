"""Between a job's thread and the event loop: the event id one way, the completion the other.

A job's thread (gradio_client's executor) uploads the image and joins the Space's queue as
gradio_client does; then, where gradio_client would read the event stream, it hands the event
id over (:meth:`HandOver.joined`) and waits. The coroutine following the job reads the stream
on the event loop (:mod:`.reader`) and hands the completion back (:meth:`HandOver.complete`),
and the thread finishes the job as gradio_client does: its result, its errors, its Future. A
stream that ends without a completion (closed, broken, abandoned, shut down) ends the thread's
wait with ``CancelledError``, as gradio_client's own reader does.

Besides, gradio_client keeps every cumulative output of a job (``JobStatus.outputs``) and
pushes each into ``Communicator.updates``, an ``asyncio.Queue`` nothing drains when jobs are
consumed from threads: an 8,000-token answer then costs ~150 MB. :class:`KeepLast` and
:class:`Discard` stand in for those two.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any

__all__ = ["Discard", "HandOver", "KeepLast"]


class HandOver:
    """One job's hand-over (see the module docstring); every method is safe from any thread."""

    def __init__(self) -> None:
        self.event_id: str | None = None
        #: The Space said it started generating (read on the loop; the cancel path looks).
        self.generating = False
        self._outcome: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._wake: Callable[[], None] | None = None

    # -- the job's thread ---------------------------------------------------------------------

    def joined(self, event_id: str) -> Any:
        """The job joined the queue as ``event_id``: wake the loop, wait for the completion
        message's ``output`` (blocking; ``CancelledError`` when the stream ended without it)."""
        self.event_id = event_id
        wake = self._wake
        if wake is not None:
            wake()
        return self._outcome.result()

    # -- the event loop -----------------------------------------------------------------------

    def attach(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from the job's thread, never blocking) once the job has joined."""
        self._wake = wake

    def detach(self) -> None:
        self._wake = None

    def complete(self, output: Any) -> None:
        """The stream carried the job's completion: the thread finishes the job with it."""
        self._settle(lambda: self._outcome.set_result(output))

    def fail(self, exc: BaseException) -> None:
        """The stream cannot go on (the server stopped, refused it): the job raises ``exc``."""
        self._settle(lambda: self._outcome.set_exception(exc))

    def end(self) -> None:
        """The stream ended without a completion; a no-op once the job has its outcome."""
        self._outcome.cancel()

    @property
    def completed(self) -> bool:
        """The Space finished the job (a completion or an error came through the stream)."""
        return self._outcome.done() and not self._outcome.cancelled()

    def _settle(self, settle: Callable[[], None]) -> None:
        # Ended meanwhile (shut down from another thread): the first word stands.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            settle()


class KeepLast(list[Any]):
    """``JobStatus.outputs`` that keeps only its newest item (outputs are cumulative)."""

    def append(self, item: Any) -> None:
        self.clear()
        super().append(item)


class Discard:
    """``Communicator.updates`` that keeps nothing (our stream reader reports on its own)."""

    def put_nowait(self, update: Any) -> None:
        pass
