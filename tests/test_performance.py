"""What the fast path keeps: no config read per question, a redeploy still caught, one thread
per stream, and the cold-start description cache invalidated when the Space changes.

Speed itself is measured in ``benchmarks/bench.py``, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from qvq_gradio import Session, SpaceConnectionError
from qvq_gradio.replica import OTHER_FUNCTION_TEXT, ReplicaProcess
from qvq_gradio.upstreams.gradio import StreamWatch

from .conftest import replica_env
from .faults import FaultProxy
from .test_reliability import _free_port
from .test_stream import expected_text

pytestmark = [pytest.mark.anyio, pytest.mark.adapter]


@pytest.fixture(scope="module")
def counted(qvq_replica_host: Any) -> Iterator[Any]:
    """A replica of this module's own: its route counters see only these tests."""
    from qvq_gradio.cli.replica import replica_config

    server = qvq_replica_host.start(replica_config(["--concurrency", "64"]))
    yield server
    server.stop()


async def test_the_config_is_read_at_connection_not_per_question(
    counted: ReplicaProcess, marker: str
) -> None:
    async with Session(counted.url) as session:
        first = f"{marker}-0 [[replica tokens=3 delay=0]]"
        assert await session.ask(first) == expected_text(first, 3)
        after_connecting = counted.hits().get("config", 0)
        assert after_connecting >= 1
        for n in range(1, 6):
            prompt = f"{marker}-{n} [[replica tokens=3 delay=0]]"
            assert await session.ask(prompt) == expected_text(prompt, 3)
        prompts = [f"{marker}-c{n} [[replica tokens=5 delay=0.01]]" for n in range(8)]
        answers: dict[str, str] = {}

        async def one(prompt: str) -> None:
            answers[prompt] = await session.ask(prompt)

        async with anyio.create_task_group() as tasks:
            for prompt in prompts:
                tasks.start_soon(one, prompt)
        assert answers == {prompt: expected_text(prompt, 5) for prompt in prompts}
        assert counted.hits().get("config", 0) == after_connecting


async def test_a_broken_connection_has_the_next_question_read_the_config_again(
    counted: ReplicaProcess, marker: str
) -> None:
    with FaultProxy(int(counted.url.rsplit(":", 1)[1])) as proxy:
        async with Session(proxy.url, idle_timeout=30) as session:
            warm = f"{marker}-warm [[replica tokens=3 delay=0]]"
            await session.ask(warm)
            before = counted.hits().get("config", 0)
            received = ""
            with anyio.fail_after(30), pytest.raises(SpaceConnectionError):
                async for delta in session.stream(f"{marker} [[replica tokens=5000 delay=0.01]]"):
                    received += delta
                    if len(received) > 100:
                        proxy.reset()
            prompt = f"{marker}-after [[replica tokens=3 delay=0]]"
            assert await session.ask(prompt) == expected_text(prompt, 3)
            assert counted.hits().get("config", 0) > before


async def test_the_stream_opens_while_the_config_is_read_again(
    counted: ReplicaProcess, marker: str
) -> None:
    # A session that found the Space's description on disk checks its first job against the
    # live config. The check and the join go out together; the job's stream must not wait for
    # the check (a round trip more before the first token), only its text must.
    stream_seen = threading.Event()
    config_waited_in_vain: list[bytes] = []

    def gate(_connection: int, data: bytes) -> None:
        if data.startswith(b"GET /gradio_api/queue/data"):
            stream_seen.set()
        elif data.startswith(b"GET /config") and not stream_seen.wait(20):
            config_waited_in_vain.append(data)

    with FaultProxy(int(counted.url.rsplit(":", 1)[1])) as proxy:
        warm = f"{marker}-warm [[replica tokens=3 delay=0]]"
        async with Session(proxy.url, space_cache=True) as session:  # describes and keeps
            assert await session.ask(warm) == expected_text(warm, 3)
        proxy.gate = gate  # from now on a config read is answered once a stream has opened
        async with Session(proxy.url, space_cache=True) as session:
            client = await session.client()
            assert client.described_from_disk
            prompt = f"{marker} [[replica tokens=3 delay=0]]"
            with anyio.fail_after(60):
                assert await session.ask(prompt) == expected_text(prompt, 3)
    assert stream_seen.is_set()
    assert config_waited_in_vain == []


