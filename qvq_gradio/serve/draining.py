"""The server stopping: what each request in flight is owed, and uvicorn told to give it.

When the server is asked to stop (SIGINT, SIGTERM) it stops accepting connections, then
:meth:`Draining.begin` runs: a request still waiting for a slot is answered 503 at once; an answer
already running gets ``grace`` seconds to finish; after that its Space job is cancelled and it
ends as an error (a stream: an error chunk and ``data: [DONE]``; a whole answer: a 503). A
request that arrives on a kept-alive connection meanwhile is a 503 too. Nothing ends by
uvicorn cancelling a task, so no traceback is printed, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
from collections.abc import Iterator
from typing import Any, Final

import anyio

from .errors import APIError

__all__ = ["Draining", "run", "shutting_down"]
#: Seconds the answers in flight get to finish once the server begins to stop.
DEFAULT_GRACE: Final = 10.0
# uvicorn's own limit, past ours: it cancels tasks still running then (it should never need to).
_BACKSTOP = 5


def shutting_down() -> APIError:
    """What every request the server did not answer before it stopped is given."""
    return APIError(503, "The server is shutting down; send the request again once it is back, "
                    "or to another server", "service_unavailable", "shutting_down")


class Draining:
    """The stop, as the answers see it: :meth:`stopping` (waiting requests end) and
    :meth:`expired` (running answers end), ``grace`` seconds apart."""

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.deadline = math.inf  # anyio time at which running answers are ended
        self._begun: anyio.Event | None = None

    @property
    def begun(self) -> bool:
        return self.deadline != math.inf

    def _event(self) -> anyio.Event:
        if self._begun is None:  # made on the server's loop, by the first request that waits
            self._begun = anyio.Event()
        return self._begun

    def begin(self) -> None:
        """The server stops: on its event loop, once."""
        if not self.begun:
            self.deadline = anyio.current_time() + self.grace
            self._event().set()

    async def stopping(self) -> None:
        """Returns once the server has begun to stop."""
        await self._event().wait()

    async def expired(self) -> None:
        """Returns once the grace period of a stop has run out."""
        await self.stopping()
        await anyio.sleep_until(self.deadline)


def run(application: Any, sock: socket.socket, draining: Draining) -> None:
    """Serve ``application`` on ``sock`` with uvicorn until SIGINT or SIGTERM, then drain."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            draining.begin()  # before uvicorn starts to wait on the requests in flight
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # As uvicorn's, but a stop asked for by a signal is a clean exit (status 0):
            # uvicorn raises the signal again once it is done, and the process dies of it.
            handled = (signal.SIGINT, signal.SIGTERM)
            before = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(application, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=math.ceil(draining.grace + _BACKSTOP))
    Server(config).run(sockets=[sock])
