r"""QVQ reasons at length, then states a final answer; these helpers find it. Pure code.

QVQ usually ends with a ``**Final Answer**`` section, often holding ``\[ \boxed{...} \]``:

    >>> extract_final_answer("Adding them... so 42.\n\n**Final Answer**\n\n\\[ \\boxed{42} \\]")
    '42'
    >>> extract_final_answer("Just thinking out loud.") is None
    True
"""

from __future__ import annotations

import re

__all__ = ["FINAL_HEADING", "extract_final_answer", "split_reasoning"]

#: The ``**Final Answer**`` heading (any level, bold or not, a colon or not) at a line start.
FINAL_HEADING = re.compile(
    r"(?:^|\n)[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*final[ \t]+answer[ \t]*(?:\*\*|__)?"
    r"[ \t]*[:：]?[ \t]*(?:\*\*|__)?",
    re.IGNORECASE,
)
_BOXED = "\\boxed{"
_WRAPPERS = re.compile(r"^(?:\\\[|\\\(|\$\$|\$)\s*|\s*(?:\\\]|\\\)|\$\$|\$)$")


def _boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}``, braces balanced, in order."""
    found: list[str] = []
    start = text.find(_BOXED)
    while start != -1:
        depth, i = 1, start + len(_BOXED)
        while i < len(text) and depth:
            if text[i] == "\\" and i + 1 < len(text):
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append(text[start + len(_BOXED) : i - 1].strip())
        start = text.find(_BOXED, i)
    return found


def split_reasoning(text: str) -> tuple[str, str | None]:
    """``(reasoning, final section)``; the section is ``None`` when there is no heading."""
    matches = list(FINAL_HEADING.finditer(text))
    if not matches:
        return text, None
    last = matches[-1]
    return text[: last.start()].rstrip(), text[last.end() :].strip()


def extract_final_answer(text: str) -> str | None:
    r"""QVQ's final answer in ``text``, or ``None`` when it states none.

    The last ``Final Answer`` section wins; inside it, a ``\boxed{...}`` is the answer, else the
    section's text without math delimiters. With no such section, the last ``\boxed{...}``.
    """
    _, section = split_reasoning(text)
    if section is not None:
        boxed = _boxed_contents(section)
        if boxed:
            return boxed[0]
        cleaned = _WRAPPERS.sub("", section.strip()).strip().strip("*_").strip()
        if cleaned:
            return cleaned
    boxed = _boxed_contents(text)
    return boxed[-1] if boxed else None
