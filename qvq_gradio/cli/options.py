"""Options every asking command shares (where, how long, the history), and the session they
make."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import click

from ..history import HISTORY_ENV, HOME_ENV, default_path, history_enabled
from ..spaces import SPACE_ENV, parse_spaces

if TYPE_CHECKING:
    pass

__all__ = [
    "BYTES",
    "SECONDS",
    "asking_options",
    "connect_from",
    "rounded",
    "space_option",
    "spaces_of",
    "token_option",
]

class _Seconds(click.FloatRange):
    """Positive, finite seconds: anything else is a usage error (exit 2) before anything
    runs (``nan`` and ``inf`` pass a range check, so they are named here)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return seconds


SECONDS = _Seconds(min=0, min_open=True)


class _Bytes(click.types.IntParamType):
    """A size: a whole number of bytes, or one with a unit (``512KiB``, ``64MiB``, ``1GB``)."""

    name = "bytes"
    _UNITS: Final = MappingProxyType({"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
                                      "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30})

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        number = text.rstrip("KMGBkmgibI")
        unit = text[len(number):].lower()
        if not number.isdigit() or unit not in self._UNITS or int(number) < 1:
            self.fail(f"{value!r} is not a size: give bytes (1048576) or a size like 64MiB.",
                      param, ctx)
        return int(number) * self._UNITS[unit]


BYTES = _Bytes()


space_option = click.option(
    "--space",
    multiple=True,
    help=f"Space URL or owner/name id; repeat it (or separate with commas) to ask several "
    f"as one pool [default: ${SPACE_ENV}, else the QVQ-72B Space].",
)


token_option = click.option(
    "--token",
    help="Hugging Face token, sent to the Spaces named [default: $HF_TOKEN or the saved "
    "login, sent to Hugging Face's hosts only].",
)


shape_option = click.option(
    "--shape",
    type=click.Choice(["qvq", "chat", "blocks"]),
    default=None,
    help="How the Space is asked [default: found from its API; 'qvq info' shows it].",
)


def spaces_of(given: Sequence[str]) -> list[str]:
    """The Spaces named by --space (repeated, or comma-separated), else $QVQ_SPACE."""
    return parse_spaces(list(given) or None)


def rounded(value: float | None) -> float | None:
    """Seconds to the millisecond, for JSON output."""
    return None if value is None else round(value, 3)


def asking_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every asking command shares: where, how long, and the history."""
    for option in reversed(
        [
            space_option,
            token_option,
            click.option("--proxy", help="HTTP(S) proxy URL for every request."),
            click.option("--system", help="A system message sent before the prompt."),
            shape_option,
            click.option(
                "--connect-timeout",
                type=SECONDS,
                default=30.0,
                show_default=True,
                help="Seconds to reach the Space and read its API.",
            ),
            click.option(
                "--idle-timeout",
                type=SECONDS,
                default=120.0,
                show_default=True,
                help="Seconds without new text once generation started.",
            ),
            click.option(
                "--total-timeout", type=SECONDS, default=None, help="Seconds for the whole answer."
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


def connect_from(
    space: Sequence[str],
    token: str | None,
    proxy: str | None,
    connect_timeout: float,
    idle_timeout: float,
    total_timeout: float | None,
    no_history: bool,
    cache: bool,
    shape: str | None = None,
    *,
    named: bool = False,
) -> Any:
    """The session (or pool) the options name; ``named``: one per model name instead (a dict:
    ``NAME=SPEC`` specs under one NAME are one pool, unnamed ones the ``None`` entry)."""
    record = not no_history and history_enabled()
    if cache and not record:
        raise click.UsageError("--cache answers from the history: it cannot go with no history")
    from ..pool import connect, connect_named  # here: it imports the network stack

    options: dict[str, Any] = {
        "token": token,
        "proxy": proxy,
        "connect_timeout": connect_timeout,
        "idle_timeout": idle_timeout,
        "total_timeout": total_timeout,
        # The session owns (and closes) the history it opens: True is the default database.
        "history": True if record else None,
        "cache": cache,
        "shape": shape,
        # A command is a new process: the Space's description kept on disk saves two round
        # trips before the first question is sent (checked against the live config).
        "space_cache": True,
    }
    if named:
        return connect_named(list(space) or None, **options)
    return connect(spaces_of(space), **options)
