"""OpenAI-compatible endpoints as upstreams (``openai+BASE_URL#MODEL``), against a real one:
``qvq serve`` over the replica, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from qvq_gradio import (
    AuthenticationError,
    Finished,
    Pool,
    QuotaExceededError,
    ReasoningDelta,
    Session,
    ShapeFound,
    SpaceChanged,
    SpaceNameError,
    TextDelta,
)
from qvq_gradio.endpoints import parse_endpoint
from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.replica.host import HostedReplica

from .conftest import Served

pytestmark = pytest.mark.anyio

KEY = "sk-test-endpoint-key-0123456789"


# -- the spec -----------------------------------------------------------------------------------


def test_the_key_goes_where_the_spec_or_the_host_says_and_nowhere_else() -> None:
    named = parse_endpoint("openai+https://example.org/v1#m&key=MY_KEY")
    assert (named.base_url, named.model, named.key_var) == ("https://example.org/v1", "m", "MY_KEY")
    cases = {
        "https://api.openai.com/v1": "OPENAI_API_KEY",
        "https://router.huggingface.co/v1": "HF_TOKEN",
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1": "DASHSCOPE_API_KEY",
        "https://dashscope.aliyuncs.com/compatible-mode/v1": "DASHSCOPE_API_KEY",
        "https://my-vllm.example/v1": None,  # any other host: no key
        "http://127.0.0.1:8000/v1": None,
    }
    for base, variable in cases.items():
        assert parse_endpoint(f"openai+{base}#qvq-max").key_var == variable, base


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("openai+http://my-vllm.example/v1#m&key=K", "never sent over plain http"),
        ("openai+http://api.openai.com/v1#gpt", "never sent over plain http"),
        ("openai+https://example.org/v1", "names no model"),
        ("openai+https://example.org/v1#m&token=K", "only &key=VAR"),
        ("openai+https://user:pw@example.org/v1#m", "no credentials in the URL"),
        ("openai+ftp://example.org/v1#m", "must be http"),
    ],
)
def test_a_bad_spec_is_refused_in_one_line(spec: str, says: str) -> None:
    with pytest.raises(SpaceNameError, match=says):
        Session(spec)


def test_a_key_over_loopback_http_is_allowed() -> None:
    assert parse_endpoint("openai+http://localhost:8000/v1#m&key=K").key_var == "K"


# -- against a real endpoint --------------------------------------------------------------------


@pytest.fixture
def endpoint(
    served: Callable[..., Served], replica: ReplicaProcess, monkeypatch: pytest.MonkeyPatch
) -> str:
    """``qvq serve`` over the replica, behind a key: a real OpenAI-compatible endpoint."""
    monkeypatch.setenv("QVQ_TEST_ENDPOINT_KEY", KEY)
    server = served(replica.url, "--no-history", "--api-key", KEY)
    return f"openai+{server.base_url}#qvq-72b&key=QVQ_TEST_ENDPOINT_KEY"


async def _events(session: Any, prompt: Any, **options: Any) -> list[Any]:
    return [event async for event in session.events(prompt, **options)]


async def test_an_endpoint_streams_its_thinking_and_answer_with_the_image(
    endpoint: str, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    picture = tmp_path / "wide.png"
    Image.new("RGB", (80, 40), "green").save(picture)
    async with Session(endpoint) as session:
        events = await _events(
            session,
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": f"{marker} [[replica tokens=3 delay=0]]"}],
            image=str(picture),
        )
    assert isinstance(events[0], ShapeFound) and events[0].shape == "openai"
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert (finished.text, finished.reasoning) == (text, thinking)
    assert text == "\\boxed{3}" and thinking.startswith("Received prompt")
    # What the endpoint said of itself: the model that answered, the tokens it counted.
    assert finished.model == "qvq-72b"
    usage = dict(finished.usage or {})
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    record = await anyio.to_thread.run_sync(lambda: replica.wait_ended(marker))
    assert (record["image"]["width"], record["image"]["height"]) == (80, 40)
    assert "Be brief." in record["prompt"]  # the system message reached it
    assert KEY not in repr(events) and KEY not in str(session)


async def test_without_a_named_variable_no_key_is_sent_to_another_host(
    endpoint: str, marker: str
) -> None:
    unnamed = endpoint.replace("&key=QVQ_TEST_ENDPOINT_KEY", "")
    async with Session(unnamed) as session:
        with pytest.raises(AuthenticationError, match="no key is sent to this host") as caught:
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
    assert KEY not in str(caught.value)


async def test_an_unset_key_variable_is_named_before_anything_is_sent(
    endpoint: str, marker: str, monkeypatch: pytest.MonkeyPatch, replica: ReplicaProcess
) -> None:
    monkeypatch.delenv("QVQ_TEST_ENDPOINT_KEY")
    async with Session(endpoint) as session:
        with pytest.raises(SpaceNameError, match=r"\$QVQ_TEST_ENDPOINT_KEY is not set"):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
    assert not [r for r in replica.requests() if marker in r["prompt"]]


async def test_a_429_with_retry_after_is_a_quota_error_and_a_pool_fails_over(
    served: Callable[..., Served], start_replica: Callable[..., HostedReplica],
    endpoint: str, marker: str,
) -> None:
    broke = await anyio.to_thread.run_sync(lambda: start_replica("--fail", "quota"))
    front = await anyio.to_thread.run_sync(lambda: served(broke.url, "--no-history"))
    out_of_quota = f"openai+{front.base_url}#qvq-72b"
    async with Session(out_of_quota) as session:
        with pytest.raises(QuotaExceededError) as caught:
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
    assert caught.value.retry_after is not None and caught.value.retry_after > 60
    # A Space in quota trouble and an endpoint under one pool: the answer moves.
    async with Pool([broke.url, endpoint]) as pool:
        events = await _events(pool, f"{marker}-p [[replica tokens=2 delay=0]]")
    moves = [e.space for e in events if isinstance(e, SpaceChanged)]
    assert moves == [broke.url, parse_endpoint(endpoint).name]
    assert events[-1].text == "\\boxed{2}"


async def test_stopping_early_closes_the_request_and_the_job_upstream(
    endpoint: str, replica: ReplicaProcess, marker: str
) -> None:
    async with Session(endpoint) as session:
        events = session.events(f"{marker} [[replica tokens=400 delay=0.02]]")
        async for event in events:
            if isinstance(event, ReasoningDelta):
                break
        await events.aclose()
    record = await anyio.to_thread.run_sync(lambda: replica.wait_ended(marker))
    assert record["state"] == "cancelled" and record["tokens_generated"] < 400


def test_the_command_line_asks_an_endpoint(
    served: Callable[..., Served], replica: ReplicaProcess, marker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .test_cli import run

    monkeypatch.setenv("QVQ_TEST_ENDPOINT_KEY", KEY)
    server = served(replica.url, "--no-history", "--api-key", KEY)
    spec = f"openai+{server.base_url}#qvq-72b&key=QVQ_TEST_ENDPOINT_KEY"
    code, out, err = run(["ask", f"{marker} [[replica tokens=2 delay=0]]", "--space", spec,
                          "--no-history"])
    assert code == 0, err
    thinking, _, answer = out.rpartition("\n\n")
    assert thinking.startswith("Received prompt") and answer.strip() == "\\boxed{2}"
    code, out, err = run(["ask", "hi", "--space", spec.replace("QVQ_TEST_ENDPOINT_KEY", "NOPE")])
    assert code == 2 and "$NOPE is not set" in err and "Traceback" not in err


def test_serve_routes_each_named_model_to_its_spaces_and_endpoints(
    served: Callable[..., Served], replica: ReplicaProcess,
    start_replica: Callable[..., HostedReplica], marker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openai

    monkeypatch.setenv("QVQ_TEST_ENDPOINT_KEY", KEY)
    front = served(replica.url, "--no-history", "--api-key", KEY)
    chat = start_replica("--shape", "chat", "--think", "tags")
    spec = f"max=openai+{front.base_url}#qvq-72b&key=QVQ_TEST_ENDPOINT_KEY"
    server = served(f"qvq={chat.url}", "--space", spec, "--no-history")
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["qvq", "max"]
        for model in ("qvq", "max"):
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"{marker}-{model} [[replica tokens=2]]"}],
            )
            assert reply.choices[0].message.content == "\\boxed{2}", model
            assert reply.model == model
        with pytest.raises(openai.NotFoundError, match="serves qvq, max"):
            client.chat.completions.create(
                model="qvq-72b", messages=[{"role": "user", "content": "hi"}]
            )
    # Each model's question went where its name says.
    assert [r for r in chat.requests() if f"{marker}-qvq" in r["prompt"]]
    assert [r for r in replica.requests() if f"{marker}-max" in r["prompt"]]
    assert not [r for r in chat.requests() if f"{marker}-max" in r["prompt"]]


def test_a_name_keeps_a_url_with_equals_signs_whole() -> None:
    from qvq_gradio.spaces import parse_named

    assert parse_named(["a.b-c=owner/x", "https://x.hf.space/?t=1", "owner/y"]) == [
        ("a.b-c", "owner/x"), (None, "https://x.hf.space/?t=1"), (None, "owner/y")
    ]


def test_the_blocking_api_asks_an_endpoint_and_closes_its_connections(
    endpoint: str, marker: str
) -> None:
    import gc
    import warnings

    from qvq_gradio import SyncSession

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed socket fails the test
        with SyncSession(endpoint) as session:
            assert session.ask(f"{marker} [[replica tokens=2 delay=0]]") == "\\boxed{2}"
        gc.collect()


async def test_a_time_limit_ends_an_endpoints_answer_and_its_job(
    endpoint: str, replica: ReplicaProcess, marker: str
) -> None:
    from qvq_gradio import TotalTimeoutError

    async with Session(endpoint) as session:
        with pytest.raises(TotalTimeoutError) as caught:
            await session.ask(f"{marker} [[replica tokens=400 delay=0.02]]", total_timeout=1.5)
    assert caught.value.space == parse_endpoint(endpoint).name
    record = await anyio.to_thread.run_sync(lambda: replica.wait_ended(marker))
    assert record["state"] == "cancelled" and record["tokens_generated"] < 400


def test_a_query_in_the_base_url_is_sent_but_never_shown() -> None:
    endpoint = parse_endpoint("openai+https://example.org/v1/?sig=s3cr3t-value&v=2#m")
    assert endpoint.url("chat/completions") == (
        "https://example.org/v1/chat/completions?sig=s3cr3t-value&v=2"
    )
    assert endpoint.name == "openai+https://example.org/v1?sig=***&v=***#m"
    from qvq_gradio._secrets import redact

    assert "s3cr3t-value" not in redact("GET https://example.org/v1?sig=s3cr3t-value&v=2")
