"""Every error type, end to end where a real server can produce it."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from qvq_gradio import (
    AppError,
    AuthenticationError,
    ConnectTimeoutError,
    IdleTimeoutError,
    MediaError,
    MessagesError,
    QueueUpdate,
    QuotaExceededError,
    Qwen_QVQ_72B,
    RateLimitError,
    ResponseError,
    Session,
    ShapeFound,
    SpaceConnectionError,
    TextDelta,
    TotalTimeoutError,
    UnknownModelError,
)
from qvq_gradio.replica import ReplicaProcess

from .conftest import ended

pytestmark = [pytest.mark.anyio, pytest.mark.adapter]

TOKEN = "hf_replicaSecretToken0123456789abcdef"


async def test_app_error_before_first_token(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    deltas: list[str] = []
    with pytest.raises(AppError, match="failing before the first token") as caught:
        async for delta in session.stream(f"{marker} [[replica fail=before]]"):
            deltas.append(delta)
    assert deltas == []
    assert caught.value.space == replica.url
    assert isinstance(caught.value, ResponseError)


async def test_app_error_mid_stream(session: Session, marker: str) -> None:
    deltas: list[str] = []
    with pytest.raises(AppError, match="failing after 4 tokens"):
        async for delta in session.stream(
            f"{marker} [[replica tokens=20 delay=0 fail=mid after=4]]"
        ):
            deltas.append(delta)
    assert "".join(deltas).endswith("Let me look at")  # after=4: four words, then the error


async def test_quota_message_is_parsed(session: Session, marker: str) -> None:
    with pytest.raises(QuotaExceededError) as caught:
        await session.ask(f"{marker} [[replica fail=quota]]")
    error = caught.value
    assert error.retry_after == 9 * 60 + 48
    assert "GPU quota" in error.message
    assert "<a" not in error.message and "href" not in error.message


async def test_idle_timeout_cancels_upstream(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    with pytest.raises(IdleTimeoutError) as caught:
        async for _ in session.stream(
            f"{marker} [[replica tokens=50 delay=0 fail=hang after=3]]", idle_timeout=0.5
        ):
            pass
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.text.endswith("Let me look")  # what arrived is kept
    record = await ended(replica, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] == 3


async def test_total_timeout_cancels_upstream(
    session: Session, replica: ReplicaProcess, marker: str
) -> None:
    with pytest.raises(TotalTimeoutError):
        await session.ask(f"{marker} [[replica tokens=5000 delay=0.01]]", total_timeout=0.5)
    record = await ended(replica, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] < 5000


async def test_unreachable_space(no_blocking: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Session(f"http://127.0.0.1:{port}") as session:
        with pytest.raises(SpaceConnectionError, match="Could not reach http"):
            await session.ask("hello")


async def test_connect_timeout(no_blocking: Any) -> None:
    with socket.socket() as sock:  # accepts connections into its backlog, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with Session(url, connect_timeout=0.5) as session:
            with pytest.raises(ConnectTimeoutError):
                await session.ask("hello")


# -- authentication and secrets -------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_replica(qvq_replica_host: Any) -> Iterator[Any]:
    from qvq_gradio.cli.replica import replica_config

    server = qvq_replica_host.start(replica_config(["--require-token", TOKEN]))
    yield server
    server.stop()


async def test_authentication(
    private_replica: ReplicaProcess, marker: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (None, "hf_wrongTokenWrongToken000000000000"):
        async with Session(private_replica.url, token=token) as session:
            with pytest.raises(AuthenticationError) as caught:
                await session.ask("hello")
            assert "hf_" not in str(caught.value)
    async with Session(private_replica.url, token=TOKEN) as session:
        text = await session.ask(f"{marker} [[replica tokens=2 delay=0]]")
        assert marker in text
        shown = [repr(session), str(session), repr(session.config)]
    messages = [{"role": "user", "content": f"{marker}-p [[replica tokens=1 delay=0]]"}]
    chunks = [
        c
        async for c in Qwen_QVQ_72B.create_async_generator(
            "qvq-72b", messages, api_key=TOKEN, space=private_replica.url
        )
    ]
    assert marker in "".join(chunks)
    shown += [record.getMessage() for record in caplog.records]
    assert not [line for line in shown if TOKEN in line]


async def test_the_environments_token_is_not_sent_to_another_host(
    private_replica: ReplicaProcess, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$HF_TOKEN goes to Hugging Face's hosts only: a Space on 127.0.0.1 is not sent it."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    async with Session(private_replica.url) as session:
        with pytest.raises(AuthenticationError):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")


# -- queue: position updates, then a full queue ---------------------------------------------------


async def test_queue_updates_and_full_queue(marker: str, start_replica: Any) -> None:
    server = await anyio.to_thread.run_sync(
        lambda: start_replica("--concurrency", "1", "--max-queue", "1")
    )
    async with Session(server.url) as session:
        running = session.stream(f"{marker}-a [[replica tokens=5 delay=0 fail=hang after=1]]")
        await running.__anext__()  # generating, and will hang: holds the one slot
        waiting = session.events(f"{marker}-b [[replica tokens=1 delay=0]]")
        found = await waiting.__anext__()
        assert isinstance(found, ShapeFound) and found.shape == "qvq"
        update = await waiting.__anext__()
        assert isinstance(update, QueueUpdate)
        assert update.position == 0
        with pytest.raises(RateLimitError, match=r"queue of http://127\.0\.0\.1:\d+ is full"):
            await session.ask(f"{marker}-c")
        await running.aclose()  # frees the slot: the waiting job now runs to the end
        rest = [event async for event in waiting]
        assert any(isinstance(event, TextDelta) for event in rest)


# -- failures a real server cannot easily produce (pytest-mock) ----------------------------------


def _joins_answer(mocker: Any, answer: Callable[[httpx.Request], httpx.Response]) -> None:
    """Every join of the queue gets ``answer(request)`` instead of the Space's response (other
    requests go through). Joins go out on httpx's connection pools, sync (from the job's
    thread) or async (on the loop, for a question asked alone): both are patched at httpx."""
    real_send = httpx.Client.send
    real_async_send = httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if request.url.path.endswith("/queue/join"):
            return answer(request)
        return real_send(self, request, **kwargs)

    async def async_send(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        if request.url.path.endswith("/queue/join"):
            return answer(request)
        return await real_async_send(self, request, **kwargs)

    mocker.patch.object(httpx.Client, "send", autospec=True, side_effect=send)
    mocker.patch.object(httpx.AsyncClient, "send", autospec=True, side_effect=async_send)


async def test_http_429_on_join_is_a_rate_limit(session: Session, mocker: Any) -> None:
    _joins_answer(mocker, lambda request: httpx.Response(429, request=request))
    with pytest.raises(RateLimitError, match="429"):
        await session.ask("hello")


async def test_failure_before_first_server_message_does_not_hang(
    session: Session, mocker: Any
) -> None:
    # gradio_client's own iterator spins forever here (docs/design.md); completion comes from
    # the Future.
    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection reset", request=request)

    _joins_answer(mocker, reset)
    with anyio.fail_after(30), pytest.raises(SpaceConnectionError, match="connection reset"):
        await session.ask("hello")


# -- bad input: a typed error, raised before anything is sent -------------------------------------


async def _requests_with(replica: ReplicaProcess, marker: str) -> list[dict[str, Any]]:
    records = await anyio.to_thread.run_sync(replica.requests)
    return [r for r in records if marker in r["prompt"]]


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ("just a string", "must be a list"),
        ([{"role": "bot", "content": "hi"}], "role must be one of"),
        ([{"role": "user"}], "no 'content'"),
        ([{"role": "user", "content": 42}], "content must be a string"),
        ([{"role": "system", "content": "rules"}], "no user message"),
        ([{"role": "user", "content": "   "}], "prompt is empty"),
        ([{"role": "user", "content": [{"type": "video", "url": "x"}]}], "unknown part type"),
        (["not a dict"], "expected a dict"),
    ],
)
def test_bad_messages_raise_at_call_time(messages: Any, match: str) -> None:
    with pytest.raises(MessagesError, match=match):
        Qwen_QVQ_72B.create_async_generator("qvq-72b", messages, space="http://127.0.0.1:9")


def test_unknown_model_names_the_valid_ones() -> None:
    with pytest.raises(UnknownModelError) as caught:
        Qwen_QVQ_72B.create_async_generator("gpt-5", [{"role": "user", "content": "hi"}])
    assert "qwen-qvq-72b-preview" in str(caught.value) and "qvq-72b" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "media",
    [
        b"",
        b"this is plain text, not an image",
        "/no/such/file.png",
        b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
    ],
)
async def test_bad_media_is_refused_before_sending(
    session: Session, replica: ReplicaProcess, marker: str, media: Any
) -> None:
    with pytest.raises(MediaError):
        await session.ask(f"{marker} hello", image=media)
    assert await _requests_with(replica, marker) == []


async def test_unsupported_media_type_lists_what_is_accepted(session: Session) -> None:
    with pytest.raises(TypeError, match=r"PIL\.Image\.Image"):
        await session.ask("hello", image=12345)


async def test_truncated_image_is_a_media_error(
    session: Session, replica: ReplicaProcess, marker: str, tmp_path: Any
) -> None:
    path = tmp_path / "cut.png"
    Image.new("RGB", (200, 200), (9, 9, 9)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(MediaError):
        await session.ask(f"{marker}", image=path)
    assert await _requests_with(replica, marker) == []


def test_session_stream_refuses_bad_input_at_call_time() -> None:
    session = Session("http://127.0.0.1:9")
    with pytest.raises(MessagesError):
        session.stream([])  # no iteration needed: nothing is sent, nothing is started
    with pytest.raises(TypeError, match="accepted"):
        session.stream("hi", image=12345)
    session.close()
