"""QVQ's answer split as it streams: the reasoning, then the ``Final Answer`` section. Pure code.

QVQ thinks at length, then writes a ``**Final Answer**`` heading and its answer. Clients that
read only ``content`` (evaluation harnesses, most SDK code) want the answer; chat UIs show the
reasoning folded. :class:`Splitter` takes the Space's text delta by delta and says what each
adds to the reasoning and to the content, holding back only a last line that might become the
heading.

When no heading ever comes (the model card warns that QVQ can reason without end), the content
is, at the end, the last ``\\boxed{...}`` of the text if there is one, else the whole text: a
client reading only ``content`` still gets something useful (:meth:`Splitter.finish`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..answer import FINAL_HEADING, extract_final_answer

__all__ = ["Parts", "Splitter"]

_WORDS = "final answer"
_ENDED = re.compile(r"[^*_ \t:：]")  # a character the heading cannot continue with
_BLANKS = re.compile(r"[ \t]+")


@dataclass(frozen=True, slots=True)
class Parts:
    """What one delta (or the end) adds: reasoning text, content text (either may be empty)."""

    reasoning: str = ""
    content: str = ""


def _may_be_heading(line: str) -> bool:
    """Whether an unfinished last line could still become the heading."""
    core = line.lstrip(" \t#*_")
    if core[:1] not in ("", "f", "F"):
        return False  # most lines: no need to look further
    core = _BLANKS.sub(" ", core).lower()
    return _WORDS.startswith(core) or core.startswith(_WORDS)


class Splitter:
    """Feeds on the Space's deltas; says what each adds to the reasoning and to the content."""

    def __init__(self) -> None:
        self.text = ""
        self.reasoning = ""  #: the reasoning given out so far
        self.content = ""  #: the content given out so far
        self._heading: tuple[int, int] | None = None

    @property
    def found(self) -> bool:
        """Whether the final section's heading has come."""
        return self._heading is not None

    def feed(self, delta: str) -> Parts:
        self.text += delta
        if self._heading is None:
            # The heading starts at or after the newline before the last line held back:
            # everything before that was scanned already (no rescanning a long reasoning).
            for match in FINAL_HEADING.finditer(self.text, max(len(self.reasoning) - 1, 0)):
                if _ENDED.search(self.text, match.end()):  # complete: something else follows
                    self._heading = (match.start(), match.end())
                    break
        if self._heading is not None:
            start, end = self._heading
            return self._give(start, self.text[end:].lstrip())
        last_line = self.text.rfind("\n") + 1
        cut = len(self.text)
        if _may_be_heading(self.text[last_line:]):
            cut = max(last_line - 1, 0)  # the newline before it may belong to the heading
        return self._give(cut, "")

    def finish(self) -> Parts:
        """The end of the answer: what was held back, and the content when no heading came."""
        if self._heading is not None:
            start, end = self._heading
            return self._give(start, self.text[end:].strip())
        boxed = extract_final_answer(self.text)
        return self._give(len(self.text), boxed if boxed is not None else self.text)

    def _give(self, reasoning_end: int, content: str) -> Parts:
        """What is new in the reasoning (``text[:reasoning_end]``; the reasoning given out so
        far is always a prefix of the text) and in ``content``."""
        given = len(self.reasoning)
        new_reasoning = self.text[given:reasoning_end] if reasoning_end > given else ""
        new_content = content[len(self.content) :] if content.startswith(self.content) else ""
        self.reasoning += new_reasoning
        self.content += new_content
        return Parts(new_reasoning, new_content)
