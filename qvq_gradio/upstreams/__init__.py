"""The upstream seam: what the question pipeline asks, whatever answers it.

An :class:`Upstream` turns a checked, prepared question (:class:`Request`) into our typed
events (:mod:`qvq_gradio.events`), as an httpx transport turns a request into a response: a
Gradio Space is one kind (:mod:`.gradio`). :class:`~qvq_gradio.Session` runs the pipeline
(check, prepare images, cache, record) over one upstream; :class:`~qvq_gradio.Pool` routes
over several. Each upstream kind maps its library's errors to ours at one point.

    gradio/   a Space: connect, wake, redeploy checks, jobs; shapes/ (QVQ, chat, blocks)
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..events import Event
from ..media import Upload

__all__ = ["Limits", "Request", "Upstream"]


@dataclass(frozen=True)
class Limits:
    """One question's time limits (seconds; None: no limit)."""

    idle: float | None
    total: float | None
    connect: float

    def deadline(self, start: float) -> float:
        return start + self.total if self.total is not None else math.inf


@dataclass(frozen=True)
class Request:
    """A question as an upstream receives it: checked, its images prepared.

    ``text`` is the prompt flattened as QVQ's Space takes it, ``turns`` the ``(role, text)``
    messages it came from, ``sampling`` the parameters the caller gave (temperature,
    max_tokens, top_p), ``upload`` the images normalised (None without any), ``start`` when
    the question was asked (anyio time), ``limits`` its time limits.
    """

    text: str
    turns: tuple[tuple[str, str], ...]
    upload: Upload | None
    start: float
    limits: Limits
    sampling: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Upstream(Protocol):
    """Something that answers questions: a Space (or, later, an endpoint)."""

    @property
    def name(self) -> str:
        """What it is, for errors, events and the history (a Space's URL or id)."""
        ...

    @property
    def closed(self) -> bool: ...

    # An upstream that takes several images as several parts (an endpoint) says so with a
    # ``several_images = True`` attribute; without it, several images come as one grid.

    def answer(self, request: Request) -> AsyncGenerator[Event, None]:
        """The events of one answer, ending with :class:`~qvq_gradio.events.Finished`;
        closing the generator stops the answer upstream."""
        ...

    async def ready(self) -> None:
        """Raise the error a question would meet, without asking anything."""
        ...

    async def app(self) -> str | None:
        """Which build of what answers answers now (None: unknown, or unreachable): a
        recorded answer from another build is not served from the cache."""
        ...

    def probe_blocking(self, timeout: float) -> bool:
        """Whether it answers a cheap request again (blocking; a worker thread)."""
        ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...
