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

import logging
import sys
import traceback
from collections.abc import Sequence

import click

from .._secrets import redact
from ..errors import QVQError
from .ask import ask, info
from .batch import batch
from .history import history_command
from .replica import demo, replica_command
from .running import (
    EXIT_CODES,
    STDOUT_CLOSED,
    Exit,
    Failure,
    Interrupted,
    StdoutClosed,
    exit_code,
    quiet_stdout,
)
from .spaces import spaces

__all__ = ["EXIT_CODES", "cli", "exit_code", "main"]


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


@click.group(
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


for _command in (ask, info, batch, history_command, spaces, demo, replica_command):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="qvq", standalone_mode=False)
    except (Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        click.echo("qvq: interrupted; the job was cancelled", err=True)
        return 130
    except (StdoutClosed, BrokenPipeError):
        quiet_stdout()  # the reader left (| head): end quietly, as Unix tools do
        return STDOUT_CLOSED
    except Failure as exc:
        exc.show()
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
        click.echo(
            f"qvq: internal error: {type(exc).__name__}: {redact(str(exc))}\n"
            f"This is a bug in qvq-gradio {_version()}; please report it with what "
            "'qvq --debug ...' prints for the same command.",
            err=True,
        )
        return 1
    return 0


def _version() -> str:
    from .. import __version__

    return __version__
