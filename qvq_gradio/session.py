"""The session: the question pipeline over one upstream (a Space).

A question runs through the stages of :mod:`qvq_gradio.pipeline`, all without blocking the
event loop:

1. the image (if any) is normalised in a worker thread; input errors stop here, nothing sent;
2. the answer history is asked first when caching, and records the answer when kept;
3. the upstream answers: for a Space, :class:`~qvq_gradio.upstreams.gradio.GradioUpstream`
   (wake, connect, find its shape, submit, follow, retry once after a redeploy).

When the consumer stops early (``break``, ``aclose()``, task cancellation, a timeout) the
answer is stopped upstream and the temporary image file is removed.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any, Final

import anyio
import anyio.to_thread
from typing_extensions import Unpack

from .endpoints import is_endpoint
from .errors import ProtocolError, ResponseError, SpaceConnectionError
from .events import Event
from .history import History, HistoryOption, default_path, open_history
from .imaging import ImageOptions
from .media import Layout
from .options import SAMPLING, AskOptions, check_timeout
from .pipeline import Extra, Question, cached, layout_for, prepare, recorded
from .prompt import Messages
from .protocol import Asking
from .spaces import SpaceConfig
from .upstreams import Limits, Request, Upstream
from .upstreams.gradio.upstream import GradioUpstream
from .upstreams.openai import OpenAIUpstream

__all__ = ["Pipeline", "Session"]

SAMPLING_NAMES: Final = tuple(name for name, *_ in SAMPLING)


class Pipeline(Asking):
    """The question pipeline (check, prepare images, cache, answer, record) that
    :class:`Session` runs over one upstream and :class:`~qvq_gradio.Pool` over several:
    subclasses say who answers (:meth:`_answer`)."""

    connect_timeout: float
    idle_timeout: float | None
    total_timeout: float | None
    image_options: ImageOptions
    history: History | None
    cache: bool
    shape: str | None = None
    #: The model NAME this answers under (``NAME=SPEC``; :func:`~qvq_gradio.pool.connect_named`
    #: sets it): recorded in the history with each answer.
    model_name: str | None = None
    #: Sampling parameters every question gets unless it gives its own (a models file's
    #: ``temperature``, ``max_tokens``, ``top_p`` for the model).
    sampling_defaults: Mapping[str, Any] = MappingProxyType({})

    def _pipeline(
        self,
        *,
        connect_timeout: float,
        idle_timeout: float | None,
        total_timeout: float | None,
        image_options: ImageOptions | None,
        history: HistoryOption,
        cache: bool,
    ) -> None:
        check_timeout("connect_timeout", connect_timeout, optional=False)
        check_timeout("idle_timeout", idle_timeout, optional=True)
        check_timeout("total_timeout", total_timeout, optional=True)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.total_timeout = total_timeout
        self.image_options = image_options or ImageOptions()
        self.history, self._own_history = open_history(history)
        if cache and self.history is None:
            raise ValueError("cache=True needs history (True, a path or a History)")
        self.cache = cache

    def _close_history(self) -> None:
        if self.history is not None and self._own_history:
            self.history.close()

    # -- what subclasses say ------------------------------------------------------------------

    def _answer(self, request: Request) -> AsyncGenerator[Event, None]:
        raise NotImplementedError

    def _spaces(self) -> list[str]:
        """The Spaces a cached answer may come from (in order)."""
        return [self.space]

    def _proxy(self) -> str | None:
        return None

    def _closed(self) -> bool:
        return False

    def _layout(self) -> Layout:
        """What several images become: one grid, parts, or both (a pool of both kinds)."""
        return "one"

    async def _app_of(self, space: str) -> str | None:
        """Which build of ``space``'s app answers now (None: unknown)."""
        return None

    # -- the pipeline -------------------------------------------------------------------------

    def events_for(self, question: Question) -> AsyncGenerator[Event, None]:
        """:meth:`events` for a question already checked."""
        options = question.options
        return self._run(
            question,
            Limits(
                idle=options.get("idle_timeout", self.idle_timeout),
                total=options.get("total_timeout", self.total_timeout),
                connect=options.get("connect_timeout", self.connect_timeout),
            ),
        )

    async def _run(self, question: Question, limits: Limits) -> AsyncGenerator[Event, None]:
        """The question's stages (see :mod:`qvq_gradio.pipeline`), the upload freed at the end."""
        start = anyio.current_time()
        options = question.options.get("image_options") or self.image_options
        upload = await prepare(
            question.items, options, proxy=self._proxy(), total=limits.total, space=self.space,
            layout=self._layout(),
        )
        text = question.text
        if upload is not None and upload.note:
            text = f"{upload.note}\n{text}"
        given = {name: question.options.get(name) for name in SAMPLING_NAMES}
        sampling = {
            name: value if value is not None else self.sampling_defaults.get(name)
            for name, value in given.items()
            if value is not None or self.sampling_defaults.get(name) is not None
        }
        request = Request(question.text, question.turns, upload, start, limits, sampling)
        extra = Extra(sampling, self.shape, self.model_name)

        def ask() -> AsyncGenerator[Event, None]:
            events = self._answer(request)
            if self.history is None:
                return events
            return recorded(self.history, self.space, text, upload, events, extra)

        try:
            events = ask()
            if self.cache and self.history is not None:
                events = cached(
                    self.history, self._spaces(), text, upload, start, ask, extra, self._app_of
                )
            async with aclosing(events):
                async for event in events:
                    yield event
        except ResponseError as error:
            if self._closed() and not isinstance(error, ProtocolError):
                raise SpaceConnectionError(
                    f"the {type(self).__name__} was closed", text=error.text, space=self.space
                ) from error
            raise
        finally:
            if upload is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(upload.close)


