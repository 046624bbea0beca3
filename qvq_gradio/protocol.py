"""The one interface the shells need: :class:`SessionLike`.

:class:`~qvq_gradio.Session` (one Space) and :class:`~qvq_gradio.Pool` (several Spaces as one)
both satisfy it, and everything built on top — the provider's ``session=``, the blocking API,
``notebook.show``, the batch engine — accepts any ``SessionLike`` rather than checking for a
class, as httpx's client accepts any transport. :func:`texts` and :func:`answer` turn any
``SessionLike``'s event stream into its text deltas or its whole answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from typing_extensions import Self, Unpack

from .errors import ProtocolError
from .events import Event, Finished, TextDelta
from .options import AskOptions
from .pipeline import Question
from .prompt import Messages

__all__ = ["Asking", "AsyncClosing", "SessionLike", "answer", "texts"]


@runtime_checkable
class SessionLike(Protocol):
    """Asks questions of one Space or several; see :class:`~qvq_gradio.Session`."""

    @property
    def space(self) -> str:
        """The Space (or, for a pool, the Spaces, comma-separated) this asks."""
        ...

    def events(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> AsyncGenerator[Event, None]: ...

    def stream(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> AsyncGenerator[str, None]: ...

    async def ask(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> str: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


class AsyncClosing:
    """``async with`` for anything with an ``aclose()``: closed on the way out."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def texts(events: AsyncGenerator[Event, None]) -> AsyncGenerator[str, None]:
    """The text of each :class:`TextDelta`; closing this closes ``events`` (so cancels)."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                yield event.text


async def answer(events: AsyncGenerator[Event, None], space: str) -> str:
    """The text of the :class:`Finished` event that ends ``events``."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Finished):
                return event.text
    raise ProtocolError("the stream ended without an answer", space=space)  # pragma: no cover


class Asking(AsyncClosing):
    """``stream`` and ``ask`` for anything that has ``events_for`` (a checked question) and a
    ``space``: Session and Pool differ in how they run a question, not in these two."""

    @property
    def space(self) -> str:
        raise NotImplementedError

    def events_for(self, question: Question) -> AsyncGenerator[Event, None]:
        raise NotImplementedError

    def stream(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> AsyncGenerator[str, None]:
        """The answer as text deltas; their concatenation is the Space's final text. Bad input
        raises here, before anything is sent."""
        return texts(self.events_for(Question.of(prompt, image, options, where="stream")))

    async def ask(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> str:
        """The whole answer as one string."""
        question = Question.of(prompt, image, options, where="ask")
        return await answer(self.events_for(question), self.space)
