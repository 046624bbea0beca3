"""Batch output: one record per item, appended whole, read back as a stream on resume.

Records go out in one ``write()`` each (JSONL, or CSV by the file's extension), so a killed run
loses no completed answer and never writes one twice; on start a torn last record is dropped
(and reported), and ``retry_failed`` rewrites the file atomically without its failed records.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..answer import extract_final_answer
from ..events import Finished
from .items import BatchInputError, BatchItem

__all__ = ["FIELDS", "Output", "make_record", "read_output"]

log = logging.getLogger("qvq_gradio")

#: The fields of every output record, in order.
FIELDS = (
    "id",
    "status",
    "text",
    "final_answer",
    "expected",
    "correct",
    "error",
    "attempts",
    "space",
    "elapsed",
    "time_to_first_token",
    "queue_wait",
    "meta",
)


def make_record(
    item: BatchItem,
    key: str,
    *,
    finished: Finished | None,
    error: BaseException | None,
    text: str,
    attempts: int,
    space: str | None,
) -> dict[str, Any]:
    final = extract_final_answer(text) if finished is not None else None
    correct = None
    if item.expected is not None and finished is not None:
        correct = _normalise(final if final is not None else "") == _normalise(item.expected)
    return {
        "id": key,
        "status": "ok" if finished is not None else "failed",
        "text": text,
        "final_answer": final,
        "expected": item.expected,
        "correct": correct,
        "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        "attempts": attempts,
        "space": finished.space if finished is not None else space,
        "elapsed": None if finished is None else round(finished.elapsed, 3),
        "time_to_first_token": _rounded(finished.time_to_first_token if finished else None),
        "queue_wait": _rounded(finished.queue_wait if finished else None),
        "meta": item.meta,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _normalise(answer: str) -> str:
    """For exact-match accuracy: case, spaces, ``$``, ``\\boxed{}`` and a final period aside."""
    text = answer.strip()
    if text.startswith("\\boxed{") and text.endswith("}"):
        text = text[len("\\boxed{") : -1]
    text = text.strip().strip("$").strip().rstrip(".").strip()
    return " ".join(text.lower().split())


class Output:
    """Append-only results file; each record goes out whole, in one write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.csv = path.suffix.lower() == ".csv"
        self.done: dict[str, str] = {}  # id -> status, from earlier runs

    # blocking; worker threads only
    def open(self, retry_failed: bool) -> None:
        """Read what earlier runs wrote (streamed: only ids and statuses are kept), drop a torn
        last line, drop failed records if they are to be retried, and open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self.done = dict(self._scan())
        if retry_failed and any(status != "ok" for status in self.done.values()):
            self._keep_only_ok()
            self.done = {key: status for key, status in self.done.items() if status == "ok"}
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd: int | None = os.open(self.path, flags, 0o644)
        if self.csv and os.fstat(self._fd).st_size == 0:
            os.write(self._fd, self._csv_header())

    def _drop_torn_tail(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            # Find the last complete line, reading backwards in blocks.
            end = size
            cut = 0
            while end > 0:
                start = max(0, end - (1 << 16))
                handle.seek(start)
                block = handle.read(end - start)
                found = block.rfind(b"\n")
                if found >= 0:
                    cut = start + found + 1
                    break
                end = start
            handle.truncate(cut)
        log.warning(
            "%s: dropped a record cut short by an earlier crash (%d bytes)", self.path, size - cut
        )

    def _records(self) -> Iterator[tuple[str, str, Any]]:
        """(id, status, raw record) of each complete record, streamed."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", newline="" if self.csv else None) as handle:
            if self.csv:
                for row in csv.DictReader(handle):
                    yield str(row.get("id")), str(row.get("status")), row
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BatchInputError(
                        f"{self.path}:{number}: the output file is damaged ({exc.msg})"
                    ) from exc
                yield str(record.get("id")), str(record.get("status")), line

    def _scan(self) -> Iterator[tuple[str, str]]:
        for key, status, _ in self._records():
            yield key, status

    def _keep_only_ok(self) -> None:
        """Rewrite the output without its failed records (atomically: a temporary file, then
        a rename), so that each item still appears once after it is asked again."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "wb") as out:
            if self.csv:
                out.write(self._csv_header())
            for _, status, raw in self._records():
                if status != "ok":
                    continue
                out.write(self._encode(raw) if self.csv else raw.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)

    def _csv_header(self) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(FIELDS)
        return buffer.getvalue().encode("utf-8")

    def _encode(self, record: Mapping[str, Any]) -> bytes:
        if not self.csv:
            return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        buffer = io.StringIO()
        cells = []
        for name in FIELDS:
            value = record.get(name)
            if name in ("error", "meta") and not isinstance(value, str):
                value = "" if value in (None, {}) else json.dumps(value, ensure_ascii=False)
            cells.append("" if value is None else value)
        csv.writer(buffer).writerow(cells)
        return buffer.getvalue().encode("utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        assert self._fd is not None
        data = self._encode(record)
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (disk full): finish it or raise
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
                self._fd = None


def read_output(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a batch output file (JSONL or CSV), as dicts."""
    source = Path(path)
    if source.suffix.lower() == ".csv":
        with open(source, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield dict(row)
        return
    with open(source, encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and line.endswith("\n"):
                yield json.loads(line)