class Session(Pipeline):
    """Questions to one Space (or any upstream), shared by any number of concurrent streams:
    the pipeline (check, prepare images, cache, record) over a
    :class:`~qvq_gradio.upstreams.gradio.GradioUpstream` it builds, or an upstream given.

    Use it as ``async with Session() as s:`` or call :meth:`aclose` (or :meth:`close` from
    synchronous code) when done; it cancels open jobs and stops gradio_client's threads.

    Args:
        space: a Space URL or ``owner/name`` id; default ``$QVQ_SPACE``, else the seed's Space;
            or an :class:`~qvq_gradio.upstreams.Upstream` to ask (then the Space's own
            settings below are its own, not given here).
        token: Hugging Face token (sent as ``X-HF-Authorization``), sent to any Space given;
            default: ``$HF_TOKEN`` or the locally saved token, sent only to Hugging Face's
            hosts (a Space id, ``*.hf.space``, ``huggingface.co``). Logged-in users get more
            ZeroGPU quota.
        proxy: an HTTP(S) proxy URL for every request to the Space.
        headers: extra headers for every request, e.g. ZeroGPU's ``x-ip-token``.
        connect_timeout: seconds to reach the Space and read its API.
        idle_timeout: seconds without new text, once generation started (None: no limit).
        total_timeout: seconds for a whole answer, queue included (None: no limit).
        max_workers: gradio_client worker capacity; each running stream takes one thread (its
            job's, created on demand and ended when idle), so up to ``max_workers`` streams run
            at once; more wait here for a thread before joining the Space's queue.
        image_options: how images are normalised, and what happens to several images
            (:class:`~qvq_gradio.imaging.ImageOptions`); each call may override it.
        history: record every question and answer in the answer history: ``True`` for the
            default database (:func:`~qvq_gradio.history.default_path`), a path, or a
            :class:`~qvq_gradio.history.History`. Off by default in the library.
        cache: answer a request identical to a recorded one (same Space, prompt text,
            uploaded image bytes, sampling parameters and shape asked for) from the history,
            without asking the Space (its config is read, to be sure the same build of its app
            answers now); the answer streams out as one delta and ``Finished.cached`` is True.
            Needs ``history``.
        shape: how the Space is asked (``qvq``, ``chat``, ``blocks``, or ``chat:/endpoint``);
            default: found from the Space's own API (see :meth:`describe_shape`).
        space_cache: keep the Space's config and API description on disk (``spaces/`` beside
            the history database), so that a new process submits its first question without
            reading them first; that question is checked against the live config, read
            alongside it. The CLI turns it on.

    Example::

        async with Session() as session:
            async for delta in session.stream("What is in this picture?", image="cat.jpg"):
                print(delta, end="", flush=True)
    """

    def __init__(
        self,
        space: str | Upstream | None = None,
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
        self._pipeline(
            connect_timeout=connect_timeout,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            image_options=image_options,
            history=history,
            cache=cache,
        )
        self.upstream: Upstream
        if isinstance(space, Upstream):
            self.upstream = space
        elif space is not None and is_endpoint(space):
            self.upstream = OpenAIUpstream(
                space, proxy=proxy, headers=headers, connect_timeout=connect_timeout
            )
        else:
            self.upstream = GradioUpstream(
                space,
                token=token,
                proxy=proxy,
                headers=headers,
                connect_timeout=connect_timeout,
                max_workers=max_workers,
                shape=shape,
                descriptions=default_path().parent / "spaces" if space_cache else None,
            )
        self.shape = getattr(self.upstream, "shape", None)

    def __repr__(self) -> str:
        state = "closed" if self.upstream.closed else "open"
        config = self.config
        token = "***" if config is not None and config.token else None
        return f"<Session {self.space} token={token} {state}>"

    @property
    def space(self) -> str:
        return self.upstream.name

    @property
    def config(self) -> SpaceConfig | None:
        """The Space's connection settings (None for an upstream that is no Space)."""
        config = getattr(self.upstream, "config", None)
        return config if isinstance(config, SpaceConfig) else None

    def _gradio(self) -> GradioUpstream:
        if not isinstance(self.upstream, GradioUpstream):
            raise TypeError(f"{self.upstream!r} is not a Gradio Space")
        return self.upstream

    # -- lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop open answers and every thread this session started, close its connections."""
        with anyio.CancelScope(shield=True):
            await self.upstream.aclose()
            await anyio.to_thread.run_sync(self._close_history)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for synchronous code: open answers are cancelled
        upstream (waiting at most about a second for that), threads stopped, the history it
        opened closed."""
        self.upstream.close()
        self._close_history()

    # -- the Space ------------------------------------------------------------------------

    async def client(self) -> Any:
        """The Space's ``gradio_client.Client`` (created on first use, then reused)."""
        return await self._gradio().client()

    async def ready(self) -> None:
        """Check, without asking anything, that the Space can take a question: raises the
        error a question would meet (unreachable, not a Gradio app, no chat endpoint, paused).

        It reads the Space's state (a Space id) and its config, never generating or spending
        quota; a Space asleep or starting counts as ready (a question wakes it).
        """
        await self.upstream.ready()

    async def describe_shape(self) -> str:
        """How the Space is asked: its shape, endpoint and what reaches which input, in one
        line (``qvq info`` shows it). Connects if needed; raises what a question would meet
        when the Space is no chat. An endpoint says how it is asked, without a request."""
        describe = getattr(self.upstream, "describe", None)
        if not isinstance(self.upstream, GradioUpstream) and callable(describe):
            return str(describe())
        return await self._gradio().describe_shape()

    async def api_info(self) -> dict[str, Any]:
        """The Space's API as gradio_client describes it (named endpoints and parameters)."""
        return await self._gradio().api_info()

    # -- streams ------------------------------------------------------------------------------

    def events(
        self, prompt: str | Messages, image: Any = None, **options: Unpack[AskOptions]
    ) -> AsyncGenerator[Event, None]:
        """Stream events: :class:`ShapeFound`, :class:`QueueUpdate`, :class:`ReasoningDelta`
        and :class:`TextDelta`, then one :class:`Finished`.

        ``prompt`` is a string (one user message) or a list of messages; ``options`` are the
        per-call :class:`~qvq_gradio.options.AskOptions` (``media``, the timeouts,
        ``image_options``, the sampling parameters), each defaulting to the session's. Bad
        input raises here, before anything is sent. Close the generator (or use
        ``contextlib.aclosing``) to cancel.
        """
        return self.events_for(Question.of(prompt, image, options, where="events"))

    def _answer(self, request: Request) -> AsyncGenerator[Event, None]:
        return self.upstream.answer(request)

    async def _app_of(self, space: str) -> str | None:
        return await self.upstream.app()

    def _proxy(self) -> str | None:
        return self.config.proxy if self.config is not None else None

    def _layout(self) -> Layout:
        return layout_for([self.upstream])

    def _closed(self) -> bool:
        return self.upstream.closed
