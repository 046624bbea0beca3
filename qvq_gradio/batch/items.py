"""Batch items: what one question of a batch is, and the id that makes a re-run match it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..media import classify

__all__ = ["BatchInputError", "BatchItem", "item_id"]

_ITEM_KEYS = ("id", "prompt", "messages", "image", "system", "expected", "meta")


class BatchInputError(InputError):
    """A batch input file or row that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class BatchItem:
    """One question of a batch: ``prompt`` (or ``messages``), an optional image, a gold answer.

    ``image`` is anything ``image=`` accepts; ``meta`` is carried to the output as is.
    """

    id: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    image: Any = None
    system: str | None = None
    expected: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    where: str | None = None  #: "file:line" it came from, for error messages
    #: Why this row cannot be asked (bad JSON, no prompt...): it becomes a failed record.
    problem: str | None = None

    @classmethod
    def invalid(cls, problem: str, raw: Any, where: str | None = None) -> BatchItem:
        """A row that cannot be asked; its id is the row's own, else derived from its text."""
        given = raw.get("id") if isinstance(raw, Mapping) else None
        if given is None:
            text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)
            given = "invalid-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        return cls(id=str(given), where=where, problem=problem)

    @classmethod
    def checked(
        cls, value: Any, where: str | None = None, *, prompt: str | None = None
    ) -> BatchItem:
        """As :meth:`of`, but a row that cannot be used becomes an :meth:`invalid` item (a
        failed record naming ``where``) instead of stopping the run."""
        try:
            return cls.of(value, where, prompt=prompt)
        except BatchInputError as exc:
            return cls.invalid(str(exc), value, where)

    @classmethod
    def of(
        cls,
        value: BatchItem | Mapping[str, Any],
        where: str | None = None,
        *,
        prompt: str | None = None,
    ) -> BatchItem:
        """A :class:`BatchItem` from itself or a dict (keys beyond the fields go to ``meta``);
        ``prompt`` is used where the item has neither a prompt nor messages."""
        if isinstance(value, BatchItem):
            if prompt and not (value.prompt or value.messages):
                return dataclasses.replace(value, prompt=prompt)
            return value
        if not isinstance(value, Mapping):
            raise BatchInputError(
                f"{where or 'item'}: a batch item is a dict or BatchItem, "
                f"not {type(value).__name__}"
            )
        known = {k: (None if v == "" else v) for k, v in value.items() if k in _ITEM_KEYS}
        extra = {k: v for k, v in value.items() if k not in _ITEM_KEYS}
        meta = dict(known.pop("meta", None) or {})
        meta.update(extra)
        if known.get("id") is not None:
            known["id"] = str(known["id"])
        for text in ("prompt", "system", "expected"):
            if known.get(text) is not None and not isinstance(known[text], str):
                known[text] = str(known[text])
        if known.get("prompt") is None and not known.get("messages"):
            known["prompt"] = prompt
        item = cls(**known, meta=meta, where=where)
        if item.prompt is None and not item.messages:
            raise BatchInputError(f"{where or 'item'}: an item needs a prompt or messages")
        return item

    def question(self) -> str | list[dict[str, Any]]:
        """What is asked: the prompt (with the system message first, if any) or the messages."""
        if self.messages:
            return list(self.messages)
        assert self.prompt is not None
        if self.system:
            return [
                {"role": "system", "content": self.system},
                {"role": "user", "content": self.prompt},
            ]
        return self.prompt


def _image_digest(image: Any) -> str:
    """A stable hash of an image input's content (file bytes, pixels, or the URL)."""
    digest = hashlib.sha256()
    if image is None:
        return ""
    if isinstance(image, tuple):
        image = image[0]
    if isinstance(image, (bytes, bytearray, memoryview)):
        digest.update(bytes(image))
    elif isinstance(image, str) and classify(image).kind in ("url", "data"):
        digest.update(image.encode())
    elif isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:  # a missing file fails when asked; its name still identifies it
            digest.update(os.fsencode(image))
    elif hasattr(image, "tobytes"):  # PIL images, NumPy arrays
        digest.update(repr(getattr(image, "size", getattr(image, "shape", ""))).encode())
        digest.update(image.tobytes())
    else:
        digest.update(repr(image).encode())
    return digest.hexdigest()


def item_id(item: BatchItem) -> str:
    """The item's ``id``, else one derived from its content (prompt/messages, image bytes)."""
    if item.id is not None:
        return item.id
    question = json.dumps(item.question(), sort_keys=True, ensure_ascii=False, default=str)
    parts = (question, _image_digest(item.image))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
