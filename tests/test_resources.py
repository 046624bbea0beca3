"""Resources stay bounded: the elastic pool never strands work, registries never grow forever."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from qvq_gradio import _secrets, provider
from qvq_gradio._threads import ElasticExecutor


class _Permits:
    """The pool's idle-permit semaphore, with a hook at the moment an idle worker takes its
    own permit to leave: the window in which a submit used to find no thread."""

    def __init__(self, inner: threading.Semaphore, at_leave: Any) -> None:
        self._inner = inner
        self._at_leave = at_leave
        self._hooked = False

    def acquire(self, blocking: bool = True) -> bool:
        taken = self._inner.acquire(blocking)
        worker = threading.current_thread().name.startswith("qvq-race")
        if taken and worker and not self._hooked:
            self._hooked = True
            self._at_leave()
        return taken

    def release(self) -> None:
        self._inner.release()


def test_a_submit_while_the_last_idle_worker_leaves_still_runs() -> None:
    pool = ElasticExecutor(1, name="qvq-race", keepalive=0.01)
    pool.submit(lambda: None).result(timeout=10)
    late: list[Any] = []
    submitted = threading.Event()

    def submit_now() -> None:
        late.append(pool.submit(lambda: "ran"))
        submitted.set()

    def at_leave() -> None:
        # Another thread submits while this worker is between taking its permit and leaving.
        # Either the submit completes at once (the old race) or it waits for the worker to
        # have left (the pool's lock): both are fine as long as the work then runs.
        submitter = threading.Thread(target=submit_now)
        submitter.start()
        submitted.wait(timeout=1.0)

    pool._idle = _Permits(pool._idle, at_leave)  # type: ignore[assignment]
    try:
        # The worker goes idle, its keepalive passes and it takes its permit: the hook fires.
        assert submitted.wait(timeout=10)
        assert late[0].result(timeout=10) == "ran"
    finally:
        pool.shutdown(timeout=5)


def test_known_secrets_are_bounded_and_the_newest_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_secrets, "MAX_SECRETS", 8)
    monkeypatch.setattr(_secrets, "_known", type(_secrets._known)())
    for n in range(20):
        _secrets.register_secret(f"secret-number-{n:04d}")
    assert len(_secrets._known) == 8
    assert _secrets.redact("secret-number-0019 and secret-number-0000") == (
        "*** and secret-number-0000"
    )


def test_shared_sessions_are_bounded_and_evicted_ones_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provider, "MAX_SHARED_SESSIONS", 3)
    provider.close_shared_sessions()
    sessions = [
        provider.shared_session("http://127.0.0.1:9", token=f"user-token-{n:04d}")
        for n in range(5)
    ]
    try:
        assert len(provider._shared) == 3
        # The two least recently used were closed (off the caller's thread).
        for thread in threading.enumerate():
            if thread.name == "qvq-evict":
                thread.join(timeout=10)
        assert all(s._closed for s in sessions[:2])  # type: ignore[attr-defined]
        assert not any(s._closed for s in sessions[2:])  # type: ignore[attr-defined]
        # Using one again keeps it: the next one made evicts another.
        assert provider.shared_session("http://127.0.0.1:9", token="user-token-0002") is sessions[2]
        provider.shared_session("http://127.0.0.1:9", token="user-token-0099")
        assert sessions[2] in provider._shared.values()
        assert sessions[3] not in provider._shared.values()
    finally:
        provider.close_shared_sessions()
