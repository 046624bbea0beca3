"""Messages in, the question's structure out: its system prompt, its turns, its images, and
the one prompt string a single text box takes. Pure code.

QVQ's Space takes a single text box, so a conversation is flattened: a single user message is
sent as-is; anything longer becomes ``Role: content`` lines ending with ``Assistant:``
(:func:`flatten`). A Space shape that takes a system prompt or a history gets them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .errors import MessagesError

__all__ = [
    "ROLES",
    "Message",
    "Messages",
    "Prompt",
    "build_prompt",
    "flatten",
    "validate_messages",
]

Message: TypeAlias = dict[str, Any]
#: A conversation: ``[{"role": "user", "content": "..."}, ...]``; ``Messages([...])`` works.
Messages: TypeAlias = list[dict[str, Any]]

ROLES = ("system", "user", "assistant")
_TEXT_PART_TYPES = ("text", "input_text")
_IMAGE_PART_TYPES = ("image_url", "image", "input_image")


@dataclass(frozen=True, slots=True)
class Prompt:
    """The text to send (flattened) and the images found inside the messages, in order; the
    structure it was flattened from: ``turns`` are the ``(role, text)`` of every message, the
    system ones included."""

    text: str
    images: list[Any] = field(default_factory=list)
    turns: tuple[tuple[str, str], ...] = ()

    @property
    def system(self) -> str | None:
        """The system messages' text (joined by a blank line), None without one."""
        texts = [text for role, text in self.turns if role == "system"]
        return "\n\n".join(texts) if texts else None


def _image_of(part: Mapping[str, Any], where: str) -> Any:
    value: Any = None
    kind = part.get("type")
    if kind == "image_url":
        value = part.get("image_url")
        if isinstance(value, Mapping):
            value = value.get("url")
    else:
        for key in ("image", "image_url", "url", "path"):
            if part.get(key) is not None:
                value = part[key]
                break
    if value is None:
        raise MessagesError(f"{where}: image part of type {kind!r} carries no image")
    return value


def _content_of(content: Any, where: str, images: list[Any]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts: list[str] = []
        for j, part in enumerate(content):
            at = f"{where} part {j}"
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, Mapping):
                raise MessagesError(f"{at}: expected a dict or str, got {type(part).__name__}")
            kind = part.get("type")
            if kind in _TEXT_PART_TYPES:
                text = part.get("text")
                if not isinstance(text, str):
                    raise MessagesError(f"{at}: a text part needs a string 'text'")
                texts.append(text)
            elif kind in _IMAGE_PART_TYPES:
                images.append(_image_of(part, at))
            else:
                raise MessagesError(
                    f"{at}: unknown part type {kind!r}; use 'text' or 'image_url'/'image'"
                )
        return "\n".join(texts)
    raise MessagesError(
        f"{where}: content must be a string or a list of parts, got {type(content).__name__}"
    )


def validate_messages(messages: object) -> list[tuple[str, str]]:
    """Check ``messages`` and return ``(role, text)`` pairs; images are ignored here."""
    return _parse(messages, [])


def _parse(messages: object, images: list[Any]) -> list[tuple[str, str]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise MessagesError(
            "messages must be a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(messages).__name__}"
        )
    if not messages:
        raise MessagesError("messages is empty; give at least one user message")
    pairs: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise MessagesError(f"{where}: expected a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise MessagesError(f"{where}: role must be one of {', '.join(ROLES)}; got {role!r}")
        if "content" not in message:
            raise MessagesError(f"{where}: has no 'content'")
        pairs.append((role, _content_of(message["content"], where, images)))
    if not any(role == "user" for role, _ in pairs):
        raise MessagesError("messages has no user message")
    return pairs


def build_prompt(messages: object) -> Prompt:
    """Validate ``messages`` and flatten them into the one prompt the Space takes.

    >>> build_prompt([{"role": "user", "content": "Hi"}]).text
    'Hi'
    >>> print(build_prompt([
    ...     {"role": "system", "content": "Be brief."},
    ...     {"role": "user", "content": "Hi"},
    ... ]).text)
    System: Be brief.
    User: Hi
    Assistant:
    """
    images: list[Any] = []
    pairs = _parse(messages, images)
    text = flatten(pairs)
    if not text.strip():
        raise MessagesError("the prompt is empty; the user message has no text")
    return Prompt(text=text, images=images, turns=tuple(pairs))


def flatten(turns: Sequence[tuple[str, str]]) -> str:
    """One text for ``turns``: a lone message's own text, else ``Role: text`` lines ending
    with ``Assistant:``."""
    if len(turns) == 1:
        return turns[0][1]
    lines = [f"{role.capitalize()}: {content}" for role, content in turns]
    return "\n".join([*lines, "Assistant:"])
