"""Faults a Space (or the network to it) can throw, against real servers.

A :class:`~tests.faults.FaultProxy` between us and the replica freezes or resets connections on
command; the replica restarts with another app on the same port; a Space echoes our token.
Where a defect used to cost time, the test makes the old behaviour take effectively forever
(monkeypatched limits of minutes) and bounds the new one with a generous hang guard.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from qvq_gradio import (
    AppError,
    IdleTimeoutError,
    ProtocolError,
    Session,
    SpaceConnectionError,
    TextDelta,
)
from qvq_gradio.replica import OTHER_FUNCTION_TEXT, ReplicaProcess

from .conftest import ended, replica_env
from .faults import FaultProxy
from .test_stream import expected_text
from .web import Web, page

pytestmark = [pytest.mark.anyio, pytest.mark.adapter]

# Long enough that waiting for it would fail every hang guard below.
FOREVER = 600.0


@pytest.fixture
def proxy(replica: ReplicaProcess) -> Iterator[FaultProxy]:
    with FaultProxy(int(replica.url.rsplit(":", 1)[1])) as fault_proxy:
        yield fault_proxy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _qvq_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("qvq-")]


# -- 1. a frozen connection ------------------------------------------------------------------------


async def test_frozen_connection_neither_delays_the_error_nor_the_close(
    proxy: FaultProxy, replica: ReplicaProcess, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gradio_client's read timeout and our cancel's bound at "forever": the old code waited
    # for the cancel before raising, and for the dead read when closing.
    monkeypatch.setattr("qvq_gradio.upstreams.gradio.upstream._READ_TIMEOUT", FOREVER)
    monkeypatch.setattr("qvq_gradio.upstreams.gradio.job._CANCEL_TIMEOUT", FOREVER)
    before = set(threading.enumerate())
    session = Session(proxy.url, idle_timeout=1)
    received = ""
    with anyio.fail_after(30):
        with pytest.raises(IdleTimeoutError) as caught:
            async for event in session.events(f"{marker} [[replica tokens=5000 delay=0.01]]"):
                if isinstance(event, TextDelta):
                    received += event.text
                    if len(received) > 200:
                        proxy.freeze()  # nothing flows, new connections go nowhere
    assert caught.value.text == received  # nothing received is lost
    assert caught.value.text.startswith("Received prompt")
    with anyio.fail_after(15):  # a hang guard; what closing promises is checked below
        await session.aclose()
    started = [t for t in threading.enumerate() if t not in before and t.name.startswith("qvq")]
    assert all(t.daemon for t in started)  # none can hold up interpreter exit
    # The cancel still goes out once the network is back.
    proxy.resume()
    record = await ended(replica, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    # And then nothing is left running: every thread the session started ends (those that
    # were reading the frozen connection were woken); a stuck one would never end.
    for thread in started:
        await anyio.to_thread.run_sync(thread.join, 10)
    assert [t.name for t in started if t.is_alive()] == []


async def test_silent_stream_ends_with_the_idle_timeout_the_user_set(
    proxy: FaultProxy, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gradio_client's own read timeout (shorter here than the idle timeout) must not fire first
    # and turn a silent stream into "connection lost".
    monkeypatch.setattr("qvq_gradio.upstreams.gradio.upstream._READ_TIMEOUT", 0.5)
    async with Session(proxy.url, idle_timeout=2) as session:
        stream = session.stream(f"{marker} [[replica tokens=5000 delay=0.01]]")
        with anyio.fail_after(30), pytest.raises(IdleTimeoutError) as caught:
            async for _ in stream:
                proxy.freeze()
        assert caught.value.text
        proxy.resume()


def test_interpreter_exit_does_not_wait_on_a_frozen_connection(
    proxy: FaultProxy, marker: str, tmp_path: Path
) -> None:
    script = tmp_path / "frozen.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import qvq_gradio, qvq_gradio.upstreams.gradio.upstream, qvq_gradio.upstreams.gradio.job
            qvq_gradio.upstreams.gradio.upstream._READ_TIMEOUT = {FOREVER}
            qvq_gradio.upstreams.gradio.job._CANCEL_TIMEOUT = {FOREVER}
            try:
                for delta in qvq_gradio.stream(
                    "{marker} [[replica tokens=5000 delay=0.01]]",
                    space="{proxy.url}", idle_timeout=1,
                ):
                    print("TEXT", flush=True)
            except qvq_gradio.IdleTimeoutError as exc:
                print("ERROR", type(exc).__name__, len(exc.text), flush=True)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=replica_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "TEXT"
    proxy.freeze()  # and it stays frozen until the process has exited
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("ERROR IdleTimeoutError")
    assert "Traceback" not in err


# -- 4. partial text and quiet stderr on a broken connection ------------------------------------


async def test_reset_connection_keeps_the_partial_text_and_stderr_quiet(
    proxy: FaultProxy, marker: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with Session(proxy.url, idle_timeout=30) as session:
        received = ""
        with anyio.fail_after(30), pytest.raises(SpaceConnectionError) as caught:
            async for delta in session.stream(f"{marker} [[replica tokens=5000 delay=0.01]]"):
                received += delta
                if len(received) > 200:
                    proxy.reset()
    assert caught.value.text == received
    assert "Traceback" not in capfd.readouterr().err


async def test_killed_space_mid_answer_keeps_the_partial_text(
    marker: str, start_replica: Any
) -> None:
    server = await anyio.to_thread.run_sync(start_replica)
    try:
        async with Session(server.url, idle_timeout=30) as session:
            received = ""
            with anyio.fail_after(30), pytest.raises(SpaceConnectionError) as caught:
                async for delta in session.stream(f"{marker} [[replica tokens=5000 delay=0.01]]"):
                    received += delta
                    if len(received) > 200:
                        server.kill()
            assert caught.value.text == received
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def test_a_stopped_space_exits_while_a_session_holds_its_heartbeat(
    marker: str, capfd: pytest.CaptureFixture[str]
) -> None:
    # A session holds the replica's heartbeat stream for as long as it lives: SIGTERM must
    # still end the server (tests restart replicas on the same port under open sessions).
    server = ReplicaProcess(env=replica_env()).start()
    try:
        async with Session(server.url) as session:
            prompt = f"{marker} [[replica tokens=2 delay=0]]"
            assert await session.ask(prompt) == expected_text(prompt, 2)
            # It ends (uvicorn re-raises the signal once shut down); still running after 30 s
            # raises TimeoutExpired.
            code = await anyio.to_thread.run_sync(server.terminate)
            assert code in (0, -signal.SIGTERM)
    finally:
        await anyio.to_thread.run_sync(server.stop)
    # The streams it cancelled on the way out are not reported as errors.
    assert "Traceback" not in capfd.readouterr().err


# -- 2. a redeployed Space ------------------------------------------------------------------------


async def test_redeployed_space_is_detected_before_any_wrong_text(
    marker: str, start_replica: Any
) -> None:
    port = _free_port()
    first = await anyio.to_thread.run_sync(lambda: start_replica(port=port))
    try:
        async with Session(first.url, idle_timeout=30) as session:
            prompt = f"{marker}-1 [[replica tokens=3 delay=0]]"
            assert await session.ask(prompt) == expected_text(prompt, 3)
            await anyio.to_thread.run_sync(first.stop)
            # The same address, an app whose function index 0 is no longer /generate.
            second = await anyio.to_thread.run_sync(
                lambda: start_replica("--layout", "reordered", port=port)
            )
            try:
                for n in (2, 3):
                    prompt = f"{marker}-{n} [[replica tokens=3 delay=0]]"
                    events = [event async for event in session.events(prompt)]
                    texts = [e.text for e in events if isinstance(e, TextDelta)]
                    assert OTHER_FUNCTION_TEXT not in "".join(texts)
                    assert "".join(texts) == expected_text(prompt, 3)
            finally:
                await anyio.to_thread.run_sync(second.stop)
    finally:
        await anyio.to_thread.run_sync(first.stop)


async def test_space_whose_generate_changed_inputs_is_a_protocol_error(
    marker: str, start_replica: Any
) -> None:
    server = await anyio.to_thread.run_sync(lambda: start_replica("--layout", "text-only"))
    async with Session(server.url) as session:
        with pytest.raises(ProtocolError, match=r"not \[image, text\]"):
            await session.ask(f"{marker} [[replica tokens=3 delay=0]]")
        assert not [r for r in server.requests() if marker in r["prompt"]]


# -- 3. no token in any exception -----------------------------------------------------------------


@pytest.mark.parametrize("token", ["hf_EchoedSecretToken123", "plain-secret-credential-42"])
async def test_no_token_in_any_exception_traceback_or_log(
    replica: ReplicaProcess, marker: str, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Session(replica.url, token=token) as session:
        with pytest.raises(AppError) as caught:
            await session.ask(f"{marker} [[replica fail=echo-token]]")
    error = caught.value
    assert "Unauthorized" in str(error)
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    # The original exception stays discoverable for debugging...
    assert any(type(e).__module__.startswith("gradio_client") for e in chain)
    # ...without the token: args, messages, the formatted traceback, the log.
    for exc in chain:
        assert token not in repr(exc.args)
        assert token not in str(exc)
        assert token not in repr(vars(exc))
    assert token not in "".join(traceback.format_exception(error))
    assert token not in caplog.text


# -- 4. rough edges -------------------------------------------------------------------------------


async def test_an_html_page_is_named_as_such() -> None:
    with Web(page(b"<!DOCTYPE html><html><body>Please log in</body></html>")) as server:
        async with Session(server.url) as session:
            with pytest.raises(ProtocolError, match="HTML page: it is not a Gradio app"):
                await session.ask("hello")


async def test_idle_threads_shrink_back_after_a_burst(
    replica: ReplicaProcess, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qvq_gradio._threads.KEEPALIVE", 0.2)
    # Sessions of earlier tests in this process (shared ones, say) keep their own threads.
    before = set(_qvq_threads())

    def ours() -> list[threading.Thread]:
        return [t for t in _qvq_threads() if t not in before]

    peak = 0

    async def watch() -> None:  # the most threads seen while the burst runs
        nonlocal peak
        while True:
            peak = max(peak, len(ours()))
            await anyio.sleep(0.01)

    async with Session(replica.url) as session:
        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as tg:
                for i in range(64):
                    tg.start_soon(session.ask, f"{marker}-{i} [[replica tokens=20 delay=0.01]]")
            outer.cancel_scope.cancel()
        deadline = anyio.current_time() + 30
        # What stays: the heartbeat watcher (one per session) and at most two idle workers.
        while len(ours()) > 3 and anyio.current_time() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.05)  # polling threads: no event exists
        assert len(ours()) <= 3, sorted(t.name for t in ours())
        assert peak > 3  # the burst did use threads


async def test_session_client_keeps_gradio_clients_documented_behaviour(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    client = await session.client()
    prompt = f"{marker}-a [[replica tokens=5 delay=0]]"
    job = client.submit(None, prompt, api_name="/generate")
    final = await anyio.to_thread.run_sync(job.result)
    outputs = job.outputs()
    assert final == expected_text(prompt, 5)
    assert len(outputs) == 7  # the receipt, five words, the final answer: every one kept
    assert outputs[-1] == final and all(final.startswith(o) for o in outputs)

    long_prompt = f"{marker}-b [[replica tokens=5000 delay=0.01]]"
    running = client.submit(None, long_prompt, api_name="/generate")
    await anyio.to_thread.run_sync(replica.wait_started, f"{marker}-b")
    running.cancel()
    assert (await ended(replica, f"{marker}-b"))["state"] == "cancelled"

    again = f"{marker}-c [[replica tokens=4 delay=0]]"
    job = client.submit(None, again, api_name="/generate")
    assert await anyio.to_thread.run_sync(job.result) == expected_text(again, 4)
    assert len(job.outputs()) == 6
