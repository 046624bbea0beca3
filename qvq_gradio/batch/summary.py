"""What a batch run returns: its summary, and the output's records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compare import Agreement, ModelSummary, compare_output
from .output import Earlier, Output, read_output

__all__ = ["BatchResult", "BatchSummary", "summarize_output"]


@dataclass(frozen=True)
class BatchSummary:
    """How a run went: this run's part, and the output file as a whole (a resumed run adds
    to what earlier runs wrote)."""

    asked: int  #: items this run finished (ok or failed)
    ok: int  #: of those, answered
    failed: int
    skipped: int  #: already done in the output before this run
    skipped_failed: int  #: of those, failed before and not retried (see ``retry_failed``)
    failures: dict[str, int]  #: this run's failed items by error type
    elapsed: float  #: seconds
    quota_wait: float  #: seconds spent paused for quota
    #: correct ÷ graded over the whole file: the same after a run and after a resume
    accuracy: float | None
    graded: int  #: records with an expected answer whose answer arrived, over the whole file
    stopped_on_quota: bool
    file_ok: int = 0  #: records ``ok`` in the output, earlier runs' included
    file_failed: int = 0  #: records ``failed`` in the output, earlier runs' included
    run_accuracy: float | None = None  #: accuracy over this run's graded items
    run_graded: int = 0
    ungraded: int = 0  #: failed records that had an expected answer (not in ``accuracy``)
    #: A run that compares models: each model over the whole file, and each pair's agreement
    models: tuple[ModelSummary, ...] = ()
    agreements: tuple[Agreement, ...] = ()

    def __str__(self) -> str:
        lines = [
            f"this run: {self.ok} ok, {self.failed} failed, {self.skipped} already done "
            f"in {self.elapsed:.1f} s (quota wait {self.quota_wait:.1f} s)"
        ]
        if self.failures:
            lines.append(
                "failures: " + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
            )
        lines.append(self.file_line())
        lines += [f"  {model}" for model in self.models]
        lines += [f"  {pair}" for pair in self.agreements]
        if self.skipped_failed:
            lines.append(f"{self.skipped_failed} failed before and left as they were (retry them "
                         "with --retry-failed)")
        if self.stopped_on_quota:
            lines.append("stopped on quota: run the same command again to resume")
        return "\n".join(lines)

    def file_line(self) -> str:
        """The output file as a whole, in one line."""
        whole = f"the file: {self.file_ok} ok, {self.file_failed} failed"
        if self.accuracy is not None:
            whole += f"; accuracy {self.accuracy:.1%} of {self.graded} graded"
            if self.run_accuracy is not None and self.run_graded != self.graded:
                whole += f" (this run: {self.run_accuracy:.1%} of {self.run_graded})"
        elif self.ungraded:
            whole += "; no answer graded"
        if self.ungraded:
            whole += f"; {self.ungraded} failed, not graded"
        return whole

    @classmethod
    def of_file(cls, earlier: Earlier) -> BatchSummary:
        """The summary of an output file alone (what earlier runs wrote), this run empty."""
        ok = sum(status == "ok" for status in earlier.status.values())
        graded = len(earlier.correct)
        return cls(
            asked=0, ok=0, failed=0, skipped=len(earlier.status), skipped_failed=0,
            failures={}, elapsed=0.0, quota_wait=0.0,
            accuracy=sum(earlier.correct.values()) / graded if graded else None,
            graded=graded, stopped_on_quota=False, file_ok=ok,
            file_failed=len(earlier.status) - ok, ungraded=len(earlier.ungraded),
        )

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


def summarize_output(path: str | Path) -> BatchSummary:
    """The summary of what a batch output file holds (blocking; the file is only read)."""
    output = Output(Path(path))
    output.scan()
    summary = BatchSummary.of_file(output.earlier)
    if any(model is not None for _, model in output.earlier.status):
        models, agreements = compare_output(path)
        summary = dataclasses.replace(summary, models=models, agreements=agreements)
    return summary
