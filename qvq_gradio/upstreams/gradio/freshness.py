"""Whether a client's config still describes the app the Space runs, without a read per job.

A job is submitted to a *function index* taken from the config read at connection time; a Space
restarted with its functions in another order would run another function for it. Reading the
config again alongside every job catches that, at the price of one request per question (and
the Gradio server's CPU to build the config). :class:`Freshness` reads it again only when there
is a reason to:

* the Space's heartbeat stream, held open by one daemon thread per client, ended or broke: a
  restarted server drops it, so a redeploy is noticed as soon as the old server goes away;
* a job's connection broke (the caller says so with :meth:`Freshness.suspect`);
* the last confirmation is older than ``every`` seconds (a backstop for a restart the
  heartbeat could not see, e.g. behind a proxy that kept it open).

One read serves every job in flight (:meth:`Freshness.check` hands them the same Future). The
window accepted: a restart with reordered functions that neither dropped the heartbeat nor
broke a job, within ``every`` seconds of the last confirmation.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import httpx

__all__ = ["HEARTBEAT_READ_TIMEOUT", "Freshness"]

log = logging.getLogger("qvq_gradio")

#: Gradio sends a heartbeat every 15 s: a stream silent for this long is taken as broken.
HEARTBEAT_READ_TIMEOUT: Final = 60.0
_RETRY_FIRST: Final = 0.5
_RETRY_CAP: Final = 30.0


class Freshness:
    """When the config of one client must be read again (see the module docstring)."""

    def __init__(
        self,
        read_config: Callable[[], Any],
        executor: concurrent.futures.Executor,
        every: float,
    ) -> None:
        self._read_config = read_config
        self._executor = executor
        self._every = every
        self._lock = threading.Lock()
        self._confirmed = time.monotonic()  # the client has just read its config
        self._suspect = False
        self._reading: concurrent.futures.Future[Any] | None = None

    def suspect(self) -> None:
        """The server may have restarted: the next job reads the config again."""
        with self._lock:
            self._suspect = True

    def check(self) -> concurrent.futures.Future[Any] | None:
        """The config read again, for a job about to be followed; None while it is fresh.

        Jobs that ask while a read is in flight share it.
        """
        with self._lock:
            if self._reading is not None and not self._reading.done():
                return self._reading
            fresh = time.monotonic() - self._confirmed < self._every
            if fresh and not self._suspect:
                return None
            self._suspect = False
            self._reading = self._executor.submit(self._read)
            return self._reading

    def _read(self) -> Any:
        try:
            config = self._read_config()
        except BaseException:
            self.suspect()
            raise
        with self._lock:
            self._confirmed = time.monotonic()
        return config

    def follow_heartbeat(
        self,
        open_stream: Callable[[], Any],
        stop: threading.Event,
    ) -> None:
        """Hold the heartbeat stream open until ``stop`` (blocking: a daemon thread's body).

        Every end of the stream, clean or broken, makes the config suspect; it is opened again
        with a growing delay while the server does not answer.
        """
        delay = _RETRY_FIRST
        while not stop.is_set():
            opened = time.monotonic()
            try:
                with open_stream() as response:
                    if response.is_success:
                        for _ in response.iter_lines():
                            if stop.is_set():
                                return
            except (httpx.HTTPError, OSError) as exc:
                log.debug("the Space's heartbeat stream broke: %r", exc)
            if stop.is_set():
                return
            self.suspect()
            if time.monotonic() - opened > _RETRY_CAP:
                delay = _RETRY_FIRST
            if stop.wait(delay):
                return
            delay = min(delay * 2, _RETRY_CAP)
