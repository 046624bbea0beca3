"""Batch readers: items streamed from JSONL, CSV, a folder of images, pandas or ``datasets``.

Nothing is loaded whole: each reader is a generator, and a bad row raises
:class:`~.items.BatchInputError` naming its file and line.
"""

from __future__ import annotations

import contextlib
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
    rows without one. A row that is not valid JSON, not an object, or has no prompt becomes an
    invalid item (a failed record naming its line); the others are asked."""
    source = Path(path)
    _check_text(source)
    return _jsonl_rows(source, prompt)


def _jsonl_rows(source: Path, prompt: str | None) -> Iterator[BatchItem]:
    with _text(source) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{source}:{number}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BatchItem.invalid(f"{where}: not valid JSON ({exc.msg})", line, where)
                continue
            yield _relative(BatchItem.checked(value, where, prompt=prompt), source)


def read_csv(path: str | os.PathLike[str], *, prompt: str | None = None) -> Iterator[BatchItem]:
    """Items from a CSV file with a header row (``id``, ``prompt``, ``image``, ``system``,
    ``expected``; an empty cell means none; other columns go to ``meta``). A file without a
    header, or without a ``prompt`` column (and no ``prompt`` given), is refused at once; a bad
    row becomes an invalid item."""
    source = Path(path)
    with _text(source, newline="") as handle:
        fields = csv.DictReader(handle).fieldnames
    if fields is None:
        raise BatchInputError(f"{source}:1: the CSV file is empty (no header row)")
    if "prompt" not in fields and not prompt:
        raise BatchInputError(
            f"{source}:1: the header has no 'prompt' column (columns: {', '.join(fields)}); "
            "add one, or give a prompt for every row"
        )
    return _csv_rows(source, prompt)


def _csv_rows(source: Path, prompt: str | None) -> Iterator[BatchItem]:
    with _text(source, newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            where = f"{source}:{reader.line_num}"
            if None in row:
                problem = f"{where}: more cells than the header has columns"
                yield BatchItem.invalid(problem, {k: v for k, v in row.items() if k}, where)
                continue
            yield _relative(BatchItem.checked(row, where, prompt=prompt), source)


def _relative(item: BatchItem, source: Path) -> BatchItem:
    if item.problem is not None:
        return item
    return dataclasses.replace(item, image=_resolve_image(item.image, source.parent))


def _check_text(source: Path) -> None:
    """Refuse a file that is not UTF-8 text, before anything is asked (its start tells)."""
    with open(source, "rb") as handle:
        head = handle.read(1 << 16)
    if b"\x00" in head:
        raise BatchInputError(f"{source}: not a text file (a .jsonl or .csv file is)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the block's end
            raise BatchInputError(f"{source}: not UTF-8 text ({exc.reason})") from exc


@contextlib.contextmanager
def _text(source: Path, newline: str | None = None) -> Iterator[Any]:
    """``source`` opened as UTF-8 text; a byte that is not UTF-8 is an input error."""
    try:
        with open(source, encoding="utf-8", newline=newline) as handle:
            yield handle
    except UnicodeDecodeError as exc:
        raise BatchInputError(f"{source}: not UTF-8 text ({exc.reason})") from exc


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
        _check_text(source)
        return read_csv(source, prompt=prompt)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(source, prompt=prompt)
    raise BatchInputError(f"{source}: give a .jsonl or .csv file, or a folder of images")


def from_pandas(frame: Any) -> Iterator[BatchItem]:
    """Items from a pandas ``DataFrame`` (columns as in a CSV file; NaN means none)."""
    for number, row in enumerate(frame.to_dict("records"), start=1):
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        yield BatchItem.checked(clean, f"row {number}")


def from_dataset(dataset: Any, *, image_column: str = "image") -> Iterator[BatchItem]:
    """Items from a Hugging Face ``datasets.Dataset`` (an image column of PIL images or paths)."""
    for number, row in enumerate(dataset, start=1):
        value = dict(row)
        if image_column != "image" and image_column in value:
            value["image"] = value.pop(image_column)
        yield BatchItem.checked(value, f"row {number}")


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
