"""Typed stream events, for callers who want more than the text.

:meth:`qvq_gradio.Session.events` yields these; the seed's provider API yields only the text
of each :class:`TextDelta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "Event",
    "Finished",
    "QueueUpdate",
    "ReasoningDelta",
    "ShapeFound",
    "SpaceChanged",
    "SpaceWaking",
    "TextDelta",
]


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """The job is waiting in the Space's queue.

    ``position`` counts from 0 (next to run); ``eta`` is the Space's estimate in seconds.
    """

    position: int | None
    queue_size: int | None
    eta: float | None


@dataclass(frozen=True, slots=True)
class SpaceChanged:
    """A :class:`~qvq_gradio.Pool` gave the question to ``space``.

    The first one of a stream has ``previous=None``; later ones mean the question moved (before
    any text reached the caller) because ``previous`` failed with ``reason``.
    """

    space: str
    previous: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SpaceWaking:
    """The Space is not running yet (``state``: e.g. ``SLEEPING``, ``BUILDING``); we wait for it
    within ``connect_timeout``."""

    space: str
    state: str


@dataclass(frozen=True, slots=True)
class ShapeFound:
    """How ``space`` is asked, before its first text: ``qvq`` (QVQ's ``/generate``, whose
    whole text, reasoning included, is answer text), ``chat`` (a ChatInterface) or ``blocks``
    (Qwen's stateful demo); see :meth:`qvq_gradio.Session.describe_shape`. ``app``: which
    build of the Space's app answers (its app id and Gradio version; None if unknown)."""

    space: str
    shape: str
    app: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text; the concatenation of all deltas is the Space's final text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """New thinking: what a reasoning model's Space shows apart from its answer (a chat message
    titled as thinking, or text inside ``<think>...</think>``). QVQ's own Space shows none: its
    whole text, reasoning included, comes as :class:`TextDelta`."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The answer is complete. Times are seconds from the start of the stream. ``text`` is the
    answer's text (for QVQ's Space, its whole text), ``reasoning`` the thinking shown apart.

    ``cached``: answered from the answer history (``cache=True``) without asking the Space.
    """

    text: str
    space: str
    elapsed: float
    time_to_first_token: float | None
    queue_wait: float | None
    cached: bool = False
    #: The thinking (the concatenation of the :class:`ReasoningDelta` events), "" if none.
    reasoning: str = ""
    #: How the Space was asked: its shape (``qvq``, ``chat``, ``blocks``) and which of the
    #: caller's parameters (system prompt, temperature, ...) reached one of its inputs.
    shape: str | None = None
    applied: Mapping[str, Any] = field(default_factory=dict)
    #: The model id the provider said answered (an endpoint's), None for a Space.
    model: str | None = None
    #: The token counts the upstream reported (``prompt_tokens``, ``completion_tokens``,
    #: ``total_tokens``), None when it reports none (a Space).
    usage: Mapping[str, int] | None = None


Event: TypeAlias = (
    QueueUpdate | SpaceChanged | SpaceWaking | ShapeFound | ReasoningDelta | TextDelta | Finished
)
