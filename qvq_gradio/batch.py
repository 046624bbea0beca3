"""Batch runs: hundreds of questions, one call, nothing lost, quota-aware.

    result = await batch.arun("charts.jsonl", output="answers.jsonl", session=pool)
    result = batch.run(items, output="answers.csv")        # blocking; works in Jupyter too

**Input** is streamed, never loaded whole: an iterable of :class:`BatchItem` (or dicts with the
same keys), or :func:`read_input` of a ``.jsonl`` / ``.csv`` file (image paths relative to the
file) or a folder of images with one prompt, or — with the extras — a pandas ``DataFrame``
(:func:`from_pandas`) or a Hugging Face ``datasets.Dataset`` (:func:`from_dataset`). An item
without an ``id`` gets one derived from its content (prompt and image bytes), so a re-run
matches it.

**Output** is JSONL (default) or CSV, by the output's extension: one record per item (see
:data:`FIELDS`), written whole with one append or not at all, in completion order (``order=
"input"`` for input order). A killed run loses no completed answer and never writes an item
twice; on start a torn last line is dropped (and reported).

**Resume**: running again skips every item already ``ok`` in the output; ``failed`` ones are
skipped too unless ``retry_failed`` (their old records are then removed first, so each item
still appears once).

**Scheduling**: at most ``concurrency`` questions in flight (default 4: a ZeroGPU Space runs one
or a few at a time and queues the rest, so more only lengthens its queue; raise it for a pool or
your own hardware). Transient failures (connection, rate limit, no GPU, connect or idle
timeouts) are retried with exponential backoff and jitter up to ``retries`` times; input errors
and the Space's app errors fail the item at once, and a bad item never stops the next. A
``QuotaExceededError`` pauses every new submission for its ``retry_after`` (the quota is per
user) and re-queues the question it cut; ``on_quota="stop"`` ends the run cleanly instead.

**Progress** is a callback (:class:`Progress` snapshots); :class:`TqdmProgress` renders a tqdm
bar (a widget in Jupyter) with done / failed / in flight, rate, ETA and the quota countdown.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sized
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
from typing_extensions import Unpack

from .answer import extract_final_answer
from .errors import (
    ConnectTimeoutError,
    GPUUnavailableError,
    IdleTimeoutError,
    InputError,
    QuotaExceededError,
    QVQError,
    RateLimitError,
    ResponseError,
    SpaceConnectionError,
)
from .events import Finished
from .media import classify
from .options import AskOptions, ask_options
from .protocol import SessionLike

__all__ = [
    "FIELDS",
    "BatchInputError",
    "BatchItem",
    "BatchResult",
    "BatchSummary",
    "Progress",
    "TqdmProgress",
    "arun",
    "from_dataset",
    "from_pandas",
    "item_id",
    "read_csv",
    "read_folder",
    "read_input",
    "read_jsonl",
    "run",
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
)
#: Retried (up to ``retries`` times) with exponential backoff and jitter.
TRANSIENT = (
    SpaceConnectionError,
    RateLimitError,
    GPUUnavailableError,
    ConnectTimeoutError,
    IdleTimeoutError,
)
_ITEM_KEYS = ("id", "prompt", "messages", "image", "system", "expected", "meta")
_IMAGE_SUFFIXES = frozenset(
    ".png .jpg .jpeg .webp .gif .bmp .tif .tiff .avif .heic .heif .jfif".split()
)
_CHUNK = 64  # items read per worker-thread hop
_BACKOFF_FIRST, _BACKOFF_CAP = 1.0, 60.0
_QUOTA_DEFAULT = 60.0


class BatchInputError(InputError):
    """A batch input file or row that cannot be used; the message names the file and line."""


# -- items ----------------------------------------------------------------------------------------


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


# -- readers -----------------------------------------------------------------------------------


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


# -- output ------------------------------------------------------------------------------------


def _record(
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


class _Output:
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


# -- progress and summary ------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """A snapshot of a running batch, handed to the ``progress`` callback on every change."""

    done: int
    failed: int
    in_flight: int
    skipped: int  #: already in the output from earlier runs
    total: int | None  #: items to ask in this run, when known
    paused_for: float | None  #: seconds of quota pause left, while paused


class TqdmProgress:
    """A ``tqdm.auto`` bar for :func:`arun` (a widget in Jupyter): done / failed / in flight,
    rate, ETA, and the quota countdown while paused. Call :meth:`close` at the end."""

    def __init__(self, *, file: Any = None, disable: bool | None = None) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=None, unit="q", file=file or sys.stderr, disable=disable,
                         dynamic_ncols=True)
        self._done = 0

    def __call__(self, progress: Progress) -> None:
        bar = self._bar
        if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
        finished = progress.done + progress.failed
        bar.update(finished - self._done)
        self._done = finished
        bar.set_description(
            f"quota: resuming in {progress.paused_for:.0f} s" if progress.paused_for else "qvq"
        )
        bar.set_postfix(
            ok=progress.done, failed=progress.failed, in_flight=progress.in_flight, refresh=False
        )
        bar.refresh()

    def close(self) -> None:
        self._bar.close()


@dataclass(frozen=True)
class BatchSummary:
    """How a run went."""

    asked: int  #: items this run finished (ok or failed)
    ok: int
    failed: int
    skipped: int  #: already done in the output before this run
    skipped_failed: int  #: of those, failed before and not retried (see ``retry_failed``)
    failures: dict[str, int]  #: failed items by error type
    elapsed: float  #: seconds
    quota_wait: float  #: seconds spent paused for quota
    accuracy: float | None  #: exact match of normalised final answers, where gold was given
    graded: int  #: items with a gold answer
    stopped_on_quota: bool
    interrupted: bool = False

    def __str__(self) -> str:
        lines = [
            f"{self.ok} ok, {self.failed} failed, {self.skipped} already done "
            f"in {self.elapsed:.1f} s (quota wait {self.quota_wait:.1f} s)"
        ]
        if self.failures:
            lines.append(
                "failures: " + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
            )
        if self.accuracy is not None:
            lines.append(f"accuracy: {self.accuracy:.1%} of {self.graded} graded")
        if self.skipped_failed:
            lines.append(f"{self.skipped_failed} failed before and left as they were (retry them "
                         "with --retry-failed)")
        if self.stopped_on_quota:
            lines.append("stopped on quota: run the same command again to resume")
        return "\n".join(lines)

    @property
    def all_ok(self) -> bool:
        """Every item of the input is ``ok`` in the output (as far as this run went)."""
        return not (self.failed or self.skipped_failed or self.stopped_on_quota)


@dataclass(frozen=True)
class BatchResult:
    """What :func:`arun` returns: the summary, and the output's records."""

    summary: BatchSummary
    output: Path

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record in the output file (this run's and earlier ones)."""
        return read_output(self.output)

    def to_pandas(self) -> Any:
        """The output's records as a pandas ``DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_pandas() needs pandas: pip install pandas") from exc
        return pd.DataFrame.from_records(list(self))


# -- the engine --------------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        session: SessionLike,
        output: _Output,
        options: AskOptions,
        *,
        retries: int,
        on_quota: str,
        order: str,
        progress: Callable[[Progress], None] | None,
    ) -> None:
        self.session, self.output, self.options = session, output, options
        self.retries, self.on_quota, self.order = retries, on_quota, order
        self.progress = progress
        self.ok = self.failed = self.in_flight = self.skipped = self.skipped_failed = 0
        self.total: int | None = None
        self.failures: Counter[str] = Counter()
        self.graded = self.correct = 0
        self.paused_until = 0.0
        self.quota_wait = 0.0
        self.stopping = False
        self._resume = anyio.Event()
        self._resume.set()
        self._pending: dict[int, dict[str, Any] | None] = {}  # order="input": waiting
        self._next = 0
        self._writing = anyio.Lock()

    def report(self) -> None:
        if self.progress is not None:
            left = self.paused_until - time.monotonic()
            self.progress(
                Progress(
                    self.ok, self.failed, self.in_flight, self.skipped, self.total,
                    left if left > 0 else None,
                )
            )

    async def pause(self, seconds: float) -> None:
        """Hold every new submission for ``seconds`` (quota), with a countdown."""
        until = time.monotonic() + seconds
        if until <= self.paused_until:
            return
        first = self.paused_until <= time.monotonic()
        self.paused_until = until
        if not first:
            return
        log.warning("quota exceeded: pausing new questions for %.0f s", seconds)
        self._resume = anyio.Event()
        started = time.monotonic()
        try:
            while (left := self.paused_until - time.monotonic()) > 0:
                self.report()
                await anyio.sleep(min(1.0, left))
        finally:
            self.quota_wait += time.monotonic() - started
            self._resume.set()
            self.report()

    async def gate(self) -> None:
        while not self._resume.is_set():
            await self._resume.wait()

    async def ask(self, index: int, item: BatchItem, key: str) -> None:
        attempts = 0
        while True:
            await self.gate()
            if self.stopping:
                await self.skip(index)
                return
            attempts += 1
            self.in_flight += 1
            self.report()
            try:
                finished, error = await self._once(item)
            finally:
                self.in_flight -= 1
                self.report()
            if isinstance(error, QuotaExceededError):
                attempts -= 1  # the quota cut the question: it is asked again, not failed
                if self.on_quota == "stop":
                    if not self.stopping:
                        log.warning("quota exceeded: stopping; run again to resume: %s", error)
                    self.stopping = True
                    await self.skip(index)
                    return
                await self.pause(error.retry_after or _QUOTA_DEFAULT)
                continue
            if isinstance(error, TRANSIENT) and attempts <= self.retries:
                delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** (attempts - 1))
                delay *= random.uniform(0.5, 1.0)
                log.info("item %s: %s; retry %d in %.1f s", key, error, attempts, delay)
                await anyio.sleep(delay)
                continue
            await self.finish(index, item, key, finished, error, attempts)
            return

    async def _once(self, item: BatchItem) -> tuple[Finished | None, BaseException | None]:
        """Ask once; the answer, or the error (input errors included: item 17 never stops
        item 18)."""
        try:
            events = self.session.events(item.question(), item.image, **self.options)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, Finished):
                        return event, None
        except (QVQError, TypeError, OSError) as error:
            return None, error
        raise ResponseError("the stream ended without an answer")  # pragma: no cover

    async def finish(
        self,
        index: int,
        item: BatchItem,
        key: str,
        finished: Finished | None,
        error: BaseException | None,
        attempts: int,
    ) -> None:
        text = finished.text if finished is not None else getattr(error, "text", "") or ""
        space = getattr(error, "space", None)
        record = _record(
            item, key, finished=finished, error=error, text=text, attempts=attempts, space=space
        )
        if finished is not None:
            self.ok += 1
        else:
            self.failed += 1
            self.failures[type(error).__name__] += 1
        if item.expected is not None:
            self.graded += 1
            self.correct += bool(record["correct"])
        await self._write(index, record)

    async def skip(self, index: int) -> None:
        """An item handed out but not asked (the run stops): input order must not wait."""
        await self._write(index, None)

    async def _write(self, index: int, record: dict[str, Any] | None) -> None:
        # Shielded: a record is written whole or not at all. One writer at a time: records
        # leave in the order they are handed over (input order waits for its turn).
        with anyio.CancelScope(shield=True):
            async with self._writing:
                if self.order != "input":
                    if record is not None:
                        await anyio.to_thread.run_sync(self.output.write, record)
                    return
                self._pending[index] = record
                while self._next in self._pending:
                    ready = self._pending.pop(self._next)
                    self._next += 1
                    if ready is not None:
                        await anyio.to_thread.run_sync(self.output.write, ready)


async def _chunks(
    items: Iterable[Any], done: Mapping[str, str], limit: int | None, run: _Run
) -> AsyncIterator[list[tuple[BatchItem, str]]]:
    """Items not yet done, read (and their ids derived) in worker threads, a chunk at a time."""
    iterator = iter(items)
    taken = 0
    exhausted = False

    def read() -> list[tuple[BatchItem, str]]:
        nonlocal taken, exhausted
        chunk: list[tuple[BatchItem, str]] = []
        while len(chunk) < _CHUNK and (limit is None or taken < limit):
            try:
                value = next(iterator)
            except StopIteration:
                exhausted = True
                break
            item = BatchItem.of(value)
            key = item_id(item)
            if key in done:
                run.skipped += 1
                run.skipped_failed += done[key] != "ok"
                continue
            taken += 1
            chunk.append((item, key))
        if limit is not None and taken >= limit:
            exhausted = True
        return chunk

    while not exhausted:
        chunk = await anyio.to_thread.run_sync(read)
        if chunk:
            yield chunk


async def arun(
    items: Iterable[BatchItem | Mapping[str, Any]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    session: SessionLike | None = None,
    prompt: str | None = None,
    concurrency: int = 4,
    retries: int = 3,
    on_quota: Literal["wait", "stop"] = "wait",
    retry_failed: bool = False,
    limit: int | None = None,
    order: Literal["completion", "input"] = "completion",
    progress: Callable[[Progress], None] | None = None,
    **options: Unpack[AskOptions],
) -> BatchResult:
    """Ask every item, writing one record per item to ``output``; resumes where a run stopped.

    ``items``: an iterable of :class:`BatchItem` or dicts, or a path for :func:`read_input`
    (``prompt`` then fills a folder's or row's missing prompt). ``session``: a
    :class:`~qvq_gradio.Session` or :class:`~qvq_gradio.Pool` (default: a session on
    ``$QVQ_SPACE``, closed at the end). ``options``: per-call :class:`AskOptions`.
    """
    checked = ask_options(options, where="arun")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries!r}")
    if on_quota not in ("wait", "stop"):
        raise ValueError(f"on_quota must be 'wait' or 'stop', got {on_quota!r}")
    if order not in ("completion", "input"):
        raise ValueError(f"order must be 'completion' or 'input', got {order!r}")
    total: int | None = None
    if isinstance(items, (str, os.PathLike)):
        source = Path(items)
        items = await anyio.to_thread.run_sync(lambda: read_input(source, prompt=prompt))
        total = await anyio.to_thread.run_sync(_count_lines, source)
    else:
        if isinstance(items, Sized):
            total = len(items)
        if prompt is not None:
            given = items
            items = (BatchItem.of(i, prompt=prompt) for i in given)
    own = session is None
    if session is None:
        from .pool import connect

        session = connect()
    out = _Output(Path(output))
    await anyio.to_thread.run_sync(out.open, retry_failed)
    run = _Run(
        session, out, checked, retries=retries, on_quota=on_quota, order=order, progress=progress
    )
    if total is not None:
        total = max(total - len(out.done), 0)
        run.total = total if limit is None else min(total, limit)
    started = time.monotonic()
    interrupted = False
    try:
        send, receive = anyio.create_memory_object_stream[tuple[int, BatchItem, str]](0)

        async def feed() -> None:
            index = 0
            async with send:
                async for chunk in _chunks(items, out.done, limit, run):
                    for item, key in chunk:
                        if run.stopping:
                            return
                        await send.send((index, item, key))
                        index += 1

        async def work(mine: Any) -> None:
            async with mine:
                async for index, item, key in mine:
                    if run.stopping:
                        await run.skip(index)
                        continue
                    await run.ask(index, item, key)

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            with receive:
                for _ in range(concurrency):
                    tg.start_soon(work, receive.clone())
    except BaseException:
        interrupted = True
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(out.close)
            if own:
                await session.aclose()
            run.report()
    summary = BatchSummary(
        asked=run.ok + run.failed,
        ok=run.ok,
        failed=run.failed,
        skipped=run.skipped,
        skipped_failed=run.skipped_failed,
        failures=dict(run.failures),
        elapsed=time.monotonic() - started,
        quota_wait=run.quota_wait,
        accuracy=(run.correct / run.graded) if run.graded else None,
        graded=run.graded,
        stopped_on_quota=run.stopping,
        interrupted=interrupted,
    )
    return BatchResult(summary, out.path)


def _count_lines(path: Path) -> int | None:
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


def run(
    items: Iterable[BatchItem | Mapping[str, Any]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    **kwargs: Any,
) -> BatchResult:
    """The blocking :func:`arun` (on the process-wide loop thread, so it works in Jupyter).

    ``progress=True`` shows a :class:`TqdmProgress` bar.
    """
    from .sync import portal

    bar: TqdmProgress | None = None
    if kwargs.get("progress") is True:
        bar = TqdmProgress()
        kwargs["progress"] = bar
    try:
        return portal().call(lambda: arun(items, output, **kwargs))
    finally:
        if bar is not None:
            bar.close()
