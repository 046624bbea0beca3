"""Options every asking command shares (where, how long, the history), and the session they
make."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import click

from ..history import HISTORY_ENV, HOME_ENV, default_path, history_enabled
from ..models import ModelEntry, expand, load_models
from ..spaces import SPACE_ENV, parse_named, parse_spaces, split_name

if TYPE_CHECKING:
    from ..protocol import SessionLike

__all__ = [
    "BYTES",
    "SECONDS",
    "asking_options",
    "connect_from",
    "connect_models",
    "every_model",
    "models",
    "models_option",
    "named_specs",
    "rounded",
    "session_options",
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


_META = "qvq.models"  #: where the --models path and the file's models are kept (ctx.meta)


def _remember_models(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
    ctx.meta[_META + ".path"] = value


models_option = click.option(
    "--models",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    expose_value=False,
    callback=_remember_models,
    help="A models file naming models (TOML) [default: models.toml beside the history, "
    "if there].",
)


def models() -> dict[str, ModelEntry]:
    """The models file's entries (--models, else the default file; read once per command)."""
    ctx = click.get_current_context(silent=True)
    meta: dict[str, Any] = ctx.meta if ctx is not None else {}
    if _META not in meta:
        meta[_META] = load_models(meta.get(_META + ".path"))
    return meta[_META]  # type: ignore[no-any-return]


def space_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--space`` (repeated) and ``--models``."""
    command = click.option(
        "--space",
        multiple=True,
        help=f"Space URL, owner/name id, openai+BASE_URL#MODEL endpoint, or a model named in "
        f"the models file (NAME=SPEC names one); repeat it (or separate with commas) to ask "
        f"several as one pool [default: ${SPACE_ENV}, else the QVQ-72B Space].",
    )(command)
    return models_option(command)


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


def _given(given: Sequence[str], *, every: bool = False) -> list[str] | None:
    """What names the upstreams: --space; else ``$QVQ_SPACE`` when it names a model of the
    models file; else (``every``, with no ``$QVQ_SPACE``) every model of the file; else None
    (the variable, read and checked where it is used, or the default Space)."""
    table = models()
    if given:
        return list(given)
    from_env = os.environ.get(SPACE_ENV, "")
    if table and any(split_name(part)[1] in table for part in from_env.split(",")):
        return [from_env]
    if every and not from_env and table:
        return list(table)
    return None


def named_specs(given: Sequence[str]) -> list[str] | None:
    """--space's specs with the models file's names expanded (``NAME=SPEC``); see
    :func:`_given` for the defaults."""
    raw = _given(given)
    return None if raw is None else expand(raw, models())


def every_model(given: Sequence[str]) -> list[str] | None:
    """:func:`named_specs`, or with no --space and no $QVQ_SPACE every model of the models
    file (what ``qvq serve`` serves and ``qvq batch --compare`` compares then)."""
    raw = _given(given, every=True)
    return None if raw is None else expand(raw, models())


def spaces_of(given: Sequence[str]) -> list[str]:
    """The Spaces named by --space (repeated, or comma-separated; models of the models file
    expanded), else $QVQ_SPACE."""
    return parse_spaces(named_specs(given))


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


def session_options(
    token: str | None,
    proxy: str | None,
    connect_timeout: float,
    idle_timeout: float,
    total_timeout: float | None,
    no_history: bool,
    cache: bool,
    shape: str | None,
) -> dict[str, Any]:
    """What every session a command makes is given (for :func:`connect_from` and
    :func:`connect_models`)."""
    record = not no_history and history_enabled()
    if cache and not record:
        raise click.UsageError("--cache answers from the history: it cannot go with no history")
    return {
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


def connect_from(space: Sequence[str], options: dict[str, Any]) -> SessionLike:
    """The session (or pool) --space names, made with ``options`` (:func:`session_options`):
    one model of the models file with its settings, or the specs given (several names are
    one pool, as given)."""
    from ..pool import connect, connect_named  # here: it imports the network stack

    if len({name for name, _ in parse_named(named_specs(space))}) > 1:
        return connect(spaces_of(space), **options)
    (session,) = connect_named(_given(space), models=models(), **options).values()
    return session


def connect_models(space: Sequence[str], options: dict[str, Any]) -> dict[str | None, SessionLike]:
    """One session (or pool) per model name --space names (``NAME=SPEC`` specs under one NAME
    are one pool, unnamed ones the ``None`` entry), made with ``options``; with no --space and
    no $QVQ_SPACE, every model of the models file."""
    from ..pool import connect_named  # here: it imports the network stack

    return connect_named(_given(space, every=True), models=models(), **options)
