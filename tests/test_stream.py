"""End-to-end streaming against the replica Space: answers, images, cancellation, resources."""

from __future__ import annotations

import gc
import hashlib
import io
import socket
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from qvq_gradio import Finished, Qwen_QVQ_72B, Session, SpaceConnectionError, TextDelta
from qvq_gradio.replica import REASONING_WORDS, ReplicaProcess, answer_head

from .conftest import Factory, ended

pytestmark = [pytest.mark.anyio, pytest.mark.adapter]


def expected_text(prompt: str, tokens: int, image: dict[str, Any] | None = None) -> str:
    """The replica's answer, rebuilt from its documented parts."""
    head = answer_head(prompt, image)
    words = REASONING_WORDS
    body = " ".join(words[i % len(words)] for i in range(tokens))
    return f"{head}{body}\n\n**Final Answer**\n\n\\boxed{{{tokens}}}"


async def test_text_answer_is_byte_exact(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    prompt = f"What is 2+2? {marker} [[replica tokens=30 delay=0.002]]"
    events = [event async for event in session.events(prompt)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert len(deltas) > 1, "the answer should arrive in pieces"
    assert "".join(deltas) == finished.text == expected_text(prompt, 30)
    record = await ended(replica, marker)
    assert record["state"] == "done"
    assert record["text"] == finished.text
    assert finished.time_to_first_token is not None
    assert 0 <= finished.time_to_first_token <= finished.elapsed


async def test_conversation_is_flattened(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"Hi {marker} [[replica tokens=1 delay=0]]"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    await session.ask(messages)
    record = await ended(replica, marker)
    assert record["prompt"] == (
        f"System: Be brief.\nUser: Hi {marker} [[replica tokens=1 delay=0]]\n"
        "Assistant: Hello!\nUser: Bye\nAssistant:"
    )


def _pixels_sha(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "tuple"])
async def test_image_reaches_the_space_intact(
    session: Session, replica: ReplicaProcess, marker: str, tmp_path: Path, kind: str
) -> None:
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4 % 256, y * 5 % 256, (x * y) % 256) for y in range(48) for x in range(64)])
    path = tmp_path / "picture.png"
    image.save(path)
    source: Any = {
        "path": str(path),
        "bytes": path.read_bytes(),
        "pil": image,
        "tuple": (path.read_bytes(), "picture.png"),
    }[kind]
    prompt = f"Describe {marker} [[replica tokens=3 delay=0]]"
    text = await session.ask(prompt, image=source)
    received = (await ended(replica, marker))["image"]
    assert received["width"] == 64 and received["height"] == 48
    assert received["mode"] == "RGB" and received["format"] == "PNG"
    assert received["sha256"] == _pixels_sha(image)
    assert f"pixels-sha256:{received['sha256']}" in text


