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

**Comparing models**: ``models={"qvq": session_or_spec, "max": ...}`` asks every item of
every model (each ``concurrency`` at a time, with its own quota pause); each record names its
``model``, resume is by (id, model), and the summary gives each model's accuracy, failures,
time and tokens, and how often two models' grades agree (:mod:`.compare`).

**Progress** is a callback (:class:`Progress` snapshots); :class:`TqdmProgress` renders a tqdm
bar (a widget in Jupyter) with done / failed / in flight, rate, ETA and the quota countdown.

The package, in the order an item travels::

    items.py     BatchItem, and the content-derived id that makes a re-run match an item
    readers.py   JSONL, CSV, a folder, pandas, datasets: streamed
    engine.py    scheduling, retries with backoff, the quota pause, counting
    output.py    the crash-safe append-only file, and reading it back
    progress.py  snapshots for a callback, and the tqdm bar
    summary.py   what a run returns
    compare.py   per model, and per pair of models, from the output
"""


from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import anyio.to_thread
from typing_extensions import Unpack

from ..options import AskOptions, ask_options
from ..protocol import SessionLike
from .compare import Agreement, ModelSummary, compare_output
from .engine import Run
from .items import BatchInputError, BatchItem, item_id
from .output import FIELDS, Output, read_output
from .progress import Progress, TqdmProgress
from .readers import (
    count_rows,
    from_dataset,
    from_pandas,
    read_csv,
    read_folder,
    read_input,
    read_jsonl,
)
from .summary import BatchResult, BatchSummary, summarize_output

__all__ = [
    "FIELDS",
    "Agreement",
    "BatchInputError",
    "BatchItem",
    "BatchResult",
    "BatchSummary",
    "ModelSummary",
    "Progress",
    "TqdmProgress",
    "arun",
    "check_not_input",
    "compare_output",
    "from_dataset",
    "from_pandas",
    "item_id",
    "read_csv",
    "read_folder",
    "read_input",
    "read_jsonl",
    "read_output",
    "run",
    "summarize_output",
]


async def arun(
    items: Iterable[BatchItem | Mapping[str, Any]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    session: SessionLike | None = None,
    models: Mapping[str, SessionLike | str | Sequence[str]] | None = None,
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
    ``$QVQ_SPACE``, closed at the end). ``models``: instead of ``session``, several named
    models to ask every item of (each a session, or a spec or specs to connect to, closed at
    the end). ``options``: per-call :class:`AskOptions`.
    """
    checked = ask_options(options, where="arun")
    _check(concurrency, retries, on_quota, order)
    if models is not None and session is not None:
        raise ValueError("give session= or models=, not both")
    if models is not None:
        _check_names(models)
    source = Path(items) if isinstance(items, (str, os.PathLike)) else None
    if source is not None:
        await anyio.to_thread.run_sync(check_not_input, source, Path(output))
    items, total = await _source(items, prompt)
    from ..pool import connect
    from ..session import Pipeline

    sessions: dict[str | None, SessionLike] = {}
    owned: list[SessionLike] = []  # the sessions this run made, and closes
    if models is not None:
        for name, given in models.items():
            if not isinstance(given, (str, list, tuple)):
                sessions[name] = cast(SessionLike, given)
                continue
            made = sessions[name] = connect(given)  # a spec or specs: ours to close
            if isinstance(made, Pipeline):
                made.model_name = name  # recorded in its history with each answer
            owned.append(made)
    elif session is not None:
        sessions[None] = session
    else:
        sessions[None] = connect()
        owned.append(sessions[None])
    out = Output(Path(output))
    try:
        await anyio.to_thread.run_sync(out.open, retry_failed)
    except BaseException:
        for own in owned:
            await own.aclose()
        raise
    run = Run(
        sessions, out, checked, retries=retries, on_quota=on_quota, order=order,
        progress=progress,
    )
    if total is not None:
        total = max(total * len(sessions) - len(out.done), 0)
        run.total = total if limit is None else min(total, limit * len(sessions))
    started = time.monotonic()
    try:
        await _one_error(run.run_all(items, concurrency, limit))
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(out.close)
            for own in owned:
                await own.aclose()
            run.report()
    if run.seen == 0 and limit != 0:
        where = f"in {source}" if source is not None else "among the items given"
        raise BatchInputError(f"no items found {where}: nothing to ask")
    if order == "input":
        # Records were written as they finished (a kill loses none): now in input order.
        await anyio.to_thread.run_sync(out.reorder, run.positions)
    summary = run.summary(time.monotonic() - started)
    if models is not None:
        compared = await anyio.to_thread.run_sync(compare_output, out.path, list(models))
        summary = dataclasses.replace(summary, models=compared[0], agreements=compared[1])
    return BatchResult(summary, out.path)


def _check_names(models: Mapping[str, Any]) -> None:
    from ..spaces import split_name

    if not models:
        raise ValueError("models= names no model")
    for name in models:
        if not isinstance(name, str) or split_name(f"{name}=x") != (name, "x"):
            raise ValueError(
                f"a model's name is letters, digits, '_', '.' and '-', not {name!r}"
            )


async def _one_error(work: Awaitable[None]) -> None:
    """``work``, with a task group's group of one error raised as that error (a bug in an
    item, an unreadable input): what the caller sees is what went wrong."""
    try:
        await work
    except BaseException as exc:
        inner = getattr(exc, "exceptions", None)
        if isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], Exception):
            raise inner[0] from None
        raise


def check_not_input(source: Path, output: Path) -> None:
    """Refuse an output that is the input (the same path, or the same file by a link)."""
    same = source.resolve() == output.resolve()
    if not same and source.exists() and output.exists():
        same = os.path.samefile(source, output)
    if same:
        raise BatchInputError(
            f"the output {output} is the input {source}: give another file for the results"
        )


def _check(concurrency: int, retries: int, on_quota: str, order: str) -> None:
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries!r}")
    if on_quota not in ("wait", "stop"):
        raise ValueError(f"on_quota must be 'wait' or 'stop', got {on_quota!r}")
    if order not in ("completion", "input"):
        raise ValueError(f"order must be 'completion' or 'input', got {order!r}")


async def _source(
    items: Iterable[BatchItem | Mapping[str, Any]] | str | os.PathLike[str], prompt: str | None
) -> tuple[Iterable[Any], int | None]:
    """The items to read, and how many there are when that is known (for the bar)."""
    if isinstance(items, (str, os.PathLike)):
        source = Path(items)
        read = await anyio.to_thread.run_sync(lambda: read_input(source, prompt=prompt))
        return read, await anyio.to_thread.run_sync(count_rows, source)
    total = len(items) if isinstance(items, Sized) else None
    if prompt is not None:
        given = items
        return (BatchItem.checked(i, prompt=prompt) for i in given), total
    return items, total


def run(
    items: Iterable[BatchItem | Mapping[str, Any]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    **kwargs: Any,
) -> BatchResult:
    """The blocking :func:`arun` (on the process-wide loop thread, so it works in Jupyter).

    ``progress=True`` shows a :class:`TqdmProgress` bar on stderr (a widget in Jupyter), also
    when stderr is not a terminal.
    """
    from ..sync import portal

    bar: TqdmProgress | None = None
    if kwargs.get("progress") is True:
        bar = TqdmProgress(disable=False)  # asked for: shown even where stderr is no terminal
        kwargs["progress"] = bar
    try:
        return portal().call(lambda: arun(items, output, **kwargs))
    finally:
        if bar is not None:
            bar.close()
