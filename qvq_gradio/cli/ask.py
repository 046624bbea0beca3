"""``qvq ask`` (stream one answer to stdout) and ``qvq info`` (which Space, and its API)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

import anyio
import click

from ..answer import extract_final_answer
from ..endpoints import is_endpoint
from ..errors import ProtocolError
from ..events import Finished, QueueUpdate, ReasoningDelta, SpaceWaking, TextDelta
from ..session import Session
from ..spaces import SPACE_ENV
from .options import (
    asking_options,
    connect_from,
    models_option,
    rounded,
    session_options,
    shape_option,
    spaces_of,
    token_option,
)
from .running import Failure, closing, emit, run, say
from .status import StatusLine

__all__ = ["ask", "info"]


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


@click.command(
    short_help="Ask one question; stream the answer to stdout.",
    epilog="""\b
Examples:
  qvq ask "What is in this picture?" -i photo.jpg
  qvq ask "Compare them." -i a.png -i https://example.org/b.jpg
  echo "What is 17 * 23?" | qvq ask --final-only
  qvq ask "Describe it." -i - < photo.jpg
  qvq ask "What is in this chart?" -i chart.png --json --cache""",
)
@click.argument("prompt", required=False)
@click.option(
    "-i",
    "--image",
    "images",
    multiple=True,
    help="An image: a path, an http(s) URL, or - for stdin. Repeatable.",
)
@asking_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (text, final answer, timings, Space) at the end.",
)
@click.option("--final-only", is_flag=True, help="Print only QVQ's extracted final answer.")
@click.option("--temperature", type=click.FloatRange(0, 100), default=None,
              help="Sent to the Space's temperature input, if it has one.")
@click.option("--max-tokens", type=click.IntRange(1), default=None,
              help="Sent to the Space's max-tokens input, if it has one.")
@click.option("--top-p", type=click.FloatRange(0, 1), default=None,
              help="Sent to the Space's top_p input, if it has one.")
def ask(
    prompt: str | None,
    images: tuple[str, ...],
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
    as_json: bool,
    final_only: bool,
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
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
    given = {"temperature": temperature, "max_tokens": max_tokens, "top_p": top_p}
    sampling: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    status = StatusLine(sys.stderr)

    session = connect_from(space, session_options(
        token, proxy, connect_timeout, idle_timeout, total_timeout, no_history, cache, shape
    ))

    thinking = _Thinking(sys.stdout.isatty())

    async def work() -> Finished:
        finished: Finished | None = None
        error: Exception | None = None
        async with closing(session), anyio.create_task_group() as spinner:
            if status.live:
                spinner.start_soon(status.spin)
            try:
                events = session.events(messages, media=media, **sampling)
                async with aclosing(events):  # stopping early (a closed stdout) cancels now
                    async for event in events:
                        if isinstance(event, QueueUpdate):
                            status.queued(event)
                        elif isinstance(event, SpaceWaking):
                            status.waking(event)
                        elif isinstance(event, ReasoningDelta):
                            status.clear()
                            if streaming:
                                emit(thinking.more(event.text))
                        elif isinstance(event, TextDelta):
                            status.clear()
                            if streaming:
                                emit(thinking.end() + event.text)
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
        finished = run(work)
    finally:
        status.clear()
    final = extract_final_answer(finished.text)
    if final_only and final is None:
        raise Failure("the answer states no final answer (see it without --final-only)")
    if as_json:
        say(
            json.dumps(
                {
                    # --final-only: the final answer is the text, as without --json
                    "text": final if final_only else finished.text,
                    "final_answer": final,
                    "reasoning": finished.reasoning,
                    "space": finished.space,
                    "shape": finished.shape,
                    "applied": dict(finished.applied),
                    "model": finished.model,
                    "usage": dict(finished.usage) if finished.usage else None,
                    "from_cache": finished.cached,
                    "elapsed": rounded(finished.elapsed),
                    "time_to_first_token": rounded(finished.time_to_first_token),
                    "queue_wait": rounded(finished.queue_wait),
                },
                ensure_ascii=False,
            )
        )
    elif final_only:
        assert final is not None
        say(final)
    else:
        say(thinking.end())


class _Thinking:
    """A Space's thinking shown before its answer: dimmed on a terminal, plain when piped,
    a blank line between the two."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.open = False

    def more(self, text: str) -> str:
        start = "" if self.open else ("\x1b[2m" if self.terminal else "")
        self.open = True
        return start + text

    def end(self) -> str:
        if not self.open:
            return ""
        self.open = False
        return ("\x1b[0m" if self.terminal else "") + "\n\n"


@click.command(
    short_help="Show which Space is used and its API.",
    epilog="""\b
Examples:
  qvq info
  qvq info --space owner/qvq-copy --json""",
)
@click.option(
    "--space",
    help=f"Space URL or owner/name id [default: ${SPACE_ENV}, else the QVQ-72B Space].",
)
@models_option
@token_option
@click.option("--proxy", help="HTTP(S) proxy URL.")
@shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the API description as JSON.")
def info(
    space: str | None, token: str | None, proxy: str | None, shape: str | None, as_json: bool
) -> None:
    """Show which Space is used and its API, without running a job."""
    named = spaces_of([space] if space else [])
    if len(named) > 1:
        raise click.UsageError("info shows one Space; use 'qvq spaces' for several")
    if is_endpoint(named[0]):
        _endpoint_info(named[0], proxy, as_json)
        return

    async def work() -> tuple[str, str, dict[str, Any]]:
        async with Session(named[0], token=token, proxy=proxy, shape=shape) as session:
            api = await session.api_info()
            try:
                found = await session.describe_shape()
            except ProtocolError as error:
                found = f"none: {error}"
            return session.space, found, api

    where, found, api = run(work)
    if as_json:
        say(json.dumps({"space": where, "shape": found, "api": api}, indent=2))
        return
    say(f"Space: {where}")
    say(f"Shape: {found}")
    for name, endpoint in api.get("named_endpoints", {}).items():
        say(f"Endpoint {name}")
        for param in endpoint.get("parameters", []):
            kind = param.get("python_type", {}).get("type", "?")
            default = (
                ""
                if not param.get("parameter_has_default")
                else (f" = {param.get('parameter_default')!r}")
            )
            say(
                f"  {param.get('parameter_name')}: {kind}{default}  "
                f"[{param.get('component')} {param.get('label', '')!r}]"
            )
        for ret in endpoint.get("returns", []):
            say(
                f"  returns: {ret.get('python_type', {}).get('type', '?')}  "
                f"[{ret.get('component')} {ret.get('label', '')!r}]"
            )


def _endpoint_info(spec: str, proxy: str | None, as_json: bool) -> None:
    """``qvq info`` for an OpenAI-compatible endpoint: how it is asked, the models it lists."""
    from ..upstreams.openai import OpenAIUpstream

    upstream = OpenAIUpstream(spec, proxy=proxy)

    async def work() -> list[str]:
        try:
            return await upstream.models()
        finally:
            await upstream.aclose()

    listed = run(work)
    if as_json:
        say(json.dumps({"space": upstream.name, "shape": upstream.describe(), "models": listed},
                       indent=2))
        return
    say(f"Endpoint: {upstream.name}")
    say(f"Shape: {upstream.describe()}")
    say(f"Models it lists: {', '.join(listed) if listed else '(none)'}")
