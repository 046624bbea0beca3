"""The ``qvq`` command: a thin shell over the async core, one module per command group.

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

    ask.py      ask, info           batch.py    batch          history.py  history
    spaces.py   spaces              replica.py  demo, replica
    options.py  the options every asking command shares, and the session they make
    status.py   the queue status line       running.py  the event loop, Ctrl-C, exit codes
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Final

import click

from .._secrets import redact
from .._tls import warm_up
from ..errors import QVQError
from .running import (
    STDOUT_CLOSED,
    Exit,
    Failure,
    Interrupted,
    StdoutClosed,
    exit_code,
    quiet_stdout,
)

__all__ = ["COMMANDS", "cli", "exit_code", "main"]


_EXAMPLES = """\b
Examples:
  qvq ask "What is in this picture?" -i photo.jpg
  echo "What is 17 * 23?" | qvq ask --final-only
  qvq batch charts.jsonl -o answers.jsonl
  qvq history chart
  qvq demo

\b
Exit codes: 0 ok, 1 other, 2 input, 3 connection, 4 auth, 5 quota/rate
limit, 6 timeout, 7 the Space's app failed, 8 a batch had failed items,
130 Ctrl-C, 141 stdout closed by its reader."""


#: Each command: (module, function, the one-line help ``qvq --help`` lists). A command's module
#: is imported only when it runs (or its own ``--help`` is asked for), so ``qvq --help``,
#: ``--version`` and ``history`` never import httpx or gradio_client. tests/test_cli.py checks
#: each line against the command's own help.
#: The commands that talk to a Space (over HTTPS, usually).
_ASKING: Final = frozenset({"ask", "batch", "info", "serve", "spaces", "status"})

COMMANDS: dict[str, tuple[str, str, str]] = {
    "ask": ("ask", "ask", "Ask one question; stream the answer to stdout."),
    "batch": ("batch", "batch", "Ask every item of a file or folder; resumes when re-run."),
    "demo": ("replica", "demo", "Stream an answer from the bundled replica (offline)."),
    "history": ("history", "history_command", "List or show the answers recorded before."),
    "info": ("ask", "info", "Show which Space is used and its API."),
    "replica": ("replica", "replica_command", "Serve the bundled replica of the QVQ Space."),
    "serve": (
        "serve", "serve", "Serve the Space as an OpenAI-compatible API (/v1/chat/completions)."
    ),
    "spaces": ("spaces", "spaces", "Check every configured Space at once."),
    "status": ("spaces", "status", "How each Space is asked (its shape) and whether it is up."),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported when used (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, name, _ = entry
        command = getattr(importlib.import_module(f".{module}", __name__), name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup,
    epilog=_EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(None, "-V", "--version", package_name="qvq-gradio", prog_name="qvq")
@click.option("--debug", is_flag=True, help="Log debug output and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Ask Qwen's QVQ-72B vision-reasoning Space questions about images."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    # No telemetry from the command, as none from gradio_client (QVQClient): huggingface_hub's
    # user agent would otherwise detect "AI agents" from a list it fetches from the Hub before
    # the first request to any Space (once a day; in every process when the Hub cannot be
    # reached, for up to 3 s). Read when huggingface_hub is imported, which no command has
    # done yet; a value the user set wins.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    command = next((arg for arg in args if not arg.startswith("-")), None)
    if command in _ASKING:
        warm_up()  # the CA bundle loads while the command's modules are imported
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="qvq", standalone_mode=False)
    except (Interrupted, KeyboardInterrupt, click.exceptions.Abort) as exc:
        said = str(exc) if isinstance(exc, Interrupted) else ""
        click.echo(f"qvq: {said or 'interrupted; the job was cancelled'}", err=True)
        return 130
    except (StdoutClosed, BrokenPipeError):
        quiet_stdout()  # the reader left (| head): end quietly, as Unix tools do
        return STDOUT_CLOSED
    except Failure as exc:
        exc.show()
        _settle_stdout()
        return exc.code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Exit as exc:
        return exc.code
    except QVQError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"qvq: {type(exc).__name__}: {exc}", err=True)
        return exit_code(exc)
    except Exception as exc:  # anything else is our bug: say so in one line, and where to go
        if debug:
            traceback.print_exc()
        if _environmental(exc):
            # What the machine did (a full disk, a device that fails, a file in the way, text
            # that is not UTF-8, a damaged database): one line; --debug shows where.
            click.echo(f"qvq: {_environment(exc)}", err=True)
            _settle_stdout()
            return 1
        click.echo(
            f"qvq: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
            f"This is a bug in qvq-gradio {_version()}; please report it with what "
            "'qvq --debug ...' prints for the same command.",
            err=True,
        )
        return 1
    return 0


def _environmental(exc: BaseException) -> bool:
    """An error of the machine, not of this program (sqlite3's errors included, by module:
    importing sqlite3 here would slow every command down)."""
    return isinstance(exc, (OSError, UnicodeError)) or type(exc).__module__ == "sqlite3"


def _environment(exc: BaseException) -> str:
    """One line for an error the environment caused."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return f"{type(exc).__name__}: {redact(str(exc))}"


def _settle_stdout() -> None:
    """A stdout that cannot be written (a full disk, a broken device) is pointed at /dev/null,
    so the interpreter's last flush does not fail again; one that works keeps what it holds."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        quiet_stdout()


def _version() -> str:
    from .. import __version__

    return __version__
