"""The Space's endpoint, as a Gradio config describes it.

QVQ's Space has one endpoint, ``/generate``: inputs ``[image or None, text]``, a generator of
the text so far. A job is submitted to its *function index*, which a redeployed Space may give
to another function: :func:`endpoint_signature` is what identifies it, and
:func:`check_endpoint` refuses a Space whose ``/generate`` is not the QVQ one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ...errors import ProtocolError

__all__ = ["API_NAME", "check_endpoint", "endpoint_signature"]

#: The Space's endpoint: inputs ``[image or None, text]``, a generator of the text so far.
API_NAME: Final = "/generate"
_IMAGE_INPUTS = frozenset({"image", "file", "imageeditor"})


def endpoint_signature(config: Mapping[str, Any], api_name: str) -> tuple[Any, ...] | None:
    """What identifies ``api_name`` in a Gradio config: its function index and input types.

    ``None`` when the app has no such endpoint. Two configs with the same signature run the
    same function for a job submitted to that index.
    """
    name = api_name.lstrip("/")
    components = {c.get("id"): c.get("type") for c in config.get("components", [])}
    for index, dependency in enumerate(config.get("dependencies", [])):
        if dependency.get("api_name") == name:
            inputs = tuple(components.get(i) for i in dependency.get("inputs", []))
            return (dependency.get("id", index), inputs)
    return None


def check_endpoint(config: Mapping[str, Any], space: str) -> tuple[Any, ...]:
    """``/generate``'s signature in ``config``; :class:`ProtocolError` if it is not the QVQ one."""
    signature = endpoint_signature(config, API_NAME)
    if signature is None:
        raise ProtocolError(f"The Space has no {API_NAME} endpoint", space=space)
    inputs = signature[1]
    if len(inputs) != 2 or inputs[0] not in _IMAGE_INPUTS:
        raise ProtocolError(
            f"The Space's {API_NAME} takes inputs {list(inputs)}, not [image, text]: "
            "it is not (or no longer) the QVQ app",
            space=space,
        )
    return signature
