"""Several Spaces as one: routing, failover, health, against three real replicas."""

from __future__ import annotations

import collections
import socket
from typing import Any

import anyio
import pytest

from qvq_gradio import (
    AppError,
    Finished,
    Pool,
    QuotaExceededError,
    ResponseError,
    SpaceChanged,
    SpaceNameError,
    SyncSession,
    TextDelta,
    connect,
)
from qvq_gradio.replica import ReplicaProcess

from .conftest import Factory
from .test_stream import expected_text

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _served(server: ReplicaProcess, marker: str) -> list[dict[str, Any]]:
    return [r for r in server.requests() if marker in r["prompt"]]


async def test_ninety_questions_answered_once_each_spread_over_three(
    qvq_replicas: Factory, marker: str
) -> None:
    servers = qvq_replicas(3, "--concurrency", "4")
    prompts = [f"{marker}-{i:02d} [[replica tokens=10 delay=0.005]]" for i in range(90)]
    answers: dict[str, Finished] = {}
    async with Pool([s.url for s in servers], max_in_flight_per_space=4) as pool:

        async def one(prompt: str) -> None:
            async for event in pool.events(prompt):
                if isinstance(event, Finished):
                    answers[prompt] = event

        async with anyio.create_task_group() as tg:
            for prompt in prompts:
                tg.start_soon(one, prompt)
        status = {row.space: row for row in pool.status()}
    assert {p: f.text for p, f in answers.items()} == {p: expected_text(p, 10) for p in prompts}
    counts = collections.Counter(f.space for f in answers.values())
    logs = {s.url: await anyio.to_thread.run_sync(_served, s, marker) for s in servers}
    for server in servers:
        # Each Space answered its share, and exactly what its log says it received.
        assert counts[server.url] >= 15
        assert len(logs[server.url]) == counts[server.url] == status[server.url].answered
        assert status[server.url].state == "ok"
    received = [r["prompt"] for log in logs.values() for r in log]
    assert sorted(received) == sorted(prompts)  # every question asked exactly once


async def test_a_killed_space_is_skipped_until_it_is_back(
    qvq_replicas: Factory, marker: str, monkeypatch: pytest.MonkeyPatch, start_replica: Any
) -> None:
    monkeypatch.setattr("qvq_gradio.pool._BACKOFF_CAP", 1.0)
    port = _free_port()
    victim = qvq_replicas(1, "--concurrency", "2", port=port)[0]
    others = qvq_replicas(2, "--concurrency", "2")
    urls = [victim.url, *(s.url for s in others)]
    outcomes: dict[str, str | ResponseError] = {}
    kept: dict[str, tuple[str, str]] = {}
    moved: list[SpaceChanged] = []
    victim_answering = anyio.Event()
    prompts = [f"{marker}-{i:02d} [[replica tokens=40 delay=0.02]]" for i in range(24)]
    async with Pool(urls, max_in_flight_per_space=4) as pool:

        async def one(prompt: str) -> None:
            text = ""
            space = ""
            try:
                async for event in pool.events(prompt):
                    if isinstance(event, SpaceChanged):
                        space = event.space
                        if event.previous is not None:
                            moved.append(event)
                    elif isinstance(event, TextDelta):
                        text += event.text
                        if space == victim.url:
                            victim_answering.set()
                outcomes[prompt] = text
            except ResponseError as error:
                kept[prompt] = (error.text, text)
                outcomes[prompt] = error

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for prompt in prompts:
                    tg.start_soon(one, prompt)
                # Its answers have begun reaching us (two generate, two wait): now it dies.
                await victim_answering.wait()
                victim.kill()
        failed = {p: o for p, o in outcomes.items() if isinstance(o, ResponseError)}
        # Only questions that had text from the victim fail; every other one is answered.
        assert len(outcomes) == len(prompts)
        assert 1 <= len(failed) <= 2
        for prompt, outcome in outcomes.items():
            if prompt not in failed:
                assert outcome == expected_text(prompt, 40)
        assert all(error_text == received for error_text, received in kept.values())
        assert moved and all(event.previous == victim.url for event in moved)
        row = {row.space: row for row in pool.status()}[victim.url]
        assert row.failed >= len(failed)
        assert "SpaceConnectionError" in (row.last_error or "")

        # Back on the same address: once its cooling ends, the pool uses it again.
        revived = await anyio.to_thread.run_sync(
            lambda: start_replica("--concurrency", "2", port=port)
        )
        try:
            with anyio.fail_after(60):
                spaces: set[str] = set()
                n = 0
                while victim.url not in spaces:
                    n += 1
                    async for event in pool.events(f"{marker}-again-{n} [[replica tokens=1]]"):
                        if isinstance(event, Finished):
                            spaces.add(event.space)
                    if victim.url not in spaces:
                        await anyio.sleep(0.2)
        finally:
            await anyio.to_thread.run_sync(revived.stop)


