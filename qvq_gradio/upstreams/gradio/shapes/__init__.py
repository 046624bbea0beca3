"""Space shapes: how a Space is asked and read, found from its own API (config + API info).

    qvq.py     QVQ's /generate [image, text], a generator of the whole text so far
    chat.py    a ChatInterface (Gradio 5 /chat, Gradio 6 named after the function)
    blocks.py  Qwen's stateful Blocks demo: /add_file, /add_text, then a streaming /predict
    values.py  chat values (strings, messages, chatbots) read as thinking and answer
    base.py    the endpoints an app shows, Asked, Call, Shape

:func:`detect` picks one deterministically — QVQ's ``/generate``, else Qwen's demo, else a
ChatInterface (``/chat`` first, then the lowest function index) — or refuses, in one line
naming the endpoints found. ``shape=`` chooses: ``qvq``, ``chat``, ``blocks``, or
``chat:/endpoint`` for another chat endpoint (any endpoint taking a message first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ....errors import OptionError, ProtocolError
from .base import SILENT, Asked, Call, Endpoint, Shape, Step, Unreadable, endpoints
from .blocks import BlocksShape
from .chat import ChatShape
from .qvq import QVQShape

__all__ = [
    "SHAPES",
    "SILENT",
    "Asked",
    "BlocksShape",
    "Call",
    "ChatShape",
    "Endpoint",
    "QVQShape",
    "Shape",
    "Step",
    "Unreadable",
    "check_shape",
    "detect",
    "endpoints",
]

#: The shapes ``shape=`` names.
SHAPES: Final = ("qvq", "chat", "blocks")


def check_shape(shape: str | None) -> str | None:
    """``shape`` checked (:class:`OptionError` naming the choices)."""
    if shape is None:
        return None
    name, _, api_name = shape.partition(":")
    if name not in SHAPES or (api_name and (name != "chat" or not api_name.startswith("/"))):
        raise OptionError(
            f"shape must be one of {', '.join(SHAPES)} (or chat:/endpoint), got {shape!r}"
        )
    return shape


def _chatbot_format(config: Mapping[str, Any]) -> str:
    """How the app's chatbot takes its value: ``tuples`` (Gradio 5's default), ``messages``
    (Gradio 5, when asked) or ``blocks`` (Gradio 6: messages whose content is a list)."""
    if str(config.get("version", "")).split(".")[0] not in ("", "3", "4", "5"):
        return "blocks"
    for component in config.get("components", []):
        if component.get("type") == "chatbot":
            return str((component.get("props") or {}).get("type") or "tuples")
    return "tuples"


def _refusal(found: list[Endpoint], space: str, wanted: str | None) -> ProtocolError:
    generate = next((e for e in found if e.api_name == "/generate"), None)
    if wanted in (None, "qvq") and generate is not None:
        return ProtocolError(
            f"The Space's /generate takes inputs {list(generate.inputs)}, not [image, text]: "
            "it is not (or no longer) the QVQ app, and no other endpoint is a chat",
            space=space,
        )
    listed = "; ".join(str(e) for e in found) or "none"
    what = f"no {wanted} endpoint" if wanted else "no chat endpoint"
    return ProtocolError(
        f"The Space has {what}: its endpoints are {listed}. None is QVQ's /generate "
        "[image, text], a ChatInterface, or Qwen's add_text/predict demo",
        space=space,
    )


def detect(
    config: Mapping[str, Any], info: Mapping[str, Any] | None, space: str, shape: str | None = None
) -> Shape:
    """The shape of the app ``config`` / ``info`` describe (``shape``: the caller's choice)."""
    found = endpoints(config, info)
    by_name = {e.api_name: e for e in found}
    name, _, api_name = (shape or "").partition(":")
    if name in ("", "qvq"):
        generate = by_name.get("/generate")
        if generate is not None and QVQShape.fits(generate):
            return QVQShape(generate)
        if name == "qvq":
            raise _refusal(found, space, "qvq")
    if name in ("", "blocks") and BlocksShape.fits(by_name):
        return BlocksShape(
            by_name["/predict"], by_name["/add_text"], by_name.get("/add_file"),
            _chatbot_format(config),
        )
    if name == "blocks":
        raise _refusal(found, space, "blocks")
    if api_name:
        chosen = by_name.get(api_name)
        if chosen is None or not ChatShape.fits(chosen, strict=False):
            raise _refusal(found, space, f"chat {api_name}")
        return ChatShape(chosen, _chatbot_format(config))
    chats = [e for e in found if ChatShape.fits(e)]
    chats.sort(key=lambda e: (e.api_name != "/chat", found.index(e)))
    if chats:
        return ChatShape(chats[0], _chatbot_format(config))
    raise _refusal(found, space, "chat" if name == "chat" else None)
