"""Qwen's own stateful Blocks demo (``web_demo_mm.py``, served as the Qwen2-VL / Qwen2.5-VL
Spaces): the conversation lives in a ``gr.State`` the API cannot set, so one question is a
chain on one Gradio session — each image through ``/add_file``, the text through
``/add_text``, then a streaming ``/predict`` whose last bot message is the answer so far.

The chatbot value ``/add_file`` returns holds files, which neither Gradio 5 nor 6 takes back
as it was received: the chatbot sent on is rebuilt from the text alone (the demo reads the
files from its state). Earlier turns are flattened into the text (replaying them would
generate their answers again). Gradio 5 demos use the tuples format, Gradio 6 messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ....errors import MediaError
from ....prompt import flatten
from ....thinking import Said
from .base import Asked, Call, Endpoint, Shape, Step
from .chat import chatbot_value
from .values import last_answer

__all__ = ["BlocksShape"]


def _filled(endpoint: Endpoint, values: Mapping[str, Any]) -> tuple[Any, ...]:
    """``endpoint``'s arguments, each chosen by its component's type (``values``), else its
    default."""
    components = endpoint.parameter_components()
    return tuple(
        values.get(component, parameter.get("parameter_default"))
        for component, parameter in zip(components, endpoint.parameters, strict=True)
    )


class BlocksShape(Shape):
    name = "blocks"

    @staticmethod
    def fits(found: Mapping[str, Endpoint]) -> bool:
        add_text, predict = found.get("/add_text"), found.get("/predict")
        return (
            add_text is not None
            and predict is not None
            and "chatbot" in add_text.inputs
            and "textbox" in add_text.inputs
            and "chatbot" in predict.inputs
            and "chatbot" in predict.outputs
        )

    def __init__(
        self, predict: Endpoint, add_text: Endpoint, add_file: Endpoint | None, chatbot: str
    ) -> None:
        super().__init__(predict)
        self.add_text = add_text
        self.add_file = add_file
        #: the chatbot's format: ``tuples``, ``messages``, or ``blocks`` (Gradio 6's messages,
        #: their content a list)
        self.chatbot = chatbot

    @property
    def several_images(self) -> bool:
        return self.add_file is not None  # one /add_file per image

    def call(self, asked: Asked, files: Sequence[Any]) -> Call:
        if files and self.add_file is None:
            raise MediaError("this Space's demo has no /add_file: it cannot be sent images")
        message = flatten(list(asked.turns) or [("user", asked.text)])
        if asked.note:
            message = f"{asked.note}\n{message}"
        steps = [
            Step(
                self.add_file.api_name,
                _filled(self.add_file, {"chatbot": [], "uploadbutton": file, "file": file,
                                        "image": file}),
            )
            for file in files
            if self.add_file is not None
        ]
        text = _filled(self.add_text, {"chatbot": [], "textbox": message})
        steps.append(Step(self.add_text.api_name, text))
        chatbot = chatbot_value([("user", message)], self.chatbot)
        return Call(self.api_name, _filled(self.endpoint, {"chatbot": chatbot}), tuple(steps))

    def read(self, value: Any, *, final: bool, text_started: bool) -> Said:
        return last_answer(value, final=final, text_started=text_started)

    def describe(self) -> str:
        steps = "/add_file per image, " if self.add_file is not None else ""
        return (
            f"blocks: {steps}{self.add_text.api_name}, then {self.endpoint} on one session "
            f"({self.chatbot}; earlier turns flattened)"
        )
