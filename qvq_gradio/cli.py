"""The ``qvq`` command: a thin shell over the async core.

    qvq ask "What is in this picture?" -i photo.jpg      # streams the answer to stdout
    echo "What is 17 * 23?" | qvq ask --final-only        # prompt from stdin
    qvq batch charts.jsonl -o answers.jsonl               # many questions; resumes when re-run
    qvq history "chart"                                   # answers recorded before
    qvq info                                             # which Space, and its API
    qvq spaces --space a/b --space c/d                   # check several Spaces at once
    qvq demo                                             # offline: the bundled replica Space
    qvq replica --port 7860                              # serve the replica

Exit codes: 0 success, 1 other failure, 2 bad input or usage, 3 could not reach the Space (or
it is not running), 4 authentication, 5 quota or rate limit (retry later; a batch stopped on
quota), 6 timeout, 7 the Space's app failed, 8 a batch finished with failed items,
130 interrupted (Ctrl-C; the job is cancelled upstream first).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
import click

from .answer import extract_final_answer
from .errors import (
    AppError,
    AuthenticationError,
    GPUUnavailableError,
    InputError,
    ProtocolError,
    QuotaExceededError,
    QVQError,
    RateLimitError,
    SpaceConnectionError,
    SpaceUnavailableError,
    StreamTimeoutError,
)
from .events import Finished, QueueUpdate, SpaceWaking, TextDelta
from .health import probe_all
from .history import HISTORY_ENV, HOME_ENV, History, default_path, history_enabled
from .pool import connect
from .protocol import SessionLike
from .provider import Qwen_QVQ_72B
from .space import SPACE_ENV, Session, parse_spaces

__all__ = ["EXIT_CODES", "cli", "main"]

T = TypeVar("T")

#: Exit code for each error family (the first match wins).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (InputError, 2),
    (SpaceConnectionError, 3),
    (SpaceUnavailableError, 3),
    (AuthenticationError, 4),
    (QuotaExceededError, 5),
    (GPUUnavailableError, 5),
    (RateLimitError, 5),
    (StreamTimeoutError, 6),
    (AppError, 7),
    (ProtocolError, 7),
    (QVQError, 1),
)
_FAIL_CHOICES = ("before", "mid", "quota", "hang", "echo-token")
_LAYOUTS = ("qvq", "reordered", "text-only")
# Timeouts: positive seconds, refused by click (usage error, exit 2) before anything runs.
_SECONDS = click.FloatRange(min=0, min_open=True)
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class _Interrupted(Exception):
    """Ctrl-C arrived; the work was cancelled cleanly."""


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` on a fresh event loop; Ctrl-C cancels it (so streams cancel upstream)."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        interrupted: list[bool] = []

        def on_sigint() -> None:
            interrupted.append(True)
            task.cancel()

        # Not possible outside the main thread or on Windows: Ctrl-C then ends the process.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await work()
        except asyncio.CancelledError:
            if interrupted:
                raise _Interrupted() from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


class _Status:
    """A one-line queue status on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.live = stream.isatty()
        self._frames = itertools.cycle(_SPINNER)
        self._line: str | None = None  # what is on screen now, without the spinner

    def queued(self, update: QueueUpdate) -> None:
        if not self.live:
            return
        where = "" if update.position is None else f": position {update.position + 1}"
        if update.queue_size:
            where += f" of {update.queue_size}"
        eta = "" if update.eta is None else f", about {update.eta:.0f} s"
        self._line = f"waiting in the Space's queue{where}{eta}"
        self.tick()

    def tick(self) -> None:
        """Redraw the line with the next spinner frame (it turns between the Space's updates)."""
        if self._line is not None:
            self._stream.write(f"\r\x1b[K{next(self._frames)} {self._line}")
            self._stream.flush()

    async def spin(self, period: float = 0.1) -> None:
        while True:
            await anyio.sleep(period)
            self.tick()

    def waking(self, event: SpaceWaking) -> None:
        if self.live:
            self._line = f"{event.space} is {event.state.lower()}; waiting for it to start"
            self.tick()

    def clear(self) -> None:
        if self._line is not None:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._line = None


