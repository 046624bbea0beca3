"""What the replica answers: a receipt of what it received, then words of fake reasoning."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

__all__ = [
    "OTHER_FUNCTION_TEXT",
    "REASONING_WORDS",
    "answer_head",
    "describe_image",
    "other_function",
    "other_function_text",
    "word",
]

#: The words the replica reasons with, one per token, cycled.
REASONING_WORDS: tuple[str, ...] = tuple(
    "Let me look at this carefully and reason step by step . The question asks what is "
    "shown , so I will check each detail , compare it with what I know , and then decide .".split()
)


def describe_image(path: str | bytes) -> dict[str, Any]:
    """Size, mode, format and sha256 of the RGB pixel bytes of the image file at ``path``
    (or of the encoded image ``path`` holds, given as bytes)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
        fmt = image.format
        mode = image.mode
        rgb = image.convert("RGB")
        return {
            "width": rgb.width,
            "height": rgb.height,
            "mode": mode,
            "format": fmt,
            "sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
            "bytes": len(path) if isinstance(path, bytes) else os.path.getsize(path),
        }


def answer_head(prompt: str, image: dict[str, Any] | None) -> str:
    """The replica's first piece of every answer: what it received."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    lines = [f"Received prompt sha256:{digest} ({len(prompt)} chars): {prompt}"]
    if image is None:
        lines.append("Image: none")
    else:
        lines.append(
            f"Image: {image['width']}x{image['height']} {image['mode']} {image['format']} "
            f"pixels-sha256:{image['sha256']}"
        )
    return "\n".join(lines) + "\n\n"


#: What the replica's other functions answer (see ``layout``).
OTHER_FUNCTION_TEXT = "replica: another function answered"


async def other_function(image: str | None, text: str) -> AsyncIterator[str]:
    yield OTHER_FUNCTION_TEXT


async def other_function_text(text: str) -> AsyncIterator[str]:
    yield OTHER_FUNCTION_TEXT


def word(i: int) -> str:
    return ("" if i == 0 else " ") + REASONING_WORDS[i % len(REASONING_WORDS)]
