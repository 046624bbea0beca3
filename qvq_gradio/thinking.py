"""Thinking apart from the answer, in a text that grows: ``<think>...</think>``. Pure code.

A reasoning model's Space often streams its thinking inside ``<think>...</think>`` ahead of the
answer. :func:`split_thinking` reads the cumulative text a Space has sent so far and says what
of it is thinking and what is answer, so that each grows from one read to the next:

- ``<think>`` at the start (after whitespace) opens the thinking; ``</think>`` closes it; what
  follows is the answer (its leading blank lines dropped);
- a tag split across two reads is held back until it is whole (``<th`` at the start, ``</thi``
  at the end of the thinking), unless the text is ``final``;
- a ``</think>`` with no opening tag (Qwen3's templates put the opening one in the prompt)
  closes thinking only when no answer text has been given out yet (``text_started``): once
  text has streamed as answer it stays answer;
- a tag anywhere else (inside an answer's code, say) is text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["CLOSE", "OPEN", "Said", "split_thinking"]

OPEN: Final = "<think>"
CLOSE: Final = "</think>"


@dataclass(frozen=True, slots=True)
class Said:
    """What a Space has said so far: its thinking and its answer's text (both cumulative)."""

    reasoning: str = ""
    text: str = ""


def _partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could begin ``tag`` (0: none)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def split_thinking(output: str, *, final: bool = False, text_started: bool = False) -> Said:
    """Split the cumulative ``output`` into thinking and answer (see the module docstring).

    >>> split_thinking("<think>hmm</think>\\n\\n42")
    Said(reasoning='hmm', text='42')
    >>> split_thinking("hmm</think>42")
    Said(reasoning='hmm', text='42')
    >>> split_thinking("use `</think>` to close", text_started=True)
    Said(reasoning='', text='use `</think>` to close')
    """
    stripped = output.lstrip()
    if stripped.startswith(OPEN):
        body = stripped[len(OPEN) :]
        end = body.find(CLOSE)
        if end < 0:
            hold = 0 if final else _partial_suffix(body, CLOSE)
            # Newlines at either end are dropped (and held back): the closing tag drops them.
            return Said(reasoning=body[: len(body) - hold].strip("\n"))
        return Said(body[:end].strip("\n"), body[end + len(CLOSE) :].lstrip())
    if not final and stripped and OPEN.startswith(stripped):
        return Said()  # perhaps the start of <think>: wait for the next read
    if not text_started:
        end = output.find(CLOSE)
        if end >= 0:
            return Said(output[:end].strip("\n"), output[end + len(CLOSE) :].lstrip())
        if not final and _partial_suffix(output, CLOSE):
            return Said()  # a lone </think> may be arriving: nothing given out yet
    return Said(text=output)
