"""gpt4free users get their provider back: ``Qwen_QVQ_72B`` on g4f's own base classes.

Needs the ``g4f`` extra (``pip install 'qvq-gradio[g4f]'``). The class is a real g4f provider
(``g4f.providers.base_provider.AsyncGeneratorProvider`` and ``ProviderModelMixin``) whose
``create_async_generator`` delegates to qvq-gradio's core, so g4f's clients stream QVQ answers
through our wrapper, images included::

    from g4f.client import AsyncClient
    from qvq_gradio.gpt4free import Qwen_QVQ_72B

    client = AsyncClient(provider=Qwen_QVQ_72B)
    stream = client.chat.completions.create(
        model="qvq-72b", messages=[{"role": "user", "content": "What is this?"}],
        image=open("photo.jpg", "rb"), stream=True,
    )
    async for chunk in stream:
        print(chunk.choices[0].delta.content or "", end="")

The Space is ``$QVQ_SPACE`` (else the real one); g4f's ``api_key`` is the Hugging Face token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, ClassVar

try:
    from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin
    from g4f.providers.response import Reasoning
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without g4f
    raise ImportError(
        "qvq_gradio.gpt4free needs the 'g4f' extra: pip install 'qvq-gradio[g4f]'"
    ) from exc

from . import provider as _core
from .events import ReasoningDelta, TextDelta

__all__ = ["Qwen_QVQ_72B"]

log = logging.getLogger("qvq_gradio")

# What our core understands beyond the seed's parameters; g4f's own options are not ours.
_PASSED = (
    "space",
    "headers",
    "connect_timeout",
    "idle_timeout",
    "total_timeout",
    "timeout",
    "image_options",
    "session",
)


class Qwen_QVQ_72B(AsyncGeneratorProvider, ProviderModelMixin):  # type: ignore[misc]
    """Qwen QVQ-72B on a Hugging Face Space, through qvq-gradio."""

    label = _core.Qwen_QVQ_72B.label
    url = _core.Qwen_QVQ_72B.url
    api_endpoint = _core.Qwen_QVQ_72B.api_endpoint
    working = True
    default_model = _core.Qwen_QVQ_72B.default_model
    default_vision_model = default_model
    model_aliases: ClassVar[dict[str, str]] = dict(_core.Qwen_QVQ_72B.model_aliases)
    vision_models: ClassVar[list[str]] = [*model_aliases, default_model]
    models: ClassVar[list[str]] = vision_models

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: list[dict[str, Any]],
        media: list[Any] | None = None,
        api_key: str | None = None,
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str | Reasoning, None]:
        ignored = sorted(set(kwargs) - set(_PASSED))
        if ignored:
            log.debug("Qwen_QVQ_72B (g4f) ignores: %s", ", ".join(ignored))
        options = {name: kwargs[name] for name in _PASSED if name in kwargs}
        events = _core.Qwen_QVQ_72B.create_async_events(
            model or cls.default_model,
            messages,
            media=media,
            api_key=api_key,
            proxy=proxy,
            **options,
        )
        async with aclosing(events):  # a consumer that stops early cancels the job now
            async for event in events:
                if isinstance(event, TextDelta):
                    yield event.text
                elif isinstance(event, ReasoningDelta):
                    yield Reasoning(event.text)  # gpt4free's own thinking chunk
