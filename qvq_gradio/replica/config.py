"""How the replica answers: :class:`ReplicaConfig`, and per-request ``[[replica ...]]``
directives."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "FAIL_MODES",
    "LAYOUTS",
    "SHAPES",
    "THINK_MODES",
    "TOGETHER_WAIT",
    "FailMode",
    "Layout",
    "ReplicaConfig",
    "Shape",
]

FailMode = Literal[
    "before", "mid", "quota", "hang", "echo-token", "no-quota", "bad-request", "server"
]
#: The last three are an endpoint's (``shape="openai"``): a 429 saying the account has no
#: quota, a 400, a 500; a Space's replica fails them as ``before``.
FAIL_MODES: tuple[str, ...] = (
    "before", "mid", "quota", "hang", "echo-token", "no-quota", "bad-request", "server"
)
Layout = Literal["qvq", "reordered", "text-only", "history"]
LAYOUTS: tuple[str, ...] = ("qvq", "reordered", "text-only", "history")
Shape = Literal["qvq", "chat", "blocks", "openai"]
SHAPES: tuple[str, ...] = ("qvq", "chat", "blocks", "openai")
#: How a chat replica shows its thinking: not apart, in ``<think>`` tags, or (Gradio 6) in a
#: message titled "Thinking" (Gradio 5 falls back to tags); an endpoint (``shape="openai"``)
#: also in a delta field of either name in use, ``reasoning_content`` or ``reasoning``.
THINK_MODES: tuple[str, ...] = ("none", "tags", "title", "reasoning_content", "reasoning")

TOGETHER_WAIT = 30.0  #: seconds a ``together`` group waits for its members at most

_DIRECTIVE = re.compile(r"\[\[replica([^\]]*)\]\]")


@dataclass(frozen=True)
class ReplicaConfig:
    """How the replica answers (each field can be overridden per request by a directive)."""

    tokens: int = 40  #: words of reasoning after the receipt
    delay: float = 0.01  #: seconds between two words
    concurrency: int = 16  #: requests generated at once; more wait in the queue
    fail: FailMode | None = None
    fail_after: int = 5  #: tokens before ``mid`` / ``hang`` happen
    final: bool = True  #: end with a ``**Final Answer**`` section
    max_queue: int | None = None  #: queue size beyond which joins get HTTP 503
    layout: Layout = "qvq"  #: the app's functions (see the module docstring)
    #: Which kind of Space it stands in for: QVQ's, a ChatInterface, Qwen's Blocks demo.
    shape: Shape = "qvq"
    think: str = "none"  #: a chat's thinking (see :data:`THINK_MODES`)
    #: A ZeroGPU-like quota: after this many requests, requests fail with a quota error for
    #: ``quota_retry`` seconds (the message says so), then the budget starts again.
    quota_budget: int | None = None
    quota_retry: float = 588.0  #: seconds a quota error asks to wait (``fail=quota`` too)
    token: str | None = field(default=None, repr=False)  #: required HF token, if any
    #: ``together=NAME:N``: wait (up to :data:`TOGETHER_WAIT` s) before the first token until
    #: N requests of group NAME are generating, so a test can tell concurrency from chance.
    together: tuple[str, int] | None = None
    #: An endpoint's (``shape="openai"``) model id in its answers (None: the one asked for)
    served_model: str | None = None

    def with_directives(self, prompt: str) -> ReplicaConfig:
        """This config with the ``[[replica ...]]`` directives of ``prompt`` applied."""
        changes: dict[str, Any] = {}
        for match in _DIRECTIVE.finditer(prompt):
            for item in match.group(1).split():
                key, _, value = item.partition("=")
                if key == "tokens":
                    changes["tokens"] = int(value)
                elif key == "delay":
                    changes["delay"] = float(value)
                elif key == "fail":
                    if value not in FAIL_MODES:
                        raise ValueError(f"fail must be one of {FAIL_MODES}, got {value!r}")
                    changes["fail"] = value
                elif key == "after":
                    changes["fail_after"] = int(value)
                elif key == "together":
                    name, _, count = value.rpartition(":")
                    if not name or not count.isdigit():
                        raise ValueError(f"together must be NAME:N, got {value!r}")
                    changes["together"] = (name, int(count))
                elif key == "think":
                    if value not in THINK_MODES:
                        raise ValueError(f"think must be one of {THINK_MODES}, got {value!r}")
                    changes["think"] = value
                elif key == "final":  # final=no: no Final Answer section (endless reasoning)
                    changes["final"] = value not in ("no", "0", "false")
                else:
                    raise ValueError(f"unknown replica directive {key!r}")
        return replace(self, **changes)