async def test_rgba_image_is_composited_on_white(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    image = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    await session.ask(f"{marker} [[replica tokens=1 delay=0]]", image=buffer.getvalue())
    received = (await ended(replica, marker))["image"]
    assert received["sha256"] == _pixels_sha(Image.new("RGB", (40, 30), (255, 255, 255)))


async def test_provider_works_on_class_and_instance(replica: ReplicaProcess, marker: str) -> None:
    messages = [{"role": "user", "content": f"{marker} [[replica tokens=5 delay=0]]"}]
    for target in (Qwen_QVQ_72B, Qwen_QVQ_72B()):
        chunks = [
            chunk
            async for chunk in target.create_async_generator(
                model="qvq-72b", messages=messages, space=replica.url
            )
        ]
        assert all(isinstance(chunk, str) for chunk in chunks)
        assert "".join(chunks) == expected_text(messages[0]["content"], 5)


async def test_space_comes_from_environment(
    replica: ReplicaProcess, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QVQ_SPACE", replica.url)
    messages = [{"role": "user", "content": f"{marker} [[replica tokens=2 delay=0]]"}]
    gen = Qwen_QVQ_72B.create_async_generator("qwen-qvq-72b-preview", messages)
    assert "".join([c async for c in gen]) == expected_text(messages[0]["content"], 2)


# -- cancellation: the consumer stops early, the Space must stop generating -----------------------


async def _assert_stopped_early(replica: ReplicaProcess, marker: str, planned: int) -> None:
    record = await ended(replica, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] < planned


async def test_break_cancels_upstream(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    stream = session.stream(f"{marker} [[replica tokens=2000 delay=0.01]]")
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    await _assert_stopped_early(replica, marker, 2000)


async def test_break_without_aclose_cancels_upstream(replica: ReplicaProcess, marker: str) -> None:
    # The seed's usage: a bare `async for ... break`; the loop's async-generator finaliser
    # closes the abandoned generator.
    messages = [{"role": "user", "content": f"{marker} [[replica tokens=2000 delay=0.01]]"}]
    async for _ in Qwen_QVQ_72B.create_async_generator("qvq-72b", messages, space=replica.url):
        break
    gc.collect()
    await _assert_stopped_early(replica, marker, 2000)


async def test_task_cancellation_cancels_upstream(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    started = anyio.Event()

    async def consume() -> None:
        async for _ in session.stream(f"{marker} [[replica tokens=2000 delay=0.01]]"):
            started.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await started.wait()
        tg.cancel_scope.cancel()
    await _assert_stopped_early(replica, marker, 2000)


async def test_caller_timeout_cancels_upstream(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    # The replica hangs after 3 tokens, so only the caller's own timeout can end this.
    with anyio.move_on_after(1) as scope:
        async for _ in session.stream(f"{marker} [[replica tokens=50 delay=0 fail=hang after=3]]"):
            pass
    assert scope.cancelled_caught
    record = await ended(replica, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] == 3


# -- concurrency and resources ------------------------------------------------------------------


async def test_sixteen_concurrent_streams(
    qvq_replicas: Factory, marker: str
) -> None:
    # A replica of this test's own, generating up to 32 at once: the shared one generates 16,
    # and a request another test left running there (a cancel still on its way) kept the
    # sixteenth waiting in its queue.
    replica = qvq_replicas(1, "--concurrency", "32")[0]
    results: dict[int, str] = {}
    # Each waits for the other fifteen before its first token (the replica gives up after 30 s),
    # so they overlap only if the session really runs them at once.
    directives = f"tokens=100 delay=0.01 together={marker}:16"

    async with Session(replica.url, idle_timeout=60, total_timeout=120) as session:

        async def one(i: int) -> None:
            results[i] = await session.ask(f"{marker}-{i}- [[replica {directives}]]")

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(one, i)
    for i in range(16):
        assert results[i] == expected_text(f"{marker}-{i}- [[replica {directives}]]", 100)
    records = [r for r in await anyio.to_thread.run_sync(replica.requests) if marker in r["prompt"]]
    assert len(records) == 16
    # They really ran at the same time: every one started before any one ended.
    assert max(r["started"] for r in records) < min(r["ended"] for r in records)


def _our_temp_files() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("qvq-gradio-*"))


async def test_no_thread_or_temp_file_growth(session: Session, marker: str) -> None:
    image = Image.new("RGB", (32, 32), (1, 2, 3))
    for i in range(10):  # warm up: the client and its worker threads come into being
        await session.ask(f"{marker} w{i} [[replica tokens=2 delay=0]]", image=image)
    threads_before = threading.active_count()
    files_before = _our_temp_files()
    for i in range(100):
        await session.ask(f"{marker} {i} [[replica tokens=2 delay=0]]", image=image)
    assert _our_temp_files() == files_before == []
    # Thread pools may add a thread when a job is submitted just before the previous one's
    # thread went idle; a leak would add at least one thread per stream.
    assert threading.active_count() <= threads_before + 5


async def test_close_stops_every_thread(replica: ReplicaProcess, marker: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    session = Session(replica.url)
    await session.ask(f"{marker} [[replica tokens=3 delay=0]]")
    await session.aclose()
    leftover = [
        t
        for t in threading.enumerate()
        if t.ident not in before and not t.name.startswith("AnyIO worker")
    ]
    assert leftover == []
    with pytest.raises(RuntimeError, match="closed"):
        await session.ask("again")


async def test_memory_does_not_grow_with_answer_squared(session: Session, marker: str) -> None:
    # 3,000 cumulative outputs of ~7 KB average: kept by gradio_client as is, they would hold
    # ~20 MB at the end of the stream (~40 MB with its update queue).
    await session.ask(f"{marker} warm [[replica tokens=10 delay=0]]")
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        text = await session.ask(f"{marker} [[replica tokens=3000 delay=0]]")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(text) > 12_000
    assert peak - before < 2_000_000


async def test_no_telemetry_thread(replica: ReplicaProcess, marker: str, mocker: Any) -> None:
    import gradio_client.client

    spy = mocker.spy(gradio_client.client, "send_telemetry")
    async with Session(replica.url) as session:
        await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
        names = [t.name for t in threading.enumerate()]
    assert spy.call_count == 0
    assert not [n for n in names if "telemetry" in n]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_works_under_trio(replica: ReplicaProcess, marker: str) -> None:
    async with Session(replica.url) as session:
        prompt = f"{marker} [[replica tokens=20 delay=0.001]]"
        assert "".join([d async for d in session.stream(prompt)]) == expected_text(prompt, 20)
        stream = session.stream(f"{marker}-c [[replica tokens=2000 delay=0.01]]")
        async for _ in stream:
            break
        await stream.aclose()
    await _assert_stopped_early(replica, f"{marker}-c", 2000)


async def test_extra_headers_reach_the_space(replica: ReplicaProcess, marker: str) -> None:
    async with Session(replica.url, headers={"x-ip-token": "ip-token-value"}) as session:
        await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
    assert (await ended(replica, marker))["headers"] == {"x-ip-token": "ip-token-value"}


async def test_proxy_is_used(replica: ReplicaProcess, marker: str) -> None:
    with socket.socket() as sock:  # a proxy address nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with Session(replica.url, proxy=dead_proxy) as session:
        with pytest.raises(SpaceConnectionError):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")


async def test_closing_the_session_ends_its_streams(replica: ReplicaProcess, marker: str) -> None:
    session = Session(replica.url)
    stream = session.stream(f"{marker} [[replica tokens=2000 delay=0.01]]")
    await stream.__anext__()
    await session.aclose()
    with pytest.raises(SpaceConnectionError, match="Session was closed"):
        async for _ in stream:
            pass
    record = await ended(replica, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel


async def test_cancelled_right_after_submitting_still_cancels_upstream(
    session: Session, replica: ReplicaProcess, marker: str, mocker: Any
) -> None:
    from qvq_gradio.upstreams.gradio import QVQClient

    entered = threading.Event()
    jobs: list[Any] = []
    real_submit = QVQClient.submit

    def noted_submit(self: Any, *args: Any, **kwargs: Any) -> Any:
        jobs.append(real_submit(self, *args, **kwargs))  # returns at once: the job's thread
        entered.set()  # uploads and joins the queue
        return jobs[-1]

    mocker.patch.object(QVQClient, "submit", noted_submit)

    async def consume() -> None:
        async for _ in session.stream(f"{marker} [[replica tokens=3000 delay=0.01]]"):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.to_thread.run_sync(entered.wait, 30)
        tg.cancel_scope.cancel()  # the caller gives up before the job has joined the queue
    assert len(jobs) == 1  # the job exists upstream although the caller never saw it
    # The job was cancelled before it joined the Space's queue; the Space must still stop it.
    # Which of the two wins is a race: either the cancel took it off the queue before it
    # started (it never runs: no request logged, nothing queued), or it started and was
    # stopped. Running to its end is the failure.
    await session.aclose()  # waits for the cancels still going out
    record = await anyio.to_thread.run_sync(_started_or_gone, replica, marker)
    if record is not None:
        record = await ended(replica, marker)
        assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
        assert record["tokens_generated"] < 3000


def _started_or_gone(replica: ReplicaProcess, marker: str) -> dict[str, Any] | None:
    """The request's record once it started, or None when it never will: not logged and the
    Space's queue empty (a queued job would have started: the replica has free slots)."""
    try:
        return replica.wait_started(marker, timeout=5)
    except TimeoutError:
        status = httpx.get(f"{replica.url}/gradio_api/queue/status", timeout=10).json()
        assert status.get("queue_size") == 0, status
        found = [r for r in replica.requests() if marker in r["prompt"]]
        return found[0] if found else None


async def test_cancelling_one_stream_leaves_the_others_running(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    # Gradio's /cancel stops every task of a session; each job must have a session of its own.
    results: dict[str, str] = {}
    prompts = {name: f"{marker}-{name} [[replica tokens=150 delay=0.01]]" for name in "bcd"}

    async def finish(name: str) -> None:
        results[name] = await session.ask(prompts[name])

    async with anyio.create_task_group() as tg:
        for name in prompts:
            tg.start_soon(finish, name)
        for name in prompts:  # all three are generating
            await anyio.to_thread.run_sync(replica.wait_started, f"{marker}-{name}")
        stream = session.stream(f"{marker}-a [[replica tokens=150 delay=0.01]]")
        async for _ in stream:
            break
        await stream.aclose()
    assert (await ended(replica, f"{marker}-a"))["state"] == "cancelled"
    for name, prompt in prompts.items():
        assert results[name] == expected_text(prompt, 150)
        assert (await ended(replica, f"{marker}-{name}"))["state"] == "done"
