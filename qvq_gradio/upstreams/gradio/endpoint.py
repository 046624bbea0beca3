"""An endpoint's identity in a Gradio config: what a redeploy changes.

A job is submitted to its endpoint's *function index*, which a redeployed Space may give to
another function: :func:`endpoint_signature` is what identifies the endpoint a shape asks
(:mod:`.shapes` says which), and a job checks it against the config read again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["endpoint_signature"]


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
