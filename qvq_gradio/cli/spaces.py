"""``qvq spaces`` (a table) and ``qvq status`` (each Space in full, its shape first): check
every configured Space at once, without asking anything."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from ..health import probe_all
from .options import SECONDS, shape_option, space_option, spaces_of, token_option
from .running import Failure, run, say

__all__ = ["spaces", "status"]


def _probing(command: Any) -> Any:
    """How a Space is reached by a probe: a proxy, a connect timeout."""
    command = click.option(
        "--connect-timeout",
        type=SECONDS,
        default=30.0,
        show_default=True,
        help="Seconds to reach each Space and read its API.",
    )(command)
    return click.option("--proxy", help="HTTP(S) proxy URL.")(command)


@click.command(
    short_help="Check every configured Space at once.",
    epilog="""\b
Examples:
  qvq spaces
  qvq spaces --space owner/qvq-a --space owner/qvq-b --json""",
)
@space_option
@token_option
@_probing
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per Space.")
def spaces(
    space: tuple[str, ...],
    token: str | None,
    proxy: str | None,
    connect_timeout: float,
    as_json: bool,
) -> None:
    """Check every configured Space at once (exit 0 when at least one is usable)."""
    names = spaces_of(space)
    checks = run(
        lambda: probe_all(names, token=token, proxy=proxy, connect_timeout=connect_timeout)
    )
    if as_json:
        for check in checks:
            say(json.dumps({**dataclasses.asdict(check), "usable": check.usable}))
    else:
        rows = [("SPACE", "REACHABLE", "GRADIO", "PROTOCOL", "SHAPE", "QUEUE", "RTT")]
        for check in checks:
            rows.append(
                (
                    check.space,
                    "yes" if check.reachable else "no",
                    check.gradio_version or "-",
                    check.protocol or "-",
                    (check.shape or "-").split(":")[0] if check.generate_ok is not False
                    else "NO CHAT",
                    "-" if check.queue_size is None else str(check.queue_size),
                    "-" if check.round_trip is None else f"{check.round_trip * 1000:.0f} ms",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            say("  ".join(cells).rstrip())
        for check in checks:
            if check.error:
                click.echo(f"{check.space}: {check.error}", err=True)
    if not any(check.usable for check in checks):
        raise Failure("no Space is usable", code=3)


@click.command(
    short_help="How each Space is asked (its shape) and whether it is up.",
    epilog="""\b
Examples:
  qvq status --space Qwen/QVQ-72B-preview
  qvq status --space http://127.0.0.1:7860 --shape chat""",
)
@space_option
@token_option
@shape_option
@_probing
def status(
    space: tuple[str, ...],
    token: str | None,
    shape: str | None,
    proxy: str | None,
    connect_timeout: float,
) -> None:
    """Show each Space: whether it answers, its Gradio, its queue, and how it is asked (the
    shape found from its API, the endpoint, what reaches which input) — exit 0 when at least
    one can be asked."""
    names = spaces_of(space)
    checks = run(
        lambda: probe_all(
            names, token=token, proxy=proxy, connect_timeout=connect_timeout, shape=shape
        )
    )
    for number, check in enumerate(checks):
        if number:
            say()
        say(f"Space: {check.space}")
        if not check.reachable:
            say(f"Down:  {check.error}")
            continue
        queue = "-" if check.queue_size is None else str(check.queue_size)
        rtt = "-" if check.round_trip is None else f"{check.round_trip * 1000:.0f} ms"
        if check.protocol == "openai":
            say(f"Up:    an OpenAI-compatible endpoint, {rtt}")
        else:
            say(f"Up:    Gradio {check.gradio_version} ({check.protocol}), queue {queue}, {rtt}")
        say(f"Shape: {check.shape}" if check.shape else f"Shape: none ({check.error})")
    if not any(check.usable for check in checks):
        raise Failure("no Space can be asked", code=3)
