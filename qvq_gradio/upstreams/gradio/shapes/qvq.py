"""QVQ's own Space: ``/generate`` with ``[image or None, text]``, a generator of the whole text
so far. Its text (reasoning included) is all answer: nothing is split off as thinking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ....thinking import Said
from .base import Asked, Call, Endpoint, Shape, Unreadable

__all__ = ["QVQShape"]

_IMAGE_INPUTS: Final = frozenset({"image", "file", "imageeditor"})


class QVQShape(Shape):
    name = "qvq"

    @staticmethod
    def fits(endpoint: Endpoint) -> bool:
        inputs = endpoint.inputs
        return endpoint.api_name == "/generate" and len(inputs) == 2 and (
            inputs[0] in _IMAGE_INPUTS
        )

    def call(self, asked: Asked, files: Sequence[Any]) -> Call:
        text = f"{asked.note}\n{asked.text}" if asked.note else asked.text
        return Call(self.api_name, (files[0] if files else None, text))

    def read(self, value: Any, *, final: bool, text_started: bool) -> Said:
        if value is None:
            return Said()
        if not isinstance(value, str):
            raise Unreadable(f"The Space sent {type(value).__name__} where text was expected")
        return Said(text=value)

    def describe(self) -> str:
        return f"qvq: {self.endpoint} (the conversation flattened into the text)"
