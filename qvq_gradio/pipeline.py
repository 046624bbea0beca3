"""A question's way through a session, as small stages around its event stream.

    Question.of      check everything the caller gave (raising before anything is sent)
    prepare          read and normalise the images into one upload (a worker thread)
    cached           answer from the history when an identical request was recorded
    (session)        wake the Space, submit, follow, retry once after a redeploy
    recorded         add the question and its answer (or error) to the history

The cache and the history are wrappers around the stream, as ``llm`` keeps logging apart from
running the model: a stream that neither caches nor records never touches SQLite.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread

from .errors import MessagesError, ResponseError, TotalTimeoutError
from .events import Event, Finished, ReasoningDelta, ShapeFound, SpaceChanged, TextDelta
from .history import History, cache_key
from .imaging import ImageOptions
from .media import Layout, MediaItem, Upload, classify, prepare_upload
from .options import AskOptions, ask_options
from .prompt import Messages, build_prompt

__all__ = ["NO_SAMPLING", "Extra", "Question", "cached", "prepare", "recorded"]

log = logging.getLogger("qvq_gradio")


@dataclass(frozen=True)
class Question:
    """One question, checked: the prompt flattened (as QVQ's Space takes it), its images (not
    yet read), its options, and the ``(role, text)`` turns it was flattened from (a Space
    shape that takes a system prompt or a history reads them)."""

    text: str
    items: list[MediaItem]
    options: AskOptions
    turns: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls, prompt: str | Messages, image: Any, options: Mapping[str, Any], *, where: str
    ) -> Question:
        """Check everything the caller gave (raising before anything is sent)."""
        checked = ask_options(options, where=where)
        if not isinstance(prompt, (str, list, tuple)):
            raise MessagesError(
                f"{where}(): the prompt must be a string (one user message) or a list of "
                f"{{'role': ..., 'content': ...}} messages, got {type(prompt).__name__}"
            )
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        built = build_prompt(messages)
        media = checked.get("media") or []
        items = [
            classify(item) for item in (*([] if image is None else [image]), *media, *built.images)
        ]
        return cls(built.text, items, checked, built.turns)


def layout_for(upstreams: Iterable[object]) -> Layout:
    """What several images become for these upstreams: parts if every one takes several
    (``several_images`` True), one grid if none does (False, or no such attribute), both for
    a mix or when an upstream does not know yet (None)."""
    several = {getattr(upstream, "several_images", False) for upstream in upstreams}
    return "parts" if several == {True} else "one" if several <= {False} else "both"


async def prepare(
    items: list[MediaItem],
    options: ImageOptions,
    *,
    proxy: str | None,
    total: float | None,
    space: str,
    layout: Layout = "one",
) -> Upload | None:
    """The one upload for ``items`` (None without images), within ``total`` seconds."""
    with anyio.move_on_after(total) as scope:
        return await prepare_upload(items, options, proxy=proxy, layout=layout)
    assert scope.cancelled_caught
    raise TotalTimeoutError(
        f"Preparing the image took longer than total_timeout={total:g} s", space=space
    )


#: The shapes that take no sampling parameter: what was recorded for them stands whatever
#: sampling a request asks for (it never reached the Space).
NO_SAMPLING: Final = frozenset[str | None]({"qvq", "blocks"})


@dataclass(frozen=True)
class Extra:
    """What besides the text and the images may change what the Space is sent: the sampling
    parameters and the shape asked for (see :func:`~qvq_gradio.history.cache_key`)."""

    sampling: Mapping[str, Any]
    shape: str | None = None
    #: the model NAME asked under: recorded, not part of the key (the spec answering is)
    name: str | None = None

    def key(self, sampling: Mapping[str, Any] | None = None) -> str:
        """The cache key's part for ``sampling`` (default: the request's): "" when nothing,
        so that a request as made before these options existed keeps its key."""
        given = self.sampling if sampling is None else sampling
        if not given and self.shape is None:
            return ""
        return json.dumps({"sampling": dict(given), "shape": self.shape}, sort_keys=True)

    def applied(self, finished: Finished | None) -> str:
        """The key part an answer is recorded under: the sampling that reached the Space."""
        if finished is None:
            return self.key()
        return self.key({k: v for k, v in finished.applied.items() if k in self.sampling}
                        if self.sampling else {})


async def cached(
    history: History,
    spaces: Sequence[str],
    text: str,
    upload: Upload | None,
    start: float,
    ask: Callable[[], AsyncGenerator[Event, None]],
    extra: Extra | None = None,
    app_of: Callable[[str], Awaitable[str | None]] | None = None,
) -> AsyncGenerator[Event, None]:
    """The recorded answer to an identical request, asked of any of ``spaces`` (the first
    recorded, in their order), as one delta (its thinking as another); else ``ask()``'s
    stream (``start``: when the question was asked, anyio time; ``extra``: the sampling and
    shape asked for; an answer recorded without sampling from a shape that takes none stands
    for any). An answer recorded from another build of the Space's app than the one
    ``app_of(space)`` finds answering now is not served (the Space was reshaped or rebuilt);
    when that cannot be known (the Space is unreachable), it is."""
    identity = upload.identity if upload is not None else None
    extra = extra or Extra({})
    # The same request as asked, whatever the Space; else one recorded with no sampling
    # reaching a Space that takes none (rows from before shapes existed are QVQ's).
    lookups = ((extra.key(), True, None), (extra.key({}), False, NO_SAMPLING | {None}))
    hit = None
    for space, (part, asked, shapes) in itertools.product(spaces, lookups):
        key = cache_key(space, text, identity, part)
        hit = await anyio.to_thread.run_sync(functools.partial(history.cached, key, asked=asked))
        if hit is not None and shapes is not None and hit.shape not in shapes:
            hit = None  # recorded without sampling from a Space that takes it
        if hit is not None and hit.app is not None and app_of is not None:
            answering = await app_of(space)
            if answering is not None and answering != hit.app:
                log.info("%s runs another app than the recorded answer's: asking it", space)
                hit = None
        if hit is not None:
            break
    if hit is not None:
        if hit.shape:
            yield ShapeFound(hit.space, hit.shape, hit.app)
        if hit.reasoning:
            yield ReasoningDelta(hit.reasoning)
        if hit.text:
            yield TextDelta(hit.text)
        now = anyio.current_time() - start
        finished = Finished(
            hit.text, hit.space, now, now, None, cached=True, reasoning=hit.reasoning,
            shape=hit.shape, applied=hit.applied or {}, model=hit.model_id,
        )
        await _record(
            history, hit.space, text, upload, finished, None, request=extra.applied(finished),
            app=hit.app, asked=extra.key(), name=extra.name,
        )
        yield finished
        return
    events = ask()
    async with aclosing(events):
        async for event in events:
            yield event


async def recorded(
    history: History,
    space: str,
    text: str,
    upload: Upload | None,
    events: AsyncGenerator[Event, None],
    extra: Extra | None = None,
) -> AsyncGenerator[Event, None]:
    """``events``, with the answer (or the error that ended them) added to the history under
    the Space that answered (``space`` until a :class:`SpaceChanged` says which); an answer
    stopped before it ended (the consumer left: Ctrl-C, a closed pipe, a client gone) is
    recorded as stopped, with the text that had come."""
    extra = extra or Extra({})
    came: list[str] = []
    ended = False
    app: str | None = None
    try:
        async with aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    came.append(event.text)
                elif isinstance(event, SpaceChanged):
                    space = event.space
                elif isinstance(event, ShapeFound):
                    app = event.app
                elif isinstance(event, Finished):
                    ended = True
                    await _record(
                        history, event.space, text, upload, event, None,
                        request=extra.applied(event), app=app, asked=extra.key(),
                        name=extra.name,
                    )
                yield event
    except ResponseError as error:
        ended = True
        await _record(
            history, error.space or space, text, upload, None, error, request=extra.key(),
            name=extra.name,
        )
        raise
    finally:
        if not ended:
            await _record(
                history, space, text, upload, None, None, stopped="".join(came),
                request=extra.key(), name=extra.name,
            )


async def _record(
    history: History,
    space: str,
    prompt: str,
    upload: Upload | None,
    finished: Finished | None,
    error: ResponseError | None,
    *,
    stopped: str | None = None,
    request: str = "",
    app: str | None = None,
    asked: str | None = None,
    name: str | None = None,
) -> None:
    """One row: an answer, an error, or (``stopped``: the text that had come) a stop."""
    image: bytes | None = None
    if history.keep_images and upload is not None and upload.sha256 and upload.target:
        image = await anyio.to_thread.run_sync(Path(upload.target).read_bytes)
    record = functools.partial(
        history.record,
        space=space,
        prompt=prompt,
        text=finished.text if finished is not None else (
            error.text if error else (stopped or "")
        ),
        image_sha256=upload.sha256 if upload is not None else None,
        image_size=upload.size if upload is not None else None,
        image_name=upload.name if upload is not None else None,
        image=image,
        elapsed=finished.elapsed if finished is not None else None,
        time_to_first_token=finished.time_to_first_token if finished is not None else None,
        queue_wait=finished.queue_wait if finished is not None else None,
        error=error,
        from_cache=finished is not None and finished.cached,
        image_key=upload.identity if upload is not None else None,
        images=[dataclasses.asdict(o) for o in upload.originals] if upload is not None else (),
        stopped=stopped is not None,
        reasoning=finished.reasoning if finished is not None else "",
        shape=finished.shape if finished is not None else None,
        applied=finished.applied if finished is not None else None,
        request=request,
        app=app,
        asked=asked,
        name=name,
        model_id=finished.model if finished is not None else None,
        usage=finished.usage if finished is not None and not finished.cached else None,
    )
    with anyio.CancelScope(shield=True):
        try:
            await anyio.to_thread.run_sync(record)
        except Exception as exc:  # the answer matters more than its record
            log.warning("could not record the answer in %s: %r", history.path, exc)