async def test_a_question_asked_alone_streams_on_the_connection_it_joined_on(
    counted: ReplicaProcess, marker: str
) -> None:
    # Over the internet a new connection costs a TCP and a TLS handshake: a cold question that
    # joined on one connection and streamed on another paid them twice before its first token.
    requests: list[tuple[int, bytes]] = []

    def gate(connection: int, data: bytes) -> None:
        if data.startswith((b"POST /gradio_api/queue/join", b"GET /gradio_api/queue/data")):
            requests.append((connection, data[:4]))

    with FaultProxy(int(counted.url.rsplit(":", 1)[1])) as proxy:
        proxy.gate = gate
        async with Session(proxy.url) as session:
            for n in range(3):
                prompt = f"{marker}-{n} [[replica tokens=3 delay=0]]"
                assert await session.ask(prompt) == expected_text(prompt, 3)
    assert [kind for _, kind in requests] == [b"POST", b"GET "] * 3
    for join, stream in zip(requests[::2], requests[1::2], strict=True):
        assert join[0] == stream[0], requests


async def test_questions_join_and_stream_on_kept_alive_connections(
    counted: ReplicaProcess, marker: str
) -> None:
    # gradio_client joins with httpx.post: a new connection per question, on top of the one
    # its event stream takes. Joins and event streams now keep their connections alive.
    questions = 6
    with FaultProxy(int(counted.url.rsplit(":", 1)[1])) as proxy:
        async with Session(proxy.url) as session:
            warm = f"{marker}-warm [[replica tokens=3 delay=0]]"
            assert await session.ask(warm) == expected_text(warm, 3)
            before = proxy.accepted
            for n in range(questions):
                prompt = f"{marker}-{n} [[replica tokens=3 delay=0]]"
                assert await session.ask(prompt) == expected_text(prompt, 3)
            opened = proxy.accepted - before
    # None in the steady state, and a few spare (a connection left unused for seconds on a very
    # slow machine is closed, and the next request opens one); never one per question.
    assert opened < questions, opened


def test_stream_connections_are_closed_however_their_loop_or_session_ends(
    counted: ReplicaProcess,
) -> None:
    # Kept-alive event-stream connections belong to a loop. The script asks on loops that end
    # with the session still open (asyncio.run twice, as gpt4free calls on a shared session do,
    # then trio), through the sync API (a loop on its own thread, the session closed from
    # another), and on a loop that closes its session.
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "scripts" / "stream_pools.py"),
         counted.url, counted.url.rsplit(":", 1)[1]],
        capture_output=True,
        text=True,
        env=replica_env(),
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    prompt = "pools [[replica tokens=3 delay=0]]"
    assert result["answers"] == [expected_text(prompt, 3)] * 5
    assert result["raised"] == []  # no unclosed socket or transport: no ResourceWarning
    # Each loop closed its stream connection as it ended: what the open session keeps (its
    # heartbeat streams, an idle join connection) is the same after each; one more per loop
    # would be a pool left open.
    assert len(set(result["after_each_loop"])) == 1, result
    assert result["at_end"] == 0, result


async def test_an_aborted_job_shuts_down_only_the_connections_it_holds(
    counted: ReplicaProcess,
) -> None:
    with FaultProxy(int(counted.url.rsplit(":", 1)[1])) as proxy:
        async with Session(proxy.url) as session:
            client = await session.client()
            url = f"{proxy.url}/config"

            def exchange(abort_while_holding: bool) -> int:
                """A request held by a job's watch, then the job aborted; the next request
                on the pool: the connections opened meanwhile."""
                before = proxy.accepted
                watch = StreamWatch()
                response = client.joins.send(client.joins.build_request("GET", url), stream=True)
                try:
                    with watch.holding(response):
                        if abort_while_holding:
                            watch.abort()
                        response.read()
                except httpx.TransportError:
                    # Shut down mid-response: the read fails unless the body had all come.
                    assert abort_while_holding
                finally:
                    response.close()
                watch.abort()  # after: the connection is back in the pool, not the job's
                client.joins.get(url).raise_for_status()
                return proxy.accepted - before

            await anyio.to_thread.run_sync(client.joins.get, url)  # one connection, pooled
            assert await anyio.to_thread.run_sync(exchange, False) == 0  # reused twice
            # Shut down while held: the pool drops that connection (at once, or when the next
            # request finds it dead) and the next request opens another.
            assert await anyio.to_thread.run_sync(exchange, True) == 1
            assert await anyio.to_thread.run_sync(exchange, False) == 0