_space_option = click.option(
    "--space",
    multiple=True,
    help=f"Space URL or owner/name id; repeat it (or separate with commas) to ask several "
    f"as one pool [default: ${SPACE_ENV}, else the QVQ-72B Space].",
)


def _spaces(given: Sequence[str]) -> list[str]:
    """The Spaces named by --space (repeated, or comma-separated), else $QVQ_SPACE."""
    return parse_spaces(list(given) or None)


@contextlib.asynccontextmanager
async def _closing(session: SessionLike) -> AsyncIterator[SessionLike]:
    try:
        yield session
    finally:
        await session.aclose()


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _read_prompt(prompt: str | None, stdin: Any) -> str:
    if prompt == "-" or (prompt is None and not stdin.isatty()):
        text = str(stdin.read())
        if not text.strip():
            raise click.UsageError("the prompt read from stdin is empty")
        return text.rstrip("\n")
    if prompt is None:
        raise click.UsageError("give a prompt, '-' to read it from stdin, or pipe it in")
    return prompt


def _read_images(images: Sequence[str], prompt_from_stdin: bool, stdin: Any) -> list[Any]:
    items: list[Any] = []
    for image in images:
        if image == "-":
            if prompt_from_stdin:
                raise click.UsageError("stdin cannot hold both the prompt and an image")
            items.append(stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read())
        else:
            items.append(image)
    return items


@click.group(
    epilog="Exit codes: 0 ok, 1 other, 2 input, 3 connection, 4 auth, 5 quota/rate "
    "limit, 6 timeout, 7 the Space's app failed, 8 a batch had failed items, 130 Ctrl-C."
)
@click.option("--debug", is_flag=True, help="Log debug output and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Ask Qwen's QVQ-72B vision-reasoning Space questions about images."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)


