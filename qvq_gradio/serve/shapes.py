"""The OpenAI wire shapes: requests checked into what a session asks, answers built. Pure code.

Request bodies are checked for what we use, and **unknown fields are accepted and ignored**
(clients send ``stream_options``, ``max_completion_tokens``, ``seed``, ``user``, vendor extras;
a server that forbids extras breaks them). Sampling fields are accepted when well-typed, but the
Space sets its own sampling and limits: only ``model``, ``messages``/``input``,
``instructions``, ``stream`` and ``stream_options.include_usage`` change anything.

Token counts are estimates: the Space reports none, so ``usage`` counts characters / 4
(rounded up) of the prompt as sent and of the answer text; images count nothing.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..provider import Qwen_QVQ_72B
from .errors import APIError

__all__ = ["MODELS", "ChatRequest", "ResponsesRequest", "model_card", "usage"]

#: The model names served: the seed's model and its alias.
MODELS: tuple[str, ...] = (Qwen_QVQ_72B.default_model or "", *Qwen_QVQ_72B.model_aliases)
_CREATED = 1734912000  # 2024-12-23: the day the QVQ-72B preview was published
_NUMBERS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens",
            "presence_penalty", "frequency_penalty", "seed")


def model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "Qwen"}


def check_model(body: Mapping[str, Any], served: Sequence[str] = MODELS) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: one of " + ", ".join(served), param="model")
    if model not in served:
        raise APIError(404, f"The model {model!r} does not exist; this server serves "
                       + ", ".join(served), code="model_not_found", param="model")
    return model


def _check_common(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise APIError(400, "The request body must be a JSON object")
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise APIError(400, f"'{name}' must be a number, got {type(value).__name__}",
                           param=name)
    n = body.get("n")
    if n is not None and n != 1:
        raise APIError(400, "Only n=1 is supported: the Space gives one answer per question",
                       param="n")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", param="stream")
    return body


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling parameters a request gives, as our options: sent to the Space's input of
    that meaning when it has one (an endpoint takes them all), not sent otherwise."""
    found: dict[str, Any] = {}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            found[name] = body[name]
    most = next((body[k] for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")
                 if body.get(k) is not None), None)
    if most is not None:
        found["max_tokens"] = int(most) if float(most).is_integer() else most
    return found


def _roles(messages: Any) -> Any:
    """OpenAI's ``developer`` role is a system message to the Space."""
    if not isinstance(messages, list):
        return messages
    return [
        {**m, "role": "system"} if isinstance(m, Mapping) and m.get("role") == "developer" else m
        for m in messages
    ]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    sampling: dict[str, Any]

    @classmethod
    def parse(cls, raw: Any, served: Sequence[str] = MODELS) -> ChatRequest:
        body = _check_common(raw)
        model = check_model(body, served)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        options = body.get("stream_options") or {}
        include = bool(isinstance(options, Mapping) and options.get("include_usage"))
        return cls(model, _roles(messages), bool(body.get("stream")), include, _sampling(body))


@dataclass(frozen=True)
class ResponsesRequest:
    model: str
    messages: list[Any]
    stream: bool
    sampling: dict[str, Any]

    @classmethod
    def parse(cls, raw: Any, served: Sequence[str] = MODELS) -> ResponsesRequest:
        body = _check_common(raw)
        model = check_model(body, served)
        given = body.get("input")
        if isinstance(given, str):
            messages: list[Any] = [{"role": "user", "content": given}]
        elif isinstance(given, list) and given:
            messages = [
                {"role": item.get("role"), "content": item.get("content")}
                if isinstance(item, Mapping) else item
                for item in given
            ]
        else:
            raise APIError(400, "'input' must be a string or a non-empty list of messages",
                           param="input")
        instructions = body.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise APIError(400, "'instructions' must be a string", param="instructions")
            messages = [{"role": "system", "content": instructions}, *messages]
        return cls(model, _roles(messages), bool(body.get("stream")), _sampling(body))


def tokens(text: str) -> int:
    """The estimated token count of ``text``: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


def usage(prompt: str, answer: str) -> dict[str, int]:
    p, c = tokens(prompt), tokens(answer)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
