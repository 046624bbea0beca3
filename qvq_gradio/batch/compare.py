"""One batch asked of several models: how each did, and how often two of them agree.

Read from the output file (so a resumed run counts what earlier runs wrote, and the last record
of an item for a model is the one that counts): per model, answers and failures, accuracy on
its graded items, the median time per answer and the tokens its upstream reported; per pair of
models, on the items both got graded, how often their grades agree (both right or both wrong),
and the four counts behind that.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .output import read_output

__all__ = ["Agreement", "ModelSummary", "compare_output"]


@dataclass(frozen=True)
class ModelSummary:
    """How one model did over the whole output file."""

    name: str
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)  #: failed records by error type
    accuracy: float | None = None  #: correct ÷ graded
    graded: int = 0
    median_elapsed: float | None = None  #: seconds per answer
    tokens: int | None = None  #: total tokens its upstream reported (None: none reported)

    def __str__(self) -> str:
        line = f"{self.name}: {self.ok} ok, {self.failed} failed"
        if self.failures:
            line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) + ")"
        if self.accuracy is not None:
            line += f"; accuracy {self.accuracy:.1%} of {self.graded} graded"
        if self.median_elapsed is not None:
            line += f"; median {self.median_elapsed:.2f} s per answer"
        if self.tokens is not None:
            line += f"; {self.tokens:,} tokens"
        return line


@dataclass(frozen=True)
class Agreement:
    """Two models on the items graded for both."""

    first: str
    second: str
    both_right: int = 0
    only_first: int = 0
    only_second: int = 0
    both_wrong: int = 0

    @property
    def items(self) -> int:
        return self.both_right + self.only_first + self.only_second + self.both_wrong

    @property
    def rate(self) -> float | None:
        """How often their grades agree (None: no item graded for both)."""
        return (self.both_right + self.both_wrong) / self.items if self.items else None

    def __str__(self) -> str:
        head = f"{self.first} vs {self.second}: "
        if self.rate is None:
            return head + "no item graded for both"
        return (
            f"{head}agree on {self.both_right + self.both_wrong} of {self.items} items graded "
            f"for both ({self.rate:.1%}): both right {self.both_right}, only {self.first} "
            f"{self.only_first}, only {self.second} {self.only_second}, both wrong "
            f"{self.both_wrong}"
        )


@dataclass
class _Seen:
    status: str
    correct: bool | None
    elapsed: float | None
    tokens: int | None
    error: str | None


def compare_output(
    path: str | os.PathLike[str], names: Sequence[str] | None = None
) -> tuple[tuple[ModelSummary, ...], tuple[Agreement, ...]]:
    """Each model's summary and each pair's agreement, from a batch output (blocking; the file
    is streamed). ``names``: the models in the order to report them (default: as they first
    appear in the file); records without a model are left out."""
    last: dict[tuple[str, str], _Seen] = {}
    order: dict[str, None] = dict.fromkeys(names or ())
    for record in read_output(path):
        model = record.get("model") or None
        if model is None:
            continue
        order.setdefault(str(model), None)
        last[(str(record["id"]), str(model))] = _seen(record)
    summaries = tuple(_summary(name, (s for (_, m), s in last.items() if m == name))
                      for name in order)
    grades: dict[str, dict[str, bool]] = {name: {} for name in order}
    for (key, model), seen in last.items():
        if seen.correct is not None:
            grades[model][key] = seen.correct
    pairs = tuple(_agreement(a, b, grades[a], grades[b])
                  for a, b in itertools.combinations(order, 2))
    return summaries, pairs


def _seen(record: dict[str, Any]) -> _Seen:
    """One record's parts that count (a CSV's cells are text: read back here)."""
    correct = record.get("correct")
    if isinstance(correct, str):
        correct = {"True": True, "False": False}.get(correct)
    elapsed = record.get("elapsed")
    usage, error = _json(record.get("usage")), _json(record.get("error"))
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return _Seen(
        status=str(record.get("status")),
        correct=correct if isinstance(correct, bool) else None,
        elapsed=float(elapsed) if elapsed not in (None, "") else None,
        tokens=int(tokens) if isinstance(tokens, (int, str)) and str(tokens).isdigit() else None,
        error=str(error.get("type")) if isinstance(error, dict) else None,
    )


def _json(value: Any) -> Any:
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def _summary(name: str, records: Iterable[_Seen]) -> ModelSummary:
    seen = list(records)
    ok = [s for s in seen if s.status == "ok"]
    graded = [s.correct for s in seen if s.correct is not None]
    times = [s.elapsed for s in ok if s.elapsed is not None]
    tokens = [s.tokens for s in seen if s.tokens is not None]
    return ModelSummary(
        name=name,
        ok=len(ok),
        failed=len(seen) - len(ok),
        failures=dict(Counter(s.error or "error" for s in seen if s.status != "ok")),
        accuracy=sum(graded) / len(graded) if graded else None,
        graded=len(graded),
        median_elapsed=statistics.median(times) if times else None,
        tokens=sum(tokens) if tokens else None,
    )


def _agreement(first: str, second: str, a: dict[str, bool], b: dict[str, bool]) -> Agreement:
    both = [(a[key], b[key]) for key in a.keys() & b.keys()]
    return Agreement(
        first, second,
        both_right=sum(x and y for x, y in both),
        only_first=sum(x and not y for x, y in both),
        only_second=sum(y and not x for x, y in both),
        both_wrong=sum(not (x or y) for x, y in both),
    )
