"""Live display in Jupyter: :func:`show` (blocking) and :func:`ashow` (``await`` it).

In a notebook they show the input image as a thumbnail, a Markdown area that fills in as the
answer streams (redrawn at most every ``throttle`` seconds, not once per token), the queue
position while waiting, and finally the reasoning folded away under a "Reasoning" summary with
the final answer highlighted. Outside a Jupyter kernel they print the answer as it arrives.
Both return the whole answer text.

    from qvq_gradio.notebook import show
    text = show("What is unusual about this picture?", image="photo.jpg")
"""

from __future__ import annotations

import html
import io
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import anyio.to_thread
from typing_extensions import Unpack

from .answer import extract_final_answer, split_reasoning
from .events import Event, Finished, QueueUpdate, ReasoningDelta, TextDelta
from .imaging import open_image
from .media import classify, load
from .options import AskOptions
from .protocol import SessionLike
from .provider import shared_session
from .sync import SyncSession

__all__ = ["ashow", "in_notebook", "show"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich display works)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _ipy() -> Any:
    """IPython's display module (imported only inside a kernel, where it exists)."""
    import IPython.display

    return IPython.display


def _thumbnail_png(item: Any, size: int = 256) -> bytes | None:
    try:
        classified = classify(item)
        if classified.kind == "url":
            return None
        image = open_image(load(classified))
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()
    except Exception:  # a thumbnail is a nicety; the real error comes from the stream
        return None


class _Renderer:
    """Turns stream events into display updates (rich in Jupyter, plain text elsewhere)."""

    def __init__(self, thumbnail: bytes | None, throttle: float, rich: bool) -> None:
        self.text = ""
        self.reasoning = ""  # a Space's thinking shown apart (not QVQ's: its text is one)
        self._throttle = throttle
        self._rich = rich
        self._last = 0.0
        self._handle: Any = None
        self._waiting_shown = False
        if rich:
            ipy = _ipy()
            if thumbnail is not None:
                ipy.display(ipy.Image(data=thumbnail, format="png"))
            self._handle = ipy.display(ipy.Markdown("*Asking QVQ…*"), display_id=True)

    def _update(self, obj: Any) -> None:
        self._handle.update(obj)
        self._last = time.monotonic()

    def on_event(self, event: Event) -> None:
        if isinstance(event, QueueUpdate):
            position = "" if event.position is None else f" position {event.position + 1}"
            size = f" of {event.queue_size}" if event.queue_size else ""
            eta = "" if event.eta is None else f", about {event.eta:.0f} s"
            line = f"Waiting in the Space's queue:{position}{size}{eta}"
            if self._rich:
                self._update(_ipy().Markdown(f"⏳ *{line}*"))
            elif not self._waiting_shown:
                print(f"[{line}]", file=sys.stderr, flush=True)
                self._waiting_shown = True
        elif isinstance(event, ReasoningDelta):
            self.reasoning += event.text
            if not self._rich:
                print(event.text, end="", flush=True)
            elif time.monotonic() - self._last >= self._throttle:
                self._update(_ipy().Markdown(f"*Thinking…* {len(self.reasoning.split())} words"))
        elif isinstance(event, TextDelta):
            if not self._rich and self.reasoning and not self.text:
                print("\n", flush=True)  # the thinking, a blank line, the answer
            self.text += event.text
            if not self._rich:
                print(event.text, end="", flush=True)
            elif time.monotonic() - self._last >= self._throttle:
                self._update(_ipy().Markdown(self.text))
        elif isinstance(event, Finished):
            self.finish(event)

    def finish(self, finished: Finished) -> None:
        self.text = finished.text
        if self._rich:
            self._update(
                _ipy().HTML(render_answer(finished.text, finished.elapsed, finished.reasoning))
            )
        else:
            print(flush=True)

    def fail(self, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        if self._rich:
            partial = f"<pre>{html.escape(self.text)}</pre>" if self.text else ""
            alert = f"<p style='color:#b00'><b>{html.escape(message)}</b></p>"
            self._update(_ipy().HTML(partial + alert))
        else:
            print(f"\n[{message}]", file=sys.stderr, flush=True)


def render_answer(text: str, elapsed: float | None = None, thinking: str = "") -> str:
    """HTML: the final answer highlighted, the reasoning folded under a summary (``thinking``:
    a Space's thinking shown apart; then ``text`` is the answer)."""
    took = "" if elapsed is None else f", {elapsed:.1f} s"
    if thinking:
        words = len(thinking.split())
        shown = f"<div style='white-space:pre-wrap'>{html.escape(thinking)}</div>"
        return (
            f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>"
            f"<details><summary>Thinking ({words} words{took})</summary>{shown}</details>"
        )
    answer = extract_final_answer(text)
    reasoning, _ = split_reasoning(text)
    body = f"<div style='white-space:pre-wrap'>{html.escape(reasoning)}</div>"
    if answer is None:
        return f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>"
    words = len(reasoning.split())
    return (
        "<div style='font-size:1.1em;margin:4px 0'><b>Final answer:</b> "
        f"<mark style='padding:2px 6px'>{html.escape(answer)}</mark></div>"
        f"<details><summary>Reasoning ({words} words{took})</summary>{body}</details>"
    )


def _session(
    session: SessionLike | None,
    space: str | Sequence[str] | None,
    token: str | None,
    proxy: str | None,
    headers: Mapping[str, str] | None,
) -> SessionLike:
    return session or shared_session(space, token=token, proxy=proxy, headers=headers)


def show(
    prompt: Any,
    image: Any = None,
    *,
    session: SessionLike | None = None,
    space: str | Sequence[str] | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    throttle: float = 0.1,
    **options: Unpack[AskOptions],
) -> str:
    """Ask and display the answer live; returns the whole text. Works in any cell.

    ``session`` may be a :class:`~qvq_gradio.Session` or :class:`~qvq_gradio.Pool`; ``options``
    are the per-call :class:`~qvq_gradio.options.AskOptions`.
    """
    chosen = _session(session, space, token, proxy, headers)
    events = SyncSession.wrap(chosen).events(prompt, image, **options)  # checks the input
    rich = in_notebook()
    thumbnail = _thumbnail_png(image) if rich and image is not None else None
    renderer = _Renderer(thumbnail, throttle, rich)
    try:
        for event in events:
            renderer.on_event(event)
    except BaseException as error:
        renderer.fail(error)
        raise
    return renderer.text


async def ashow(
    prompt: Any,
    image: Any = None,
    *,
    session: SessionLike | None = None,
    space: str | Sequence[str] | None = None,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    throttle: float = 0.1,
    **options: Unpack[AskOptions],
) -> str:
    """The ``await``-able twin of :func:`show`."""
    chosen = _session(session, space, token, proxy, headers)
    events = chosen.events(prompt, image, **options)  # checks the input
    rich = in_notebook()
    thumbnail = None
    if rich and image is not None:
        thumbnail = await anyio.to_thread.run_sync(_thumbnail_png, image)
    renderer = _Renderer(thumbnail, throttle, rich)
    try:
        async with aclosing(events):
            async for event in events:
                renderer.on_event(event)
    except BaseException as error:
        renderer.fail(error)
        raise
    return renderer.text