async def test_a_space_out_of_quota_gets_nothing_while_it_cools(
    qvq_replicas: Factory, marker: str
) -> None:
    rationed = qvq_replicas(1, "--quota-budget", "0", "--quota-retry", "600")[0]
    others = qvq_replicas(2)
    async with Pool([rationed.url, *(s.url for s in others)]) as pool:
        for i in range(12):
            prompt = f"{marker}-{i} [[replica tokens=2 delay=0]]"
            assert await pool.ask(prompt) == expected_text(prompt, 2)
        status = {row.space: row for row in pool.status()}
    # It was tried once, said "retry in 0:10:00", and was left alone from then on.
    assert len(await anyio.to_thread.run_sync(_served, rationed, marker)) == 1
    cooling = status[rationed.url]
    assert cooling.state == "cooling" and cooling.failed == 1
    assert cooling.until is not None
    assert "QuotaExceededError" in (cooling.last_error or "")


async def test_every_space_out_of_quota_raises_the_earliest_retry_after(
    qvq_replicas: Factory, marker: str
) -> None:
    servers = [
        qvq_replicas(1, "--quota-budget", "0", "--quota-retry", str(retry))[0]
        for retry in (900, 300, 600)
    ]
    async with Pool([s.url for s in servers]) as pool:
        with pytest.raises(QuotaExceededError) as caught:
            await pool.ask(f"{marker} [[replica tokens=2]]")
        assert caught.value.retry_after is not None
        assert 200 < caught.value.retry_after <= 300  # the soonest, less the time gone
        # And again without asking any Space: they are all cooling.
        with pytest.raises(QuotaExceededError):
            await pool.ask(f"{marker}-again [[replica tokens=2]]")
    for server in servers:
        assert len(await anyio.to_thread.run_sync(_served, server, marker)) == 1


async def test_app_errors_do_not_move_and_text_errors_are_not_spliced(
    qvq_replicas: Factory, marker: str
) -> None:
    servers = qvq_replicas(2)
    async with Pool([s.url for s in servers]) as pool:
        with pytest.raises(AppError):
            await pool.ask(f"{marker}-a [[replica fail=before]]")
        with pytest.raises(AppError) as caught:
            await pool.ask(f"{marker}-b [[replica fail=mid after=3]]")
        assert caught.value.text.startswith("Received prompt")
    asked = [r for s in servers for r in await anyio.to_thread.run_sync(_served, s, marker)]
    assert len(asked) == 2  # neither question was asked twice
    assert all(row.state == "ok" for row in pool.status())


async def test_a_pool_goes_wherever_a_session_goes(qvq_replicas: Factory, marker: str) -> None:
    from qvq_gradio import Qwen_QVQ_72B, SessionLike

    servers = qvq_replicas(2)
    pool = Pool([s.url for s in servers])
    assert isinstance(pool, SessionLike)
    prompt = f"{marker} [[replica tokens=3 delay=0]]"
    chunks = [
        chunk
        async for chunk in Qwen_QVQ_72B.create_async_generator(
            model="qvq-72b", messages=[{"role": "user", "content": prompt}], session=pool
        )
    ]
    assert "".join(chunks) == expected_text(prompt, 3)
    await pool.aclose()


def test_sync_wrapper_and_module_functions_take_several_spaces(
    qvq_replicas: Factory, marker: str
) -> None:
    import qvq_gradio

    servers = qvq_replicas(2)
    prompt = f"{marker} [[replica tokens=3 delay=0]]"
    with SyncSession.wrap(Pool([s.url for s in servers])) as pool:
        assert pool.ask(prompt) == expected_text(prompt, 3)
    joined = ",".join(s.url for s in servers)
    assert qvq_gradio.ask(prompt, space=joined) == expected_text(prompt, 3)
    assert isinstance(qvq_gradio.shared_session(joined), Pool)
    assert isinstance(connect(servers[0].url), qvq_gradio.Session)


@pytest.mark.parametrize("bad", ["not-a-url", "ftp://x/y", "a/b/c", "owner/", " , "])
def test_a_space_that_is_neither_url_nor_id_is_refused_before_any_call(bad: str) -> None:
    with pytest.raises(SpaceNameError):
        Pool([bad, "owner/name"]) if bad.strip(" ,") else Pool(bad)


async def test_wait_true_waits_for_the_first_space_to_recover(
    qvq_replicas: Factory, marker: str
) -> None:
    # Each Space serves one question, then asks for a second's pause.
    servers = qvq_replicas(2, "--quota-budget", "1", "--quota-retry", "1")
    async with Pool([s.url for s in servers], wait=True) as pool:
        with anyio.fail_after(60):
            for i in range(4):
                prompt = f"{marker}-{i} [[replica tokens=2 delay=0]]"
                assert await pool.ask(prompt) == expected_text(prompt, 2)


async def test_a_batch_runs_on_a_pool(qvq_replicas: Factory, marker: str, tmp_path: Any) -> None:
    from qvq_gradio import batch

    servers = qvq_replicas(2)
    items = [{"id": str(i), "prompt": f"{marker}-{i} [[replica tokens=2]]"} for i in range(10)]
    async with Pool([s.url for s in servers]) as pool:
        result = await batch.arun(items, tmp_path / "out.jsonl", session=pool, concurrency=8)
    records = await anyio.to_thread.run_sync(list, result)
    assert result.summary.ok == 10
    assert {r["space"] for r in records} == {s.url for s in servers}
