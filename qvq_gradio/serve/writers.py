"""How each API writes an answer: the chunks of a stream, or the whole body. Pure code.

:class:`ChatWriter` writes chat completions (``chat.completion.chunk`` lines, then
``[DONE]``); :class:`ResponsesWriter` writes the Responses API (its event sequence, reasoning as
a reasoning item). Both take the Space's text delta by delta and split it as ``reasoning``
says (see :mod:`.reasoning`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from ..events import Finished
from .errors import APIError
from .reasoning import Splitter
from .shapes import new_id, now, usage

__all__ = ["ChatWriter", "Reasoning", "ResponsesWriter", "Writer", "sse_data"]

Reasoning = Literal["split", "inline"]


def _usage(prompt: str, done: Finished) -> dict[str, int]:
    """The token counts the upstream reported (an endpoint), else the estimate."""
    return dict(done.usage) if done.usage else usage(prompt, done.text)


def sse_data(payload: Any) -> bytes:
    return b"data: " + _encoded(payload) + b"\n\n"


def _encoded(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


_MARK = "\x00delta\x00"  # stands for a chunk's delta while the rest of it is encoded


class Writer:
    """How one API writes an answer: its chunks (streaming) or its whole body.

    QVQ's text (the ``qvq`` shape: reasoning and answer in one text) is split by a
    :class:`~.reasoning.Splitter`; another shape's thinking comes apart (:meth:`thought`) and
    its text is the content. ``inline`` puts the thinking into the content, inside
    ``<think>...</think>``.
    """

    def __init__(self, model: str, reasoning: Reasoning) -> None:
        self.model = model
        self.split = reasoning == "split"
        self.splitter = Splitter()
        self.qvq = True  #: the text is QVQ's (until a shape or thinking says otherwise)
        self._thought = ""  # another shape's thinking given out (split)
        self._said = ""  # another shape's content given out
        self._thinking = False  # inline: a <think> block is open

    def shaped(self, shape: str) -> None:
        """The Space's shape is known (before its first text)."""
        self.qvq = shape == "qvq"

    def parts(self, text: str) -> tuple[str, str]:
        if self.qvq:
            if not self.split:
                self.splitter.text += text
                return "", text
            got = self.splitter.feed(text)
            return got.reasoning, got.content
        return "", self._content(self._close_thinking() + text)

    def thought(self, text: str) -> tuple[str, str]:
        """What a piece of thinking adds: to the reasoning (split) or the content (inline)."""
        self.qvq = False
        if self.split:
            self._thought += text
            return text, ""
        opening = "" if self._thinking else "<think>\n"
        self._thinking = True
        return "", self._content(opening + text)

    def _close_thinking(self) -> str:
        if not self._thinking:
            return ""
        self._thinking = False
        return "\n</think>\n\n"

    def _content(self, text: str) -> str:
        self._said += text
        return text

    def rest(self) -> tuple[str, str]:
        if not self.qvq:
            return "", self._content(self._close_thinking())
        if not self.split:
            return "", ""
        got = self.splitter.finish()
        return got.reasoning, got.content

    def feed(self, text: str) -> None:
        self.parts(text)

    def answer(self) -> tuple[str, str]:
        """(reasoning, content) of the whole answer (after the last delta)."""
        if not self.qvq:
            self.rest()
            return self._thought, self._said
        if not self.split:
            return "", self.splitter.text
        self.splitter.finish()
        return self.splitter.reasoning, self.splitter.content

    def thinking(self, text: str) -> bytes:
        raise NotImplementedError

    def opening(self) -> bytes:
        raise NotImplementedError

    def delta(self, text: str) -> bytes:
        raise NotImplementedError

    def closing(self, done: Finished, prompt: str) -> bytes:
        raise NotImplementedError

    def failed(self, error: APIError) -> bytes:
        raise NotImplementedError

    def whole(self, done: Finished, prompt: str) -> Any:
        raise NotImplementedError


class ChatWriter(Writer):
    def __init__(self, model: str, reasoning: Reasoning, include_usage: bool) -> None:
        super().__init__(model, reasoning)
        self.id = new_id("chatcmpl")
        self.created = now()
        self.include_usage = include_usage
        self._around: list[bytes] | None = None  # a text chunk before and after its delta

    def _chunk(self, delta: Any, finish: str | None = None) -> bytes:
        return sse_data({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        })

    def _parts_delta(self, reasoning: str, content: str) -> bytes:
        # Every chunk of the answer's text is the same but for its delta: the rest is encoded
        # once (the same bytes as _chunk gives), the delta for each chunk.
        if self._around is None:
            self._around = self._chunk(_MARK).split(_encoded(_MARK), 1)
        before, after = self._around
        out = b""
        if reasoning:
            text = _encoded(reasoning)
            out += before + b'{"reasoning_content": ' + text + b', "reasoning": ' + text + b"}"
            out += after
        if content:
            out += before + b'{"content": ' + _encoded(content) + b"}" + after
        return out

    def opening(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, text: str) -> bytes:
        return self._parts_delta(*self.parts(text))

    def thinking(self, text: str) -> bytes:
        return self._parts_delta(*self.thought(text))

    def closing(self, done: Finished, prompt: str) -> bytes:
        out = self._parts_delta(*self.rest()) + self._chunk({}, "stop")
        if self.include_usage:
            out += sse_data({"id": self.id, "object": "chat.completion.chunk",
                          "created": self.created, "model": self.model, "choices": [],
                          "usage": _usage(prompt, done)})
        return out + b"data: [DONE]\n\n"

    def failed(self, error: APIError) -> bytes:
        return sse_data(error.body()) + b"data: [DONE]\n\n"

    def whole(self, done: Finished, prompt: str) -> Any:
        reasoning, content = self.answer()
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.split:
            message["reasoning_content"] = message["reasoning"] = reasoning
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": _usage(prompt, done),
        }


