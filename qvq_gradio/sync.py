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

from .events import Event
from .imaging import ImageOptions
from .prompt import Messages
from .provider import shared_session
from .space import _UNSET, Session, _Unset

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

    Use it as a context manager or call :meth:`close`.
    """

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
        )

    @classmethod
    def wrap(cls, session: Session) -> SyncSession:
        """Blocking access to an existing :class:`Session`."""
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
        self,
        prompt: str | Messages,
        image: Any = None,
        *,
        media: Sequence[Any] | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        total_timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        image_options: ImageOptions | None = None,
    ) -> Iterator[Event]:
        """Blocking :meth:`Session.events`: queue updates, text deltas, then ``Finished``."""
        agen = self.session.events(
            prompt,
            image,
            media=media,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            connect_timeout=connect_timeout,
            image_options=image_options,
        )
        return _iterate(agen)

    def stream(
        self,
        prompt: str | Messages,
        image: Any = None,
        *,
        media: Sequence[Any] | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        total_timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        image_options: ImageOptions | None = None,
    ) -> Iterator[str]:
        """Blocking :meth:`Session.stream`: the answer's text deltas."""
        agen = self.session.stream(
            prompt,
            image,
            media=media,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            connect_timeout=connect_timeout,
            image_options=image_options,
        )
        return _iterate(agen)

    def ask(
        self,
        prompt: str | Messages,
        image: Any = None,
        *,
        media: Sequence[Any] | None = None,
        idle_timeout: float | _Unset | None = _UNSET,
        total_timeout: float | _Unset | None = _UNSET,
        connect_timeout: float | _Unset = _UNSET,
        image_options: ImageOptions | None = None,
    ) -> str:
        """Blocking :meth:`Session.ask`: the whole answer."""
        return "".join(
            self.stream(
                prompt,
                image,
                media=media,
                idle_timeout=idle_timeout,
                total_timeout=total_timeout,
                connect_timeout=connect_timeout,
                image_options=image_options,
            )
        )


def _shared(
    space: str | None, token: str | None, proxy: str | None, headers: Mapping[str, str] | None
) -> SyncSession:
    return SyncSession.wrap(shared_session(space, token=token, proxy=proxy, headers=headers))


def events(
    prompt: str | Messages,
    image: Any = None,
    *,
    media: Sequence[Any] | None = None,
    space: str | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    idle_timeout: float | _Unset | None = _UNSET,
    total_timeout: float | _Unset | None = _UNSET,
    connect_timeout: float | _Unset = _UNSET,
    image_options: ImageOptions | None = None,
) -> Iterator[Event]:
    """Typed events for one question, on the shared session for (space, token, proxy, headers)."""
    return _shared(space, token, proxy, headers).events(
        prompt,
        image,
        media=media,
        idle_timeout=idle_timeout,
        total_timeout=total_timeout,
        connect_timeout=connect_timeout,
        image_options=image_options,
    )


def stream(
    prompt: str | Messages,
    image: Any = None,
    *,
    media: Sequence[Any] | None = None,
    space: str | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    idle_timeout: float | _Unset | None = _UNSET,
    total_timeout: float | _Unset | None = _UNSET,
    connect_timeout: float | _Unset = _UNSET,
    image_options: ImageOptions | None = None,
) -> Iterator[str]:
    """Stream the answer's text deltas; ``break`` cancels the job upstream."""
    return _shared(space, token, proxy, headers).stream(
        prompt,
        image,
        media=media,
        idle_timeout=idle_timeout,
        total_timeout=total_timeout,
        connect_timeout=connect_timeout,
        image_options=image_options,
    )


def ask(
    prompt: str | Messages,
    image: Any = None,
    *,
    media: Sequence[Any] | None = None,
    space: str | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    idle_timeout: float | _Unset | None = _UNSET,
    total_timeout: float | _Unset | None = _UNSET,
    connect_timeout: float | _Unset = _UNSET,
    image_options: ImageOptions | None = None,
) -> str:
    """Ask one question and return the whole answer.

    ``space`` defaults to ``$QVQ_SPACE``, else the seed's Space; ``token`` to ``$HF_TOKEN``.
    """
    return _shared(space, token, proxy, headers).ask(
        prompt,
        image,
        media=media,
        idle_timeout=idle_timeout,
        total_timeout=total_timeout,
        connect_timeout=connect_timeout,
        image_options=image_options,
    )
