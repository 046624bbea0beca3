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
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..answer import extract_final_answer
from ..events import Finished
from .items import BatchInputError, BatchItem

__all__ = [
    "FIELDS", "Earlier", "Key", "NotAnOutputError", "Output", "make_record", "read_output"
]

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
    "reasoning",
    "shape",
    "model",
    "model_id",
    "usage",
)

#: What a record answers for: its item's id, and the model NAME asked (None: the one session
#: of a run that compares nothing). Resume is by this key.
Key = tuple[str, "str | None"]


def make_record(
    item: BatchItem,
    key: str,
    *,
    finished: Finished | None,
    error: BaseException | None,
    text: str,
    attempts: int,
    space: str | None,
    model: str | None = None,
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
        "reasoning": finished.reasoning if finished is not None else "",
        "shape": finished.shape if finished is not None else None,
        "model": model,
        "model_id": finished.model if finished is not None else None,
        "usage": dict(finished.usage) if finished is not None and finished.usage else None,
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


class NotAnOutputError(BatchInputError):
    """The output file holds something other than a batch's records (an input file, say)."""


@dataclass
class Earlier:
    """What earlier runs left in the output: each id's status, and how the file grades."""

    status: dict[Key, str] = field(default_factory=dict)  #: (id, model) -> "ok" | "failed"
    correct: dict[Key, bool] = field(default_factory=dict)  #: (id, model) -> graded outcome
    #: failed records that had an expected answer: not graded, counted apart
    ungraded: set[Key] = field(default_factory=set)


class Output:
    """Append-only results file; each record goes out whole, in one write.

    Records are found by a scan that knows the format: a JSONL record ends at a newline, a CSV
    record at a newline outside quotes (an answer spans lines), so a record cut short by a
    crash is recognised in both and dropped, whatever it held.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.csv = path.suffix.lower() == ".csv"
        self.earlier = Earlier()
        self._fd: int | None = None
        self._made = False  # this run made the file
        self._written = False  # this run wrote a record
        #: A CSV's columns: its own header's when it was written before (an older version's
        #: file lacks the newer fields: its records keep its columns), else FIELDS.
        self._columns: tuple[str, ...] = FIELDS

    @property
    def done(self) -> dict[Key, str]:
        """(id, model) -> status of every record earlier runs wrote."""
        return self.earlier.status

    def scan(self) -> int:
        """Read what earlier runs wrote into :attr:`earlier` (changing nothing); the offset
        where the last complete record ends."""
        end = 0
        earlier = self.earlier
        for key, status, correct, expected, _, stop in self._records():
            earlier.status[key] = status
            earlier.correct.pop(key, None)  # the last record of an id is the one that counts
            earlier.ungraded.discard(key)
            if correct is not None:
                earlier.correct[key] = correct
            elif status != "ok" and expected:
                earlier.ungraded.add(key)
            end = stop
        return end

    # blocking; worker threads only
    def open(self, retry_failed: bool) -> None:
        """Read what earlier runs wrote (streamed: only ids, statuses and grades are kept),
        drop a torn last record, drop failed records if they are to be retried, and open for
        appending. A file that is not a batch output is refused before anything changes."""
        if not self.path.parent.is_dir():
            raise BatchInputError(
                f"{self.path}: the folder {self.path.parent} does not exist (create it first)"
            )
        self._cut_after(self.scan())
        if retry_failed and any(status != "ok" for status in self.done.values()):
            self._rewrite(lambda key, status: status == "ok")
            failed = [key for key, status in self.done.items() if status != "ok"]
            for key in failed:
                del self.earlier.status[key]
                self.earlier.correct.pop(key, None)
                self.earlier.ungraded.discard(key)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._made = not self.path.exists()
        self._fd = os.open(self.path, flags, 0o644)
        if self.csv and os.fstat(self._fd).st_size == 0:
            os.write(self._fd, self._csv_header())

    def _cut_after(self, end: int) -> None:
        """Drop what follows the last complete record (a record torn by a crash)."""
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        if size > end:
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
            log.warning(
                "%s: dropped a record cut short by an earlier crash (%d bytes)",
                self.path,
                size - end,
            )

    def _spans(self, handle: Any) -> Iterator[tuple[int, int, bytes]]:
        """(start, end, bytes) of each complete record (a CSV header is not one), streamed."""
        offset = 0
        pending = b""
        start = 0
        header = self.csv
        for line in handle:
            if not pending:
                start = offset
            offset += len(line)
            pending += line
            if not line.endswith(b"\n"):
                return  # the torn tail: no newline after it
            if self.csv and pending.count(b'"') % 2:
                continue  # a newline inside a quoted cell: the record goes on
            record, pending = pending, b""
            if header:
                header = False
                continue
            if record.strip():
                yield start, offset, record

    def _records(self) -> Iterator[tuple[Key, str, bool | None, bool, bytes, int]]:
        """((id, model), status, correct, whether it had an expected answer, raw bytes, end
        offset) of each complete record."""
        try:
            yield from self._read_records()
        except UnicodeDecodeError:
            raise NotAnOutputError(
                f"{self.path}: not a batch output (it is not UTF-8 text: a picture or another "
                "binary file?); give another output file"
            ) from None

    def _read_records(self) -> Iterator[tuple[Key, str, bool | None, bool, bytes, int]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            names: list[str] | None = None
            if self.csv:
                first = handle.readline()
                if not first:
                    return
                names = next(csv.reader([first.decode("utf-8")]))
                self._columns = tuple(names)
                if "id" not in names or "status" not in names:
                    raise NotAnOutputError(
                        f"{self.path}: not a batch output (its header has no id and status "
                        "columns); give another output file"
                    )
                handle.seek(0)
            for number, (_, end, raw) in enumerate(self._spans(handle), start=1):
                record = self._parse(raw, names, number)
                status = record.get("status")
                if record.get("id") is None or status not in ("ok", "failed"):
                    raise NotAnOutputError(
                        f"{self.path}: record {number} is not a batch result (no id and "
                        "status): is this an input file? Give another output file"
                    )
                correct = record.get("correct")
                if isinstance(correct, str):
                    correct = {"True": True, "False": False}.get(correct)
                expected = record.get("expected") not in (None, "")
                key = (str(record["id"]), str(record.get("model") or "") or None)
                yield key, str(status), correct, expected, raw, end

    def _parse(self, raw: bytes, names: list[str] | None, number: int) -> dict[str, Any]:
        text = raw.decode("utf-8")
        if names is not None:
            return dict(zip(names, next(csv.reader(io.StringIO(text, newline=""))), strict=False))
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotAnOutputError(
                f"{self.path}: record {number} is damaged ({exc.msg}); is this a batch output?"
            ) from exc
        if not isinstance(value, dict):
            raise NotAnOutputError(f"{self.path}: record {number} is not a batch result")
        return value

    def _rewrite(
        self, keep: Callable[[Key, str], bool], order: Mapping[str, int] | None = None
    ) -> None:
        """Rewrite the output with the records ``keep`` accepts, in ``order`` (input position
        by id) if given, atomically: a temporary file, fsync, then a rename. Records are
        copied by their offsets, so memory holds offsets, not answers."""
        spans: list[tuple[float, int, int, int]] = []
        with open(self.path, "rb") as handle:
            for index, (key, status, _, _, raw, end) in enumerate(self._records()):
                start = end - len(raw)
                if keep(key, status):
                    position = float(order.get(key[0], math.inf)) if order is not None else index
                    spans.append((position, index, start, end))
            if order is not None:
                spans.sort()
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "wb") as out:
                if self.csv:
                    out.write(self._csv_header())
                for _, _, begin, end in spans:
                    handle.seek(begin)
                    out.write(handle.read(end - begin))
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, self.path)

    def reorder(self, order: Mapping[str, int]) -> None:
        """Put the records in input order (``order``: id -> position; others last, as they
        were), atomically (blocking)."""
        self.close()
        self._rewrite(lambda key, status: True, order)

    def _csv_header(self) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(self._columns)
        return buffer.getvalue().encode("utf-8")

    def _encode(self, record: Mapping[str, Any]) -> bytes:
        if not self.csv:
            return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        buffer = io.StringIO()
        cells = []
        for name in self._columns:
            value = record.get(name)
            if name in ("error", "meta", "usage") and not isinstance(value, str):
                value = "" if value in (None, {}) else json.dumps(value, ensure_ascii=False)
            cells.append("" if value is None else value)
        csv.writer(buffer).writerow(cells)
        return buffer.getvalue().encode("utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        assert self._fd is not None
        data = self._encode(record)
        self._written = True
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (disk full): finish it or raise
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        """Close the file; one this run made and wrote no record to is removed (nothing to
        do, or a run that stopped before its first answer leaves no empty file behind)."""
        fd = self._fd
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
                self._fd = None
            if self._made and not self._written:
                self.path.unlink(missing_ok=True)


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
