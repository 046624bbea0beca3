"""Chat values read as thinking and answer: a string, a message, a list of messages, or a
chatbot's value (pairs in Gradio's old tuples format, messages in the new one).

A message whose ``metadata`` has a ``title`` is Gradio's collapsible display: thinking, unless
the title marks a tool call (then it is neither). A message's content is a string, or (Gradio
6) a list of blocks whose text blocks count; files and components are not text. The answer's
text is then split at ``<think>`` tags too (:func:`~qvq_gradio.thinking.split_thinking`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ....thinking import Said, split_thinking
from .base import Unreadable

__all__ = ["last_answer", "read_value"]

_TOOL_TITLE: Final = re.compile(r"tool|🛠|🔧|used\b", re.IGNORECASE)


def _text_of(content: Any) -> str | None:
    """A message content's text (None: not text, e.g. a file)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        if content.get("type") == "text" and isinstance(content.get("text"), str):
            return str(content["text"])
        return None
    if isinstance(content, Sequence):
        texts = [t for t in (_text_of(block) for block in content) if t]
        return "\n".join(texts) if texts else None
    return None


def _read_messages(messages: Sequence[Any], *, final: bool, text_started: bool) -> Said:
    thinking: list[str] = []
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise Unreadable(f"a chat message was {type(message).__name__}, not a dict")
        if message.get("role", "assistant") != "assistant":
            continue
        text = _text_of(message.get("content"))
        if text is None:
            continue
        title = (message.get("metadata") or {}).get("title")
        if title:
            if not _TOOL_TITLE.search(str(title)):
                thinking.append(text)
            continue
        texts.append(text)
    said = split_thinking("\n\n".join(texts), final=final, text_started=text_started)
    reasoning = "\n\n".join([*thinking, said.reasoning] if said.reasoning else thinking)
    return Said(reasoning, said.text)


def read_value(value: Any, *, final: bool, text_started: bool) -> Said:
    """What a ChatInterface's output says so far."""
    if value is None:
        return Said()
    if isinstance(value, str):
        return split_thinking(value, final=final, text_started=text_started)
    if isinstance(value, Mapping):
        return _read_messages([value], final=final, text_started=text_started)
    if isinstance(value, Sequence):
        return _read_messages(value, final=final, text_started=text_started)
    raise Unreadable(f"the Space sent {type(value).__name__} where a chat message was expected")


def last_answer(chatbot: Any, *, final: bool, text_started: bool) -> Said:
    """The last answer in a chatbot's value: the bot side of the last pair (tuples), or the
    assistant messages after the last user message (messages)."""
    if chatbot is None:
        return Said()
    if not isinstance(chatbot, Sequence) or isinstance(chatbot, str):
        raise Unreadable(f"the Space sent {type(chatbot).__name__} where a chatbot was expected")
    if not chatbot:
        return Said()
    if all(isinstance(item, Mapping) for item in chatbot):
        users = [i for i, m in enumerate(chatbot) if m.get("role") == "user"]
        tail = chatbot[users[-1] + 1 :] if users else chatbot
        return _read_messages(tail, final=final, text_started=text_started)
    pair = chatbot[-1]
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        raise Unreadable("the Space's chatbot holds neither pairs nor messages")
    bot = _text_of(pair[1])
    return split_thinking(bot or "", final=final, text_started=text_started)
