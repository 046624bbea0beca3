"""The job handle: one submitted gradio_client job, seen through what its life needs.

:class:`JobHandle` hides the gradio_client ``Job`` (its Future, its communicator's event id,
its cancel function), the one-job :class:`~.client.JobClient` it runs on and the job's event
stream, so that the life of a job (:mod:`.job`) is written without knowing
gradio_client's internals.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import httpx
from gradio_client import handle_file

from .client import JobClient, QVQClient
from .handover import HandOver
from .reader import Update, read_updates
from .shapes import Call
from .translate import translate_error

__all__ = ["JobHandle", "file_arg"]


def file_arg(image: str | None) -> Any:
    """``handle_file(image)`` without its existence check (a stat, which would block the event
    loop): our image is a file the pipeline has just written, or a public URL."""
    if not image:
        return None
    if image.startswith(("http://", "https://")):
        return handle_file(image)
    return {"path": image, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(image).name}


class JobHandle:
    """One job on the Space, on a Gradio session of its own (see :meth:`submit`)."""

    def __init__(self, view: JobClient) -> None:
        self._view = view
        self._job: Any = None

    @classmethod
    def open(
        cls,
        client: QVQClient,
        limits: httpx.Timeout,
        alone: bool = False,
        session: str | None = None,
    ) -> JobHandle:
        """A handle on a Gradio session of its own (cancelling its job stops no other
        question's stream; ``session``: a question's own, shared by its steps), nothing sent
        yet. A question asked ``alone`` (none other in flight) joins on the calling event
        loop, where its stream will be read: the stream then takes the join's connection
        (see :mod:`.client`)."""
        return cls(client.for_one_job(limits, join_here=alone, session_hash=session))

    def start(self, call: Call) -> None:
        """Submit ``call``: gradio_client's executor runs the job (upload, join) in a thread of
        its own; this returns at once, without I/O."""
        try:
            self._job = self._view.submit(*call.args, api_name=call.api_name)
        except BaseException:
            self.release()
            raise

    @property
    def future(self) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = self._job.future
        return future

    @property
    def done(self) -> bool:
        """The job has ended (or was never submitted: its steps failed, or were abandoned)."""
        return self._job is None or bool(self._job.future.done())

    @property
    def hand_over(self) -> HandOver:
        """Where the job's thread says it joined the queue (see :mod:`.handover`)."""
        return self._view.hand_over

    @property
    def generating(self) -> bool:
        """The job's stream said the Space started generating."""
        return self._view.hand_over.generating

    def updates(self, wake_by: Callable[[], float]) -> AsyncGenerator[Update | None, None]:
        """The job's event stream, read on the event loop (see :func:`.reader.read_updates`);
        call it once the job has joined the queue."""
        return read_updates(self._view, self._job.communicator.prediction_processor, wake_by)

    @property
    def has_event_id(self) -> bool:
        """The job has joined the Space's queue (a cancel before that carries no id)."""
        return self._job.communicator.event_id is not None

    def result(self, space: str) -> Any:
        """The job's final output; its error translated into ours."""
        future = self.future
        try:
            exc = future.exception()
        except concurrent.futures.CancelledError as cancelled:
            exc = cancelled
        if exc is not None:
            raise translate_error(exc, space=space) from exc
        return future.result()

    def send_cancel(self) -> None:
        """POST ``/cancel`` for this job (blocking); gradio_client keeps following it."""
        self._job.cancel_fn()

    def stop(self) -> None:
        """Cancel the job as gradio_client does (its last word: it stops reading its status)."""
        self._job.cancel()

    def set_timeout(self, timeout: httpx.Timeout) -> None:
        self._view.set_timeout(timeout)

    def abort(self) -> None:
        """Shut down the job's connections (a read blocked on a dead one wakes now) and end
        the thread's wait for a completion."""
        self._view.abort()
        self._view.hand_over.end()

    def release(self) -> None:
        """Let the job's SSE reader thread end once its stream closes."""
        self._view.release()
