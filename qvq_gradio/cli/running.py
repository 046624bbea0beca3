"""Running a command's async work: a fresh event loop, Ctrl-C as cancellation, exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import QVQError

if TYPE_CHECKING:
    from ..protocol import SessionLike

__all__ = [
    "STDOUT_CLOSED",
    "Exit",
    "Failure",
    "Interrupted",
    "StdoutClosed",
    "closing",
    "emit",
    "exit_code",
    "quiet_stdout",
    "run",
    "say",
]

T = TypeVar("T")

#: The exit code when whoever reads our stdout has gone (``qvq ask ... | head -1``): what a
#: shell reports for a Unix tool ended by SIGPIPE.
STDOUT_CLOSED = 141


class Interrupted(Exception):
    """Ctrl-C arrived; the work was cancelled cleanly."""


class StdoutClosed(Exception):
    """Our stdout was closed by its reader: the command ends quietly (its job cancelled)."""


def emit(text: str, *, end: str = "") -> None:
    """Write ``text`` to stdout now; :class:`StdoutClosed` when nobody reads it any more."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed() from None
    except ValueError:  # stdout itself was closed
        raise StdoutClosed() from None
    except OSError as exc:  # a full disk, a device that fails
        raise Failure(f"cannot write to stdout: {exc.strerror or exc}") from None


def say(text: str = "") -> None:
    """A line to stdout, as ``click.echo`` writes it, but a reader that left (``| head``) ends
    the command quietly (click's own handling exits 1) and a failing device is one line."""
    emit(text, end="\n")


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` on a fresh event loop; Ctrl-C cancels it (so streams cancel upstream)."""
    import asyncio  # here: commands that never run a loop (--help) need not import it

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
                raise Interrupted() from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


class Failure(click.ClickException):
    """A command's failure that is no error of the Space: one line ``qvq: ...``, an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"qvq: {self.format_message()}", err=True)


class Exit(Exception):
    """End the command with this exit code (its summary is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@contextlib.asynccontextmanager
async def closing(session: SessionLike) -> AsyncIterator[SessionLike]:
    """The session, closed on the way out whatever happened."""
    try:
        yield session
    finally:
        await session.aclose()


def exit_code(error: BaseException) -> int:
    """The exit code for an error: its class says (``QVQError.exit_code``), else 1."""
    return error.exit_code if isinstance(error, QVQError) else 1
