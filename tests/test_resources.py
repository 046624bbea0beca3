"""Resources stay bounded: the elastic pool never strands work, registries never grow forever."""

from __future__ import annotations

import gc
import threading
import weakref

import anyio
import anyio.to_thread
import pytest
from blockbuster import BlockBuster

from qvq_gradio import _secrets, provider
from qvq_gradio._threads import ElasticExecutor
from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.upstreams.gradio import QVQClient


def _workers(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def test_work_queued_while_every_worker_was_busy_never_strands_later_work() -> None:
    # One worker, busy; a second piece of work waits for it. Once both ran and the worker
    # left (idle past its keepalive), the next submit must start a thread: a pool that counted
    # idle permits kept one too many here and gave the work to no thread at all (a config
    # re-read that never ran hung a stream).
    pool = ElasticExecutor(1, name="qvq-strand", keepalive=0.01)
    try:
        release = threading.Event()
        first = pool.submit(release.wait, 10)
        second = pool.submit(lambda: "second")
        release.set()
        assert first.result(timeout=10) is True
        assert second.result(timeout=10) == "second"
        for worker in _workers("qvq-strand"):
            worker.join(timeout=10)
        assert not _workers("qvq-strand")
        assert pool.submit(lambda: "third").result(timeout=10) == "third"
    finally:
        pool.shutdown(timeout=5)


def test_a_submit_while_the_last_idle_worker_leaves_still_runs() -> None:
    # With no keepalive, the worker leaves as soon as it finds no work: every submit below
    # races the worker's decision to leave, and each piece of work must still run.
    pool = ElasticExecutor(2, name="qvq-race", keepalive=0.0)
    try:
        for i in range(300):
            assert pool.submit(lambda n=i: n).result(timeout=10) == i
            if i % 3 == 0:  # and now and then two at once
                pair = [pool.submit(lambda: 1), pool.submit(lambda: 2)]
                assert [f.result(timeout=10) for f in pair] == [1, 2]
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
        assert all(s.upstream.closed for s in sessions[:2])
        assert not any(s.upstream.closed for s in sessions[2:])
        # Using one again keeps it: the next one made evicts another.
        assert provider.shared_session("http://127.0.0.1:9", token="user-token-0002") is sessions[2]
        provider.shared_session("http://127.0.0.1:9", token="user-token-0099")
        assert sessions[2] in provider._shared.values()
        assert sessions[3] not in provider._shared.values()
    finally:
        provider.close_shared_sessions()


@pytest.mark.anyio
async def test_a_client_collected_on_the_event_loop_never_blocks_it(
    replica: ReplicaProcess, no_blocking: BlockBuster
) -> None:
    # A client dropped without being shut down (closed only, say) may be collected on the
    # event loop's thread while its worker threads still wait for work: gradio_client's
    # __del__ joined them there (a blocking call; reported as unraisable, an error here).
    def connected() -> list[QVQClient]:
        client = QVQClient(replica.url, verbose=False, download_files=False)
        client.executor.submit(lambda: None).result(timeout=10)  # a worker, idle now
        client.close()
        for thread in (client.heartbeat, client._watcher):
            if thread.ident is not None:  # gradio_client starts its heartbeat on some versions
                thread.join(timeout=10)
        return [client]  # a box: anyio's worker thread keeps the last result it returned

    client = (await anyio.to_thread.run_sync(connected)).pop()
    assert any(t.name.startswith("qvq-executor") for t in threading.enumerate())
    gone = weakref.ref(client)
    del client
    gc.collect()  # here, on the event loop
    assert gone() is None  # it was collected (and its __del__ ran) here