class ResponsesWriter(Writer):
    """The Responses API: reasoning and message output items, and its event sequence."""

    def __init__(self, model: str, reasoning: Reasoning) -> None:
        super().__init__(model, reasoning)
        self.id = new_id("resp")
        self.created = now()
        self.sequence = 0
        self.reasoning_id = new_id("rs")
        self.message_id = new_id("msg")
        self.open: str | None = None  # "reasoning" or "message": the item being streamed
        self.reasoning_text = ""
        self.content_text = ""

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        return f"event: {kind}\n".encode() + sse_data(payload)

    def _response(self, status: str, output: list[Any], use: Any = None) -> dict[str, Any]:
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": output, "parallel_tool_calls": False,
            "tool_choice": "none", "tools": [], "usage": use, "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {},
            "temperature": None, "top_p": None,
        }

    def _reasoning_item(self, text: str) -> dict[str, Any]:
        return {"type": "reasoning", "id": self.reasoning_id, "summary": [],
                "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}

    def _message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status else []
        return {"type": "message", "id": self.message_id, "role": "assistant",
                "status": status, "content": content}

    def _outputs(self) -> list[Any]:
        items = [self._reasoning_item(self.reasoning_text)] if self.reasoning_text else []
        return [*items, self._message_item(self.content_text)]

    def opening(self) -> bytes:
        return (self._event("response.created", response=self._response("in_progress", []))
                + self._event("response.in_progress",
                              response=self._response("in_progress", [])))

    def _close_reasoning(self) -> bytes:
        out = self._event("response.reasoning_text.done", item_id=self.reasoning_id,
                          output_index=0, content_index=0, text=self.reasoning_text)
        return out + self._event("response.output_item.done", output_index=0,
                                 item=self._reasoning_item(self.reasoning_text))

    def _stream_parts(self, reasoning: str, content: str) -> bytes:
        out = b""
        if reasoning:
            if self.open is None:
                self.open = "reasoning"
                out += self._event("response.output_item.added", output_index=0,
                                   item={**self._reasoning_item(""), "status": "in_progress"})
            self.reasoning_text += reasoning
            out += self._event("response.reasoning_text.delta", item_id=self.reasoning_id,
                               output_index=0, content_index=0, delta=reasoning)
        if content:
            out += self._open_message()
            self.content_text += content
            out += self._event("response.output_text.delta", item_id=self.message_id,
                               output_index=self._message_index(), content_index=0,
                               delta=content, logprobs=[])
        return out

    def _message_index(self) -> int:
        return 1 if self.reasoning_text else 0

    def _open_message(self) -> bytes:
        if self.open == "message":
            return b""
        out = self._close_reasoning() if self.open == "reasoning" else b""
        self.open = "message"
        index = self._message_index()
        out += self._event("response.output_item.added", output_index=index,
                           item=self._message_item("", "in_progress"))
        return out + self._event("response.content_part.added", item_id=self.message_id,
                                 output_index=index, content_index=0,
                                 part={"type": "output_text", "text": "", "annotations": []})

    def delta(self, text: str) -> bytes:
        return self._stream_parts(*self.parts(text))

    def thinking(self, text: str) -> bytes:
        return self._stream_parts(*self.thought(text))

    def closing(self, done: Finished, prompt: str) -> bytes:
        out = self._stream_parts(*self.rest()) + self._open_message()
        index = self._message_index()
        part = {"type": "output_text", "text": self.content_text, "annotations": []}
        out += self._event("response.output_text.done", item_id=self.message_id,
                           output_index=index, content_index=0, text=self.content_text,
                           logprobs=[])
        out += self._event("response.content_part.done", item_id=self.message_id,
                           output_index=index, content_index=0, part=part)
        out += self._event("response.output_item.done", output_index=index,
                           item=self._message_item(self.content_text))
        return out + self._event("response.completed", response={
            **self._response("completed", self._outputs(), self._usage(prompt, done)),
            "output_text": self.content_text,
        })

    @staticmethod
    def _usage(prompt: str, done: Finished) -> dict[str, int]:
        counts = _usage(prompt, done)
        return {"input_tokens": counts["prompt_tokens"],
                "output_tokens": counts["completion_tokens"],
                "total_tokens": counts["total_tokens"]}

    def failed(self, error: APIError) -> bytes:
        body = error.body()["error"]
        return (self._event("error", message=body["message"], code=body["code"], param=None)
                + self._event("response.failed", response={
                    **self._response("failed", self._outputs()), "error": {
                        "code": body["code"], "message": body["message"]}}))

    def whole(self, done: Finished, prompt: str) -> Any:
        self.reasoning_text, self.content_text = self.answer()
        return {**self._response("completed", self._outputs(), self._usage(prompt, done)),
                "output_text": self.content_text}
