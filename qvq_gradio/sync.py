"""Blocking twins of the async API, for scripts, REPLs and Jupyter.

They work in a plain script and inside a running event loop (Jupyter, IPython) alike: every call
runs on one process-wide event-loop thread through an anyio blocking portal, never through
``asyncio.run()`` in the caller's thread. Breaking out of :func:`stream` (or Ctrl-C while it
waits) cancels the job upstream, exactly as with the async API.

    >>> import qvq_gradio
    >>> qvq_gradio.ask("What is in this picture?", image="cat.jpg")  # doctest: +SKIP
    >>> for delta in qvq_gradio.stream("Describe it.", image="cat.jpg"):  # doctest: +SKIP
    ...     print(delta, end="", flush=True)
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal
from typing_extensions import Unpack

from .events import Event
from .history import HistoryOption
from .imaging import ImageOptions
from .options import AskOptions
from .prompt import Messages
from .protocol import SessionLike
from .provider import shared_session
from .session import Session

__all__ = ["SyncSession", "ask", "events", "portal", "stream"]

T = TypeVar("T")

_portal: BlockingPortal | None = None
_portal_lock = threading.Lock()


def portal() -> BlockingPortal:
    """The process-wide portal: an event loop on a daemon thread, started on first use.

    A daemon thread, so that it never holds up interpreter exit.
    """
    global _portal
    with _portal_lock:
        if _portal is None:
            ready = threading.Event()
            holder: list[BlockingPortal] = []

            async def serve() -> None:
                async with BlockingPortal() as new_portal:
                    holder.append(new_portal)
                    ready.set()
                    await new_portal.sleep_until_stopped()

            threading.Thread(
                target=anyio.run, args=(serve,), name="qvq-gradio-loop", daemon=True
            ).start()
            ready.wait()
            _portal = holder[0]
        return _portal


async def _next(agen: AsyncGenerator[T, None]) -> tuple[bool, T | None]:
    try:
        return True, await agen.__anext__()
    except StopAsyncIteration:
        return False, None


def _iterate(agen: AsyncGenerator[T, None]) -> Iterator[T]:
    """Drive an async generator from this thread; closing the iterator closes it upstream."""
    loop = portal()
    try:
        while True:
            future = loop.start_task_soon(_next, agen)
            try:
                more, item = future.result()
            except BaseException:
                # Ctrl-C (or anything else) while waiting: cancel the pending step, whose
                # generator then cancels its job, and wait until that is done.
                future.cancel()
                concurrent.futures.wait([future])
                raise
            if not more:
                return
            yield item  # type: ignore[misc]
    finally:
        loop.call(agen.aclose)


class SyncSession:
    """A :class:`~qvq_gradio.Session` with blocking methods; same arguments, same defaults.

    Use it as a context manager or call :meth:`close`. :meth:`wrap` gives blocking access to
    any :class:`~qvq_gradio.protocol.SessionLike`, a :class:`~qvq_gradio.Pool` included.
    """

    session: SessionLike

    def __init__(
        self,
        space: str | None = None,
        *,
        token: str | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 30.0,
        idle_timeout: float | None = 120.0,
        total_timeout: float | None = None,
        max_workers: int = 256,
        image_options: ImageOptions | None = None,
        history: HistoryOption = None,
        cache: bool = False,
        space_cache: bool = False,
        shape: str | None = None,
    ) -> None:
        self.session = Session(
            space,
            token=token,
            proxy=proxy,
            headers=headers,
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            max_workers=max_workers,
            image_options=image_options,
            history=history,
            cache=cache,
            space_cache=space_cache,
            shape=shape,
        )

    @classmethod
    def wrap(cls, session: SessionLike) -> SyncSession:
        """Blocking access to an existing :class:`Session` (or :class:`~qvq_gradio.Pool`)."""
        wrapper = cls.__new__(cls)
        wrapper.session = session
        return wrapper

    def __repr__(self) -> str:
        return f"<SyncSession of {self.session!r}>"

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def events(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> Iterator[Event]:
        """Blocking :meth:`Session.events`: queue updates, text deltas, then ``Finished``."""
        return _iterate(self.session.events(prompt, image, **options))

    def stream(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> Iterator[str]:
        """Blocking :meth:`Session.stream`: the answer's text deltas."""
        return _iterate(self.session.stream(prompt, image, **options))

    def ask(self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]) -> str:
        """Blocking :meth:`Session.ask`: the whole answer."""
        return "".join(self.stream(prompt, image, **options))


def _shared(
    space: str | Sequence[str] | None,
    token: str | None,
    proxy: str | None,
    headers: Mapping[str, str] | None,
) -> SyncSession:
    return SyncSession.wrap(shared_session(space, token=token, proxy=proxy, headers=headers))


def events(
    prompt: str | Messages,
    image: Any = None,
    *,
    space: str | Sequence[str] | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    **options: Unpack[AskOptions],
) -> Iterator[Event]:
    """Typed events for one question, on the shared session for (space, token, proxy, headers).

    ``space``: a Space URL or ``owner/name`` id, several (a list, or comma-separated: they are
    used as one :class:`~qvq_gradio.Pool`); default ``$QVQ_SPACE``, else the seed's Space.
    """
    return _shared(space, token, proxy, headers).events(prompt, image, **options)


def stream(
    prompt: str | Messages,
    image: Any = None,
    *,
    space: str | Sequence[str] | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    **options: Unpack[AskOptions],
) -> Iterator[str]:
    """Stream the answer's text deltas; ``break`` cancels the job upstream."""
    return _shared(space, token, proxy, headers).stream(prompt, image, **options)


def ask(
    prompt: str | Messages,
    image: Any = None,
    *,
    space: str | Sequence[str] | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    **options: Unpack[AskOptions],
) -> str:
    """Ask one question and return the whole answer.

    ``space`` defaults to ``$QVQ_SPACE``, else the seed's Space; ``token`` to ``$HF_TOKEN``.
    """
    return _shared(space, token, proxy, headers).ask(prompt, image, **options)
