"""``Qwen_QVQ_72B``: the seed's gpt4free-style provider, over :class:`qvq_gradio.Session`.

Example (the seed's, import path adapted)::

    import asyncio
    from qvq_gradio import Qwen_QVQ_72B, Messages

    provider = Qwen_QVQ_72B()
    messages = Messages([{"role": "user", "content": "Привет! Как дела?"}])

    async def main():
        async for response in provider.create_async_generator(
            model="qwen-qvq-72b-preview", messages=messages
        ):
            print(f"Model: {response}")

    asyncio.run(main())
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, ClassVar

from .errors import UnknownModelError
from .events import Event
from .media import MediaListType
from .prompt import Messages, build_prompt
from .protocol import SessionLike
from .spaces import SPACE_ENV, SpaceConfig, parse_spaces

__all__ = ["AsyncGeneratorProvider", "ProviderModelMixin", "Qwen_QVQ_72B", "shared_session"]

log = logging.getLogger("qvq_gradio")

# Keyword arguments gpt4free passes to every provider; accepted and ignored.
_G4F_KWARGS = frozenset(
    {
        "stream",
        "temperature",
        "max_tokens",
        "top_p",
        "stop",
        "web_search",
        "conversation",
        "return_conversation",
        "images",
        "image",
        "image_name",
        "media_name",
        "download_media",
        "language",
        "provider",
        "api_base",
        "extra_body",
        "response_format",
        "seed",
    }
)
_SESSION_KWARGS = ("connect_timeout", "idle_timeout", "total_timeout", "image_options")

#: How many shared sessions are kept: a server forwarding each user's key makes one per key,
#: and each holds a client, its threads and pools. The least recently used is closed.
MAX_SHARED_SESSIONS = 32

_shared: OrderedDict[SpaceConfig, SessionLike] = OrderedDict()
_shared_lock = threading.Lock()


def shared_session(
    space: str | Sequence[str] | None = None,
    *,
    token: str | None = None,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> SessionLike:
    """The process-wide session for one (Space, token, proxy, headers).

    ``space`` may name several Spaces (a list, or comma-separated, as ``$QVQ_SPACE`` may): they
    are then asked as one :class:`~qvq_gradio.Pool`. The provider uses these, so repeated calls
    share one gradio_client ``Client`` per Space. They are closed at interpreter exit, or by
    :func:`close_shared_sessions`; past :data:`MAX_SHARED_SESSIONS` (one per token, for a
    server forwarding each user's key), the least recently used one is closed.
    """
    from .pool import connect  # the pool module builds on this one's siblings

    spaces = parse_spaces(space)
    config = SpaceConfig(
        space=",".join(spaces),
        token=token,
        proxy=proxy,
        headers=tuple(sorted((headers or {}).items())),
    )
    evicted: list[SessionLike] = []
    with _shared_lock:
        session = _shared.get(config)
        if session is None:
            session = connect(spaces, token=token, proxy=proxy, headers=headers)
            _shared[config] = session
            while len(_shared) > MAX_SHARED_SESSIONS:
                evicted.append(_shared.popitem(last=False)[1])
        else:
            _shared.move_to_end(config)
    for old in evicted:
        # Closing waits up to a second for cancels: never on the caller's thread (the loop's).
        threading.Thread(target=old.close, name="qvq-evict", daemon=True).start()
    return session


def close_shared_sessions() -> None:
    """Close every session made by :func:`shared_session` (blocking)."""
    with _shared_lock:
        sessions = list(_shared.values())
        _shared.clear()
    for session in sessions:
        session.close()


atexit.register(close_shared_sessions)


class ProviderModelMixin:
    """gpt4free's model bookkeeping: a default model, a model list and aliases."""

    default_model: ClassVar[str | None] = None
    models: ClassVar[list[str]] = []
    model_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def get_models(cls) -> list[str]:
        """Every name :meth:`get_model` accepts."""
        names = [*([cls.default_model] if cls.default_model else []), *cls.models]
        names += list(cls.model_aliases)
        return list(dict.fromkeys(names))

    @classmethod
    def get_model(cls, model: str | None = None) -> str:
        """Resolve ``model`` (an alias, a listed model, or empty for the default)."""
        if not model:
            if cls.default_model is None:
                raise UnknownModelError("", cls.get_models())
            return cls.default_model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        if model in cls.get_models():
            return model
        raise UnknownModelError(model, cls.get_models())


class AsyncGeneratorProvider:
    """gpt4free's provider protocol: an async generator of answer chunks."""

    label: ClassVar[str] = ""
    url: ClassVar[str] = ""
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = True
    needs_auth: ClassVar[bool] = False

    @classmethod
    def create_async_generator(
        cls, model: str, messages: Messages, **kwargs: Any
    ) -> AsyncGenerator[str, None]:
        raise NotImplementedError


class Qwen_QVQ_72B(AsyncGeneratorProvider, ProviderModelMixin):
    """Qwen QVQ-72B, the vision-reasoning model on a Hugging Face Space."""

    label = "Qwen QVQ-72B"
    url = "https://qwen-qvq-72b-preview.hf.space"
    api_endpoint: ClassVar[str] = "/gradio_api/call/generate"
    working = True
    default_model = "qwen-qvq-72b-preview"
    default_vision_model: ClassVar[str] = default_model
    model_aliases: ClassVar[dict[str, str]] = {"qvq-72b": default_vision_model}
    vision_models: ClassVar[list[str]] = list(model_aliases.keys())
    models: ClassVar[list[str]] = vision_models

    @classmethod
    def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        media: MediaListType | None = None,
        api_key: str | None = None,
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str, None]:
        """Stream the answer to ``messages`` (with the images of ``media``) as text deltas.

        The Space takes one image per question: several become one labelled grid by default
        (see :class:`~qvq_gradio.ImageOptions`).

        Keyword arguments beyond the seed's: ``space`` (URL or Space id; default
        ``$QVQ_SPACE``, else :attr:`url`), ``headers`` (e.g. ``{"x-ip-token": ...}``),
        ``connect_timeout``, ``idle_timeout``, ``total_timeout`` (``timeout`` is an alias),
        ``image_options`` (an :class:`~qvq_gradio.ImageOptions`), and ``session`` (a
        :class:`~qvq_gradio.Session` or :class:`~qvq_gradio.Pool` to use instead of the shared
        one). ``space`` (or ``$QVQ_SPACE``) may name several Spaces, comma-separated: they are
        asked as one pool.

        Unknown models and malformed messages raise here, before anything is sent; failures
        from the Space raise :class:`ResponseError` subclasses while iterating.
        """
        session, options = cls._asking(model, messages, api_key, proxy, kwargs)
        return session.stream(messages, media=list(media or []), **options)

    @classmethod
    def create_async_events(
        cls,
        model: str,
        messages: Messages,
        media: MediaListType | None = None,
        api_key: str | None = None,
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[Event, None]:
        """:meth:`create_async_generator`'s answer as typed events, the thinking of a Space
        that shows it apart as :class:`~qvq_gradio.ReasoningDelta` (the gpt4free adapter
        makes gpt4free's own reasoning chunks of them)."""
        session, options = cls._asking(model, messages, api_key, proxy, kwargs)
        return session.events(messages, media=list(media or []), **options)

    @classmethod
    def _asking(
        cls,
        model: str,
        messages: Messages,
        api_key: str | None,
        proxy: str | None,
        kwargs: dict[str, Any],
    ) -> tuple[SessionLike, dict[str, Any]]:
        """The session to ask and the per-call options, everything checked."""
        cls.get_model(model)
        build_prompt(messages)  # a list of messages, strictly: a bare string is a mistake here
        session: SessionLike | None = kwargs.pop("session", None)
        space = kwargs.pop("space", None) or os.environ.get(SPACE_ENV) or cls.url
        headers = kwargs.pop("headers", None)
        if "timeout" in kwargs and "total_timeout" not in kwargs:
            kwargs["total_timeout"] = kwargs.pop("timeout")
        options = {name: kwargs.pop(name) for name in _SESSION_KWARGS if name in kwargs}
        unknown = sorted(set(kwargs) - _G4F_KWARGS)
        if unknown:
            log.warning("Qwen_QVQ_72B ignores unknown keyword arguments: %s", ", ".join(unknown))
        if session is None:
            session = shared_session(space, token=api_key, proxy=proxy, headers=headers)
        return session, options
