"""Running a command's async work: a fresh event loop, Ctrl-C as cancellation, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..errors import (
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
from ..protocol import SessionLike

__all__ = ["EXIT_CODES", "Exit", "Interrupted", "closing", "exit_code", "run"]

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


class Interrupted(Exception):
    """Ctrl-C arrived; the work was cancelled cleanly."""


def run(work: Callable[[], Awaitable[T]]) -> T:
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
                raise Interrupted() from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


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
    """The exit code for an error (see the ``qvq`` command's docstring)."""
    for family, code in EXIT_CODES:
        if isinstance(error, family):
            return code
    return 1
