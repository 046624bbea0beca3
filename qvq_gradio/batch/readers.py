"""Batch readers: items streamed from JSONL, CSV, a folder of images, pandas or ``datasets``.

Nothing is loaded whole: each reader is a generator, and a bad row raises
:class:`~.items.BatchInputError` naming its file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..media import classify
from .items import BatchInputError, BatchItem

__all__ = [
    "count_rows",
    "from_dataset",
    "from_pandas",
    "read_csv",
    "read_folder",
    "read_input",
    "read_jsonl",
]

_IMAGE_SUFFIXES = frozenset(
    ".png .jpg .jpeg .webp .gif .bmp .tif .tiff .avif .heic .heif .jfif".split()
)


def _resolve_image(value: Any, base: Path) -> Any:
    """A relative image path in an input file is relative to that file."""
    if isinstance(value, str) and value and classify(value).kind == "path":
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    return value


def read_jsonl(
    path: str | os.PathLike[str], *, prompt: str | None = None
) -> Iterator[BatchItem]:
    """Items from a JSON Lines file, one object per line (blank lines skipped); ``prompt`` for
    rows without one."""
    source = Path(path)
    with open(source, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{source}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchInputError(f"{where}: not valid JSON ({exc.msg})") from exc
            item = BatchItem.of(value, where, prompt=prompt)
            yield dataclasses.replace(item, image=_resolve_image(item.image, source.parent))


def read_csv(path: str | os.PathLike[str], *, prompt: str | None = None) -> Iterator[BatchItem]:
    """Items from a CSV file with a header row (``id``, ``prompt``, ``image``, ``system``,
    ``expected``; an empty cell means none; other columns go to ``meta``)."""
    source = Path(path)
    with open(source, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise BatchInputError(f"{source}:1: the CSV file is empty (no header row)")
        if "prompt" not in reader.fieldnames and not prompt:
            raise BatchInputError(f"{source}:1: the header has no 'prompt' column")
        for row in reader:
            where = f"{source}:{reader.line_num}"
            if None in row:
                raise BatchInputError(f"{where}: more cells than the header has columns")
            item = BatchItem.of(row, where, prompt=prompt)
            yield dataclasses.replace(item, image=_resolve_image(item.image, source.parent))


def read_folder(path: str | os.PathLike[str], prompt: str) -> Iterator[BatchItem]:
    """One item per image file in a folder (sorted, not recursive), all with ``prompt``;
    each item's id is the file name."""
    source = Path(path)
    for file in sorted(source.iterdir()):
        if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES:
            yield BatchItem(id=file.name, prompt=prompt, image=file, where=str(file))


def read_input(path: str | os.PathLike[str], *, prompt: str | None = None) -> Iterator[BatchItem]:
    """:func:`read_jsonl`, :func:`read_csv` or :func:`read_folder`, by what ``path`` is."""
    source = Path(path)
    if source.is_dir():
        if not prompt:
            raise BatchInputError(f"{source}: a folder of images needs a prompt")
        return read_folder(source, prompt)
    if not source.is_file():
        raise BatchInputError(f"{source}: no such file or folder")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return read_csv(source, prompt=prompt)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(source, prompt=prompt)
    raise BatchInputError(f"{source}: give a .jsonl or .csv file, or a folder of images")


def from_pandas(frame: Any) -> Iterator[BatchItem]:
    """Items from a pandas ``DataFrame`` (columns as in a CSV file; NaN means none)."""
    for number, row in enumerate(frame.to_dict("records"), start=1):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        yield BatchItem.of(clean, f"row {number}")


def from_dataset(dataset: Any, *, image_column: str = "image") -> Iterator[BatchItem]:
    """Items from a Hugging Face ``datasets.Dataset`` (an image column of PIL images or paths)."""
    for number, row in enumerate(dataset, start=1):
        value = dict(row)
        if image_column != "image" and image_column in value:
            value["image"] = value.pop(image_column)
        yield BatchItem.of(value, f"row {number}")


def count_rows(path: Path) -> int | None:
    """Rows in an input file (for the progress bar's total), None for a folder."""
    if not path.is_file():
        return None
    count = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    if path.suffix.lower() == ".csv":
        count -= 1  # the header
    return max(count, 0)