def _asking_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every asking command shares: where, how long, and the history."""
    for option in reversed(
        [
            _space_option,
            click.option(
                "--token", envvar="HF_TOKEN", help="Hugging Face token [default: $HF_TOKEN]."
            ),
            click.option("--proxy", help="HTTP(S) proxy URL for every request."),
            click.option("--system", help="A system message sent before the prompt."),
            click.option("--connect-timeout", type=_SECONDS, default=30.0, show_default=True),
            click.option(
                "--idle-timeout",
                type=_SECONDS,
                default=120.0,
                show_default=True,
                help="Seconds without new text once generation started.",
            ),
            click.option(
                "--total-timeout", type=_SECONDS, default=None, help="Seconds for the whole answer."
            ),
            click.option(
                "--no-history",
                is_flag=True,
                help=f"Do not record in the answer history (also: {HISTORY_ENV}=0). Recorded by "
                f"default in {default_path()} (${HOME_ENV} moves it).",
            ),
            click.option(
                "--cache",
                is_flag=True,
                help="Answer a request identical to a recorded one (same Space, prompt and "
                "image bytes) from the history, without asking the Space.",
            ),
        ]
    ):
        command = option(command)
    return command


def _connect(
    space: Sequence[str],
    token: str | None,
    proxy: str | None,
    connect_timeout: float,
    idle_timeout: float,
    total_timeout: float | None,
    no_history: bool,
    cache: bool,
) -> SessionLike:
    record = not no_history and history_enabled()
    if cache and not record:
        raise click.UsageError("--cache answers from the history: it cannot go with no history")
    history = History() if record else None
    return connect(
        _spaces(space),
        token=token,
        proxy=proxy,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        total_timeout=total_timeout,
        history=history,
        cache=cache,
    )


@cli.command()
@click.argument("prompt", required=False)
@click.option(
    "-i",
    "--image",
    "images",
    multiple=True,
    help="An image: a path, an http(s) URL, or - for stdin. Repeatable.",
)
@_asking_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (text, final answer, timings, Space) at the end.",
)
@click.option("--final-only", is_flag=True, help="Print only QVQ's extracted final answer.")
def ask(
    prompt: str | None,
    images: tuple[str, ...],
    space: tuple[str, ...],
    token: str | None,
    proxy: str | None,
    system: str | None,
    connect_timeout: float,
    idle_timeout: float,
    total_timeout: float | None,
    no_history: bool,
    cache: bool,
    as_json: bool,
    final_only: bool,
) -> None:
    """Ask PROMPT (or '-' / piped stdin) and stream the answer to stdout."""
    stdin = sys.stdin
    from_stdin = prompt == "-" or (prompt is None and not stdin.isatty())
    text = _read_prompt(prompt, stdin)
    media = _read_images(images, from_stdin, stdin)
    messages = [
        *([{"role": "system", "content": system}] if system else []),
        {"role": "user", "content": text},
    ]
    streaming = not (as_json or final_only)
    status = _Status(sys.stderr)

    session = _connect(
        space, token, proxy, connect_timeout, idle_timeout, total_timeout, no_history, cache
    )

    async def work() -> Finished:
        finished: Finished | None = None
        error: Exception | None = None
        async with _closing(session), anyio.create_task_group() as spinner:
            if status.live:
                spinner.start_soon(status.spin)
            try:
                async for event in session.events(messages, media=media):
                    if isinstance(event, QueueUpdate):
                        status.queued(event)
                    elif isinstance(event, SpaceWaking):
                        status.waking(event)
                    elif isinstance(event, TextDelta):
                        status.clear()
                        if streaming:
                            sys.stdout.write(event.text)
                            sys.stdout.flush()
                    elif isinstance(event, Finished):
                        finished = event
            except Exception as exc:  # re-raised below, not wrapped in the task group's group
                error = exc
            finally:
                spinner.cancel_scope.cancel()
        if error is not None:
            raise error
        if finished is None:  # pragma: no cover - events always end with Finished
            raise ProtocolError("the stream ended without an answer")
        return finished

    try:
        finished = _run(work)
    finally:
        status.clear()
    final = extract_final_answer(finished.text)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "text": finished.text,
                    "final_answer": final,
                    "space": finished.space,
                    "elapsed": _seconds(finished.elapsed),
                    "time_to_first_token": _seconds(finished.time_to_first_token),
                    "queue_wait": _seconds(finished.queue_wait),
                },
                ensure_ascii=False,
            )
        )
    elif final_only:
        if final is None:
            raise click.ClickException(
                "the answer states no final answer (see it without --final-only)"
            )
        click.echo(final)
    else:
        click.echo()


@cli.command()
@click.option("--space", help=f"Space URL or id [default: ${SPACE_ENV}].")
@click.option("--token", envvar="HF_TOKEN", help="Hugging Face token [default: $HF_TOKEN].")
@click.option("--proxy", help="HTTP(S) proxy URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the API description as JSON.")
def info(space: str | None, token: str | None, proxy: str | None, as_json: bool) -> None:
    """Show which Space is used and its API, without running a job."""
    named = _spaces([space] if space else [])
    if len(named) > 1:
        raise click.UsageError("info shows one Space; use 'qvq spaces' for several")

    async def work() -> tuple[str, dict[str, Any]]:
        async with Session(named[0], token=token, proxy=proxy) as session:
            return session.space, await session.api_info()

    where, api = _run(work)
    if as_json:
        click.echo(json.dumps({"space": where, "api": api}, indent=2))
        return
    click.echo(f"Space: {where}")
    for name, endpoint in api.get("named_endpoints", {}).items():
        click.echo(f"Endpoint {name}")
        for param in endpoint.get("parameters", []):
            kind = param.get("python_type", {}).get("type", "?")
            default = (
                ""
                if not param.get("parameter_has_default")
                else (f" = {param.get('parameter_default')!r}")
            )
            click.echo(
                f"  {param.get('parameter_name')}: {kind}{default}  "
                f"[{param.get('component')} {param.get('label', '')!r}]"
            )
        for ret in endpoint.get("returns", []):
            click.echo(
                f"  returns: {ret.get('python_type', {}).get('type', '?')}  "
                f"[{ret.get('component')} {ret.get('label', '')!r}]"
            )


@cli.command()
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
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr [default: only on a terminal].",
)
@_asking_options
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
    progress: bool | None,
    space: tuple[str, ...],
    token: str | None,
    proxy: str | None,
    system: str | None,
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
    from . import batch as batches

    if source.is_dir() and not prompt:
        raise click.UsageError("a folder of images needs --prompt")
    items: Any = batches.read_input(source, prompt=prompt)
    if system:
        items = (dataclasses.replace(i, system=i.system or system) for i in items)
    session = _connect(
        space, token, proxy, connect_timeout, idle_timeout, total_timeout, no_history, cache
    )
    show = sys.stderr.isatty() if progress is None else progress
    bar = batches.TqdmProgress(disable=not show)

    async def work() -> Any:
        async with _closing(session):
            return await batches.arun(
                items,
                output,
                session=session,
                concurrency=concurrency,
                retries=retries,
                on_quota=on_quota,  # type: ignore[arg-type]
                retry_failed=retry_failed,
                limit=limit,
                order=order,  # type: ignore[arg-type]
                progress=bar,
            )

    try:
        result = _run(work)
    finally:
        bar.close()
    click.echo(str(result.summary), err=True)
    if result.summary.stopped_on_quota:
        raise _Exit(5)
    if not result.summary.all_ok:
        raise _Exit(8)


class _Exit(Exception):
    """End the command with this exit code (its summary is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@cli.command(name="history")
@click.argument("words", metavar="[SEARCH | show ID]", nargs=-1)
@click.option("-n", "limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON: one object per answer.")
def history_command(words: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List recorded answers, newest first (those whose prompt, answer or Space contains
    SEARCH); 'qvq history show ID' prints one in full.

    Recorded by 'qvq ask' and 'qvq batch' unless --no-history or QVQ_HISTORY=0.
    """
    if words[:1] == ("show",):
        if len(words) != 2 or not words[1].isdigit():
            raise click.UsageError("give one answer id: qvq history show ID")
        _show_row(int(words[1]), as_json)
        return
    with History() as store:
        rows = store.search(" ".join(words) or None, limit=limit)
    for row in rows:
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(row), ensure_ascii=False))
            continue
        outcome = row.final_answer or ("" if row.ok else f"{row.error_type}")
        prompt = " ".join(row.prompt.split())
        click.echo(
            f"{row.id:>6}  {row.time[:19].replace('T', ' ')}  {row.space}  "
            f"{prompt[:60]}  -> {outcome[:40]}"
        )


def _show_row(row_id: int, as_json: bool) -> None:
    with History() as store:
        row = store.get(row_id)
    if row is None:
        raise click.ClickException(f"no answer {row_id} in {default_path()}")
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(row), ensure_ascii=False))
        return
    click.echo(f"# {row.id}  {row.time}  {row.space}" + ("  (from the cache)" * row.from_cache))
    click.echo(f"Prompt: {row.prompt}")
    if row.image_sha256:
        click.echo(f"Image: {row.image_name} ({row.image_size} bytes, sha256 {row.image_sha256})")
    if row.error_type:
        click.echo(f"Error: {row.error_type}: {row.error_message}")
    click.echo("")
    click.echo(row.text)


@cli.command()
@_space_option
@click.option("--token", envvar="HF_TOKEN", help="Hugging Face token [default: $HF_TOKEN].")
@click.option("--proxy", help="HTTP(S) proxy URL.")
@click.option("--connect-timeout", type=_SECONDS, default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per Space.")
def spaces(
    space: tuple[str, ...],
    token: str | None,
    proxy: str | None,
    connect_timeout: float,
    as_json: bool,
) -> None:
    """Check every configured Space at once (exit 0 when at least one is usable)."""
    names = _spaces(space)
    checks = _run(
        lambda: probe_all(names, token=token, proxy=proxy, connect_timeout=connect_timeout)
    )
    if as_json:
        for check in checks:
            click.echo(json.dumps({**dataclasses.asdict(check), "usable": check.usable}))
    else:
        rows = [("SPACE", "REACHABLE", "GRADIO", "PROTOCOL", "/generate", "QUEUE", "RTT")]
        for check in checks:
            rows.append(
                (
                    check.space,
                    "yes" if check.reachable else "no",
                    check.gradio_version or "-",
                    check.protocol or "-",
                    {True: "[image, text]", False: "WRONG", None: "-"}[check.generate_ok],
                    "-" if check.queue_size is None else str(check.queue_size),
                    "-" if check.round_trip is None else f"{check.round_trip * 1000:.0f} ms",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            click.echo("  ".join(cells).rstrip())
        for check in checks:
            if check.error:
                click.echo(f"{check.space}: {check.error}", err=True)
    if not any(check.usable for check in checks):
        raise _NoSpace()


class _NoSpace(click.ClickException):
    exit_code = 3

    def __init__(self) -> None:
        super().__init__("no Space is usable")


def _need_replica() -> Any:
    try:
        from . import replica
    except ImportError as exc:  # the replica extra is not installed; the message says which
        raise click.ClickException(str(exc)) from exc
    return replica


@cli.command()
@click.option("--tokens", default=60, show_default=True, help="Words the replica generates.")
@click.option("--delay", default=0.02, show_default=True, help="Seconds between two words.")
def demo(tokens: int, delay: float) -> None:
    """Stream an answer about a generated image from the bundled replica (works offline)."""
    replica = _need_replica()
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 200), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 160, 160), fill=(220, 40, 40))
    draw.rectangle((190, 60, 290, 160), fill=(40, 90, 220))
    config = replica.ReplicaConfig(tokens=tokens, delay=delay)
    with replica.Replica(config) as server:
        click.echo(f"[replica Space on {server.url}]", err=True)
        messages = [{"role": "user", "content": "What shapes are in this picture?"}]

        async def work() -> None:
            stream = Qwen_QVQ_72B.create_async_generator(
                model="qwen-qvq-72b-preview", messages=messages, media=[image], space=server.url
            )
            async for delta in stream:
                sys.stdout.write(delta)
                sys.stdout.flush()

        _run(work)
        click.echo()


@cli.command(name="replica")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=7860, show_default=True, help="0 takes a free port.")
@click.option("--tokens", default=40, show_default=True)
@click.option("--delay", default=0.01, show_default=True)
@click.option("--concurrency", default=16, show_default=True)
@click.option("--fail", type=click.Choice(_FAIL_CHOICES), default=None)
@click.option("--fail-after", default=5, show_default=True)
@click.option("--max-queue", type=int, default=None)
@click.option("--require-token", default=None, help="Refuse requests without this HF token.")
@click.option(
    "--quota-budget",
    type=int,
    default=None,
    help="Requests served before quota errors start (then --quota-retry seconds of them).",
)
@click.option(
    "--quota-retry",
    type=float,
    default=588.0,
    show_default=True,
    help="Seconds a quota error asks to wait.",
)
@click.option(
    "--layout",
    type=click.Choice(_LAYOUTS),
    default="qvq",
    show_default=True,
    help="The app's functions: as the QVQ Space, or changed as by a redeploy.",
)
def replica_command(
    host: str,
    port: int,
    tokens: int,
    delay: float,
    concurrency: int,
    fail: str | None,
    fail_after: int,
    max_queue: int | None,
    require_token: str | None,
    quota_budget: int | None,
    quota_retry: float,
    layout: str,
) -> None:
    """Serve the bundled replica of the QVQ Space (for offline tests)."""
    replica = _need_replica()
    config = replica.ReplicaConfig(
        tokens=tokens,
        delay=delay,
        concurrency=concurrency,
        fail=fail,
        fail_after=fail_after,
        max_queue=max_queue,
        token=require_token,
        layout=layout,
        quota_budget=quota_budget,
        quota_retry=quota_retry,
    )

    def ready(url: str) -> None:
        click.echo(f"Replica of the QVQ-72B Space running on {url}  (Ctrl-C to stop)")
        click.echo(f"Point qvq-gradio at it with: export {SPACE_ENV}={url}")
        sys.stdout.flush()

    replica.serve(config, host, port, ready=ready)


def exit_code(error: BaseException) -> int:
    """The exit code for an error (see the module docstring)."""
    for family, code in EXIT_CODES:
        if isinstance(error, family):
            return code
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="qvq", standalone_mode=False)
    except (_Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        click.echo("qvq: interrupted; the job was cancelled", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except _Exit as exc:
        return exc.code
    except QVQError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"qvq: {type(exc).__name__}: {exc}", err=True)
        return exit_code(exc)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
