"""``qvq batch``: every item of a file or folder, one record each; running again resumes."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .options import asking_options, connect_from, connect_models, session_options
from .running import Exit, Interrupted, closing, run

__all__ = ["batch"]


@click.command(
    short_help="Ask every item of a file or folder; resumes when re-run.",
    epilog="""\b
Examples:
  qvq batch charts.jsonl -o answers.jsonl
  qvq batch table.csv -o answers.csv --concurrency 8 --space a/b,c/d
  qvq batch photos/ --prompt "What is in this picture?" -o photos.jsonl
  qvq batch charts.jsonl -o answers.jsonl --retry-failed
  qvq batch charts.jsonl -o compare.jsonl --compare \\
      --space 'qvq=Qwen/QVQ-72B-preview' \\
      --space 'max=openai+https://dashscope-intl.aliyuncs.com/compatible-mode/v1#qvq-max'""",
)
@click.argument("source", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file: .jsonl (default format) or .csv. Running again resumes it.",
)
@click.option("--prompt", help="The prompt for a folder of images (or rows without one).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Questions in flight at once (a ZeroGPU Space runs a few; more wait in its queue).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Retries of a transient failure (connection, rate limit, no GPU, timeouts).",
)
@click.option(
    "--on-quota",
    type=click.Choice(["wait", "stop"]),
    default="wait",
    show_default=True,
    help="On a quota error: pause the run for its retry time, or stop (resume later).",
)
@click.option("--retry-failed", is_flag=True, help="Ask again the items that failed before.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Ask at most N items.")
@click.option(
    "--order",
    type=click.Choice(["completion", "input"]),
    default="completion",
    show_default=True,
    help="Order of the records in the output.",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Ask every item of every named model (--space NAME=SPEC, twice or more); each record "
    "names its model, and the summary compares them.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr [default: only on a terminal].",
)
@asking_options
def batch(
    source: Path,
    output: Path,
    prompt: str | None,
    concurrency: int,
    retries: int,
    on_quota: str,
    retry_failed: bool,
    limit: int | None,
    order: str,
    compare: bool,
    progress: bool | None,
    space: tuple[str, ...],
    token: str | None,
    proxy: str | None,
    system: str | None,
    shape: str | None,
    connect_timeout: float,
    idle_timeout: float,
    total_timeout: float | None,
    no_history: bool,
    cache: bool,
) -> None:
    """Ask every item of INPUT (a .jsonl or .csv file, or a folder of images with --prompt)
    and write one record per item to OUTPUT; running it again resumes.

    Exit code 0 when every item is ok, 8 when some failed, 5 when stopped on quota, 130 on
    Ctrl-C (in-flight questions are cancelled; run again to resume).
    """
    from .. import batch as batches

    if source.is_dir() and not prompt:
        raise click.UsageError("a folder of images needs --prompt")
    batches.check_not_input(source, output)  # before anything is read or written
    items: Any = source  # read by the batch engine: it names the file when nothing is found
    if system:
        items = (
            dataclasses.replace(i, system=i.system or system)
            for i in batches.read_input(source, prompt=prompt)
        )
    if compare:
        _check_compared(space)
    options = session_options(token, proxy, connect_timeout, idle_timeout, total_timeout,
                              no_history, cache, shape)
    sessions = connect_models(space, options) if compare else {None: connect_from(space, options)}
    show = sys.stderr.isatty() if progress is None else progress
    bar = batches.TqdmProgress(disable=not show)

    async def work() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            for each in sessions.values():
                await stack.enter_async_context(closing(each))
            return await batches.arun(
                items,
                output,
                **({"models": sessions} if compare else {"session": sessions[None]}),
                prompt=None if system else prompt,
                concurrency=concurrency,
                retries=retries,
                on_quota=on_quota,  # type: ignore[arg-type]
                retry_failed=retry_failed,
                limit=limit,
                order=order,  # type: ignore[arg-type]
                progress=bar,
            )

    try:
        result = run(work)
    except Interrupted:
        bar.close()
        written = ""
        if output.exists():
            written = "\n" + batches.summarize_output(output).file_line()
        raise Interrupted(
            "interrupted; the questions in flight were cancelled (run the same command again "
            f"to resume){written}"
        ) from None
    finally:
        bar.close()
    click.echo(str(result.summary), err=True)
    if result.summary.stopped_on_quota:  # (a compared model's lines are in the summary)
        raise Exit(5)
    if not result.summary.all_ok:
        raise Exit(8)


def _check_compared(space: Sequence[str]) -> None:
    """``--compare`` asks named models: every ``--space`` (or ``$QVQ_SPACE``) NAME=SPEC, two
    names at least."""
    from ..spaces import parse_named
    from .options import every_model

    named = parse_named(every_model(space))
    if any(name is None for name, _ in named):
        unnamed = next(spec for name, spec in named if name is None)
        raise click.UsageError(
            f"--compare asks named models: give each --space as NAME=SPEC (not {unnamed!r})"
        )
    if len({name for name, _ in named}) < 2:
        raise click.UsageError("--compare needs two named models at least: --space a=SPEC "
                               "--space b=SPEC")
