"""What a batch run returns: its summary, and the output's records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .output import read_output

__all__ = ["BatchResult", "BatchSummary"]


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