async def test_a_client_closed_after_a_redeploy_still_joins_for_the_jobs_it_started(
    counted: ReplicaProcess, marker: str
) -> None:
    # A redeploy has the session drop its client with close(), and jobs already handed to it
    # run on: their joins still need its pool of connections.
    async with Session(counted.url) as session:
        client = await session.client()
        client.close()
        prompt = f"{marker} [[replica tokens=3 delay=0]]"
        assert await session.ask(prompt) == expected_text(prompt, 3)


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.parametrize("streams", [32, 128])
async def test_one_thread_per_stream_and_none_left_after_the_burst(
    counted: ReplicaProcess, marker: str, streams: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qvq_gradio._threads.KEEPALIVE", 0.5)  # idle workers end sooner
    async with Session(counted.url, max_workers=256) as session:
        await session.ask(f"{marker}-warm [[replica tokens=1 delay=0]]")  # connected
        baseline = _threads()
        started = anyio.Event()
        generating = 0
        peak: set[threading.Thread] = set()

        async def one(n: int) -> None:
            nonlocal generating
            counted_in = False
            async for _ in session.stream(f"{marker}-{n} [[replica tokens=40 delay=0.05]]"):
                if not counted_in:
                    counted_in = True
                    generating += 1
                    if generating == streams:
                        peak.update(_threads() - baseline)
                        started.set()

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tasks:
                for n in range(streams):
                    tasks.start_soon(one, n)
        assert started.is_set()
        # Every stream was generating at that moment: at most one thread each, plus the
        # worker pools' spares (bounded, not per stream).
        assert len(peak) <= streams + 4, sorted(t.name for t in peak)
        deadline = time.monotonic() + 60
        while _threads() - baseline and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(0.1)  # polling threads: idle workers end on their own
        assert not {t for t in _threads() - baseline if t.is_alive()}


def _cold_ask(url: str, prompt: str, home: str) -> str:
    env = {**os.environ, "QVQ_HOME": home}
    done = subprocess.run(
        [sys.executable, "-m", "qvq_gradio", "ask", "--space", url, prompt, "--no-history"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_cold_command_reuses_the_kept_description_and_drops_it_when_the_space_changes(
    tmp_path: Path, marker: str, start_replica: Any
) -> None:
    home = str(tmp_path)
    port = _free_port()
    first = start_replica(port=port)
    one = f"{marker}-1 [[replica tokens=3 delay=0]]"
    assert _cold_ask(first.url, one, home).strip() == expected_text(one, 3)
    hits = first.hits()
    # The first command described the Space (config and API info) and kept it.
    assert hits.get("config", 0) == 1 and hits.get("info", 0) == 1
    two = f"{marker}-2 [[replica tokens=3 delay=0]]"
    assert _cold_ask(first.url, two, home).strip() == expected_text(two, 3)
    hits = first.hits()
    # The second read no API info: the config only, alongside its job, to check it.
    assert hits.get("info", 0) == 1 and hits.get("config", 0) == 2
    first.stop()
    # The same address, another app whose function index 0 is no longer /generate.
    second = start_replica("--layout", "reordered", port=port)
    three = f"{marker}-3 [[replica tokens=3 delay=0]]"
    out = _cold_ask(second.url, three, home)
    assert OTHER_FUNCTION_TEXT not in out
    assert out.strip() == expected_text(three, 3)
    after_redeploy = second.hits().get("info", 0)
    assert after_redeploy == 1  # the stale description was dropped and read anew
    four = f"{marker}-4 [[replica tokens=3 delay=0]]"
    assert _cold_ask(second.url, four, home).strip() == expected_text(four, 3)
    assert second.hits().get("info", 0) == after_redeploy  # and kept again


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["history", "list", "-n", "1"]])
def test_commands_that_never_talk_to_a_space_import_no_network_library(
    args: list[str], tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "from qvq_gradio.cli import main\n"
        f"code = main({args!r})\n"
        "heavy = [m for m in ('gradio_client', 'httpx', 'PIL', 'anyio') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        env={**os.environ, "QVQ_HOME": str(tmp_path)},
    )
    assert done.returncode in (0, 2), done.stderr  # history of an empty home: "no answers"
    assert "HEAVY []" in done.stdout


def test_the_command_list_says_what_each_command_says_of_itself() -> None:
    import click

    from qvq_gradio.cli import COMMANDS, cli

    ctx = click.Context(cli)
    for name, (_, _, listed) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=300) == listed
