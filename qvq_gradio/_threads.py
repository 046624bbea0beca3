"""A thread pool whose idle threads go away, and that never holds up interpreter exit.

gradio_client runs every job on three ``ThreadPoolExecutor`` pools. Those never shrink (a burst
of 64 streams left ~230 idle threads until the session closed), and their threads are joined at
interpreter exit, so one thread stuck reading a frozen connection held up exit for a minute.
:class:`ElasticExecutor` replaces them: threads start on demand up to ``max_workers``, a thread
idle for ``keepalive`` seconds ends, and the threads are daemons, so a thread stuck in a read
can be abandoned.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["KEEPALIVE", "ElasticExecutor"]

T = TypeVar("T")

#: Seconds an idle worker thread waits for more work before it ends.
KEEPALIVE = 5.0

_WorkItem = tuple[
    concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]
]
_names = itertools.count()


class ElasticExecutor(concurrent.futures.Executor):
    """Up to ``max_workers`` daemon threads, started on demand, ending after ``keepalive`` idle.

    Every decision is made under one lock from two exact counts: the workers waiting for work
    (``_waiting``) and the work queued that no worker has taken yet (``_backlog``). A submit
    starts a thread when the work queued would outnumber the waiting workers; an idle worker
    leaves only when the others still waiting cover the backlog. (A semaphore of idle permits,
    as ``ThreadPoolExecutor`` keeps, over-counts once a busy worker takes work queued while
    every thread was busy; with threads that leave, that stranded work forever.)
    """

    def __init__(
        self, max_workers: int, *, name: str = "qvq-worker", keepalive: float | None = None
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self._max_workers = max_workers
        self._name = name
        self._keepalive = KEEPALIVE if keepalive is None else keepalive
        self._work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._waiting = 0  # workers between asking the queue for work and getting it
        self._backlog = 0  # work in the queue not yet taken by a worker
        self._shutdown = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put((future, fn, args, kwargs))
            self._backlog += 1
            if self._backlog > self._waiting and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-{next(_names)}", daemon=True
                )
                self._threads.add(thread)
                self._waiting += 1  # counted as waiting from now: it will ask for work
                thread.start()
        return future

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._work.get(timeout=self._keepalive)
                except queue.Empty:
                    # Idle for keepalive seconds: leave unless the other waiting workers
                    # would then be fewer than the work queued (a submit just counted on us).
                    with self._lock:
                        leaving = self._waiting - 1 >= self._backlog
                        if leaving:
                            self._waiting -= 1
                            self._threads.discard(threading.current_thread())
                    if leaving:
                        return
                    continue
                with self._lock:
                    self._waiting -= 1
                    if item is not None:
                        self._backlog -= 1
                if item is None:  # shutdown
                    return
                future, fn, args, kwargs = item
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                del item, future, fn, args, kwargs  # release the job's objects while idle
                with self._lock:
                    self._waiting += 1
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    @property
    def threads(self) -> int:
        """Worker threads alive now."""
        with self._lock:
            return len(self._threads)

    def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> None:
        """Stop taking work; with ``wait``, join the threads (for at most ``timeout`` seconds:
        a thread still busy then, e.g. stuck reading a dead connection, is abandoned)."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in threads:
                if thread is not threading.current_thread():
                    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                    thread.join(left)
