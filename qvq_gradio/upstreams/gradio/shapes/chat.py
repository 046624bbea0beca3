"""A ChatInterface: one endpoint taking the message (a textbox, or a multimodal one taking
files), keeping the conversation in a hidden ``state`` (or, on old Gradio, a ``history``
parameter), and the app's additional inputs with their defaults.

Gradio 5 names the endpoint ``/chat``, Gradio 6 after the function. The output is a string, a
message, or a list of messages (thinking in a titled one). Additional inputs are filled from
their defaults, except where the question says otherwise: its system prompt, temperature, max
tokens or top_p go to the input of that meaning (matched by label or parameter name); a
parameter the Space has no input for is not sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from ....errors import MediaError
from ....prompt import flatten
from ....thinking import Said
from .base import Asked, Call, Endpoint, Shape
from .values import read_value

__all__ = ["MEANINGS", "ChatShape", "chatbot_value", "meaning_of"]

_MESSAGE_INPUTS: Final = frozenset({"textbox", "multimodaltextbox"})
_ANSWER_OUTPUTS: Final = frozenset({"json", "chatbot", "textbox", "markdown"})
#: What an additional input means, from its label or parameter name, and the components it
#: may be.
MEANINGS: Final = (
    ("system", re.compile(r"system", re.I), frozenset({"textbox"})),
    ("temperature", re.compile(r"temp", re.I), frozenset({"slider", "number"})),
    (
        "max_tokens",
        re.compile(r"max.*(token|length|len\b)|\btokens\b", re.I),
        frozenset({"slider", "number"}),
    ),
    ("top_p", re.compile(r"top[ _-]?p\b|nucleus", re.I), frozenset({"slider", "number"})),
)


def meaning_of(parameter: Any) -> str | None:
    """``system``, ``temperature``, ``max_tokens``, ``top_p`` or None, for one parameter."""
    component = str(parameter.get("component", "")).lower()
    words = f"{parameter.get('label') or ''} {parameter.get('parameter_name') or ''}"
    for meaning, pattern, components in MEANINGS:
        if component in components and pattern.search(words):
            return meaning
    return None


def chatbot_value(turns: Sequence[tuple[str, str]], chatbot: str) -> list[Any]:
    """``turns`` as a chatbot takes them: ``[user, bot]`` pairs (``tuples``), message dicts
    (``messages``), or message dicts whose content is a list of blocks (``blocks``, Gradio
    6)."""
    if chatbot == "tuples":
        pairs: list[list[str | None]] = []
        for role, text in turns:
            if role == "assistant" and pairs and pairs[-1][1] is None:
                pairs[-1][1] = text
            elif role == "assistant":
                pairs.append([None, text])
            else:
                pairs.append([text, None])
        return pairs
    if chatbot == "blocks":
        return [{"role": role, "content": [{"type": "text", "text": text}]}
                for role, text in turns]
    return [{"role": role, "content": text} for role, text in turns]


def _is_history(parameter: Any) -> bool:
    return str(parameter.get("component", "")).lower() == "chatbot" or (
        parameter.get("parameter_name") == "history"
    )


class ChatShape(Shape):
    name = "chat"

    @staticmethod
    def fits(endpoint: Endpoint, *, strict: bool = True) -> bool:
        """A ChatInterface's endpoint (``strict``: its conversation kept in a state or a
        history parameter); not strict: any endpoint taking a message first."""
        components = endpoint.parameter_components()
        if not components or components[0] not in _MESSAGE_INPUTS:
            return False
        answers = [t for t in endpoint.outputs if t != "state"]
        if len(answers) != 1 or answers[0] not in _ANSWER_OUTPUTS:
            return False
        if not strict:
            return True
        return "state" in endpoint.inputs or any(_is_history(p) for p in endpoint.parameters)

    def __init__(self, endpoint: Endpoint, chatbot: str = "messages") -> None:
        super().__init__(endpoint)
        #: how a history parameter takes its value: ``tuples``, ``messages`` or ``blocks``
        self.chatbot = chatbot
        parameters = endpoint.parameters
        self.multimodal = endpoint.parameter_components()[0] == "multimodaltextbox"
        self.history_at = next(
            (i for i, p in enumerate(parameters) if i and _is_history(p)), None
        )
        self.takes_history = self.history_at is not None
        self.meanings: dict[int, str] = {}
        for i, parameter in enumerate(parameters):
            meaning = meaning_of(parameter) if i and i != self.history_at else None
            if meaning is not None and meaning not in self.meanings.values():
                self.meanings[i] = meaning

    @property
    def several_images(self) -> bool:
        return self.multimodal

    def call(self, asked: Asked, files: Sequence[Any]) -> Call:
        if files and not self.multimodal:
            raise MediaError(
                f"{self.api_name} takes a text message only: this Space cannot be sent images"
            )
        applied: dict[str, Any] = {}
        turns = list(asked.turns) or [("user", asked.text)]
        if asked.system is not None and "system" in self.meanings.values():
            applied["system"] = asked.system
            turns = [turn for turn in turns if turn[0] != "system"]
        history: list[Any] = []
        if self.takes_history and turns[-1][0] == "user":
            history = chatbot_value(turns[:-1], self.chatbot)
            message = turns[-1][1]
        else:
            message = flatten(turns)
        if asked.note:
            message = f"{asked.note}\n{message}"
        args: list[Any] = []
        for i, parameter in enumerate(self.endpoint.parameters):
            meaning = self.meanings.get(i)
            if i == 0:
                args.append({"text": message, "files": list(files)} if self.multimodal else message)
            elif i == self.history_at:
                args.append(history)
            elif meaning == "system" and "system" in applied:
                args.append(applied["system"])
            elif meaning is not None and asked.sampling.get(meaning) is not None:
                applied[meaning] = asked.sampling[meaning]
                args.append(applied[meaning])
            else:
                args.append(parameter.get("parameter_default"))
        return Call(self.api_name, tuple(args), applied=applied)

    def read(self, value: Any, *, final: bool, text_started: bool) -> Said:
        return read_value(value, final=final, text_started=text_started)

    def describe(self) -> str:
        labels = {
            meaning: self.endpoint.parameters[i].get("label")
            or self.endpoint.parameters[i].get("parameter_name")
            for i, meaning in self.meanings.items()
        }
        takes = ", ".join(f"{m} -> {label!r}" for m, label in labels.items()) or "no parameters"
        turns = "history apart" if self.takes_history else "earlier turns flattened"
        files = "images as files" if self.multimodal else "text only"
        return f"chat: {self.endpoint} ({files}; {takes}; {turns})"
