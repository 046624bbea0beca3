"""``qvq serve`` driven by real clients: the openai SDK (sync and async) and raw HTTP."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from qvq_gradio.pytest_plugin import ServeProcess
from qvq_gradio.replica import ReplicaProcess

from .test_stream import expected_text

Serve = Callable[..., ServeProcess]
MODEL = "qwen-qvq-72b-preview"


@pytest.fixture
def server(qvq_server: Serve, replica: ReplicaProcess) -> ServeProcess:
    return qvq_server(replica.url, "--no-history", "--hold", "2", "--keepalive", "0.2")


def _client(server: ServeProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)


def _sse(response: httpx.Response) -> list[str]:
    return [line for line in response.iter_lines() if line]


def _chunks(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def _is_split(text: str, reasoning: str, content: str) -> None:
    """``reasoning`` is the text up to the heading's line, ``content`` the section after it."""
    assert text.startswith(reasoning) and text.endswith(content)
    assert text[len(reasoning) :].lstrip("\n").startswith("**Final Answer**")
    assert text[len(reasoning) :].removeprefix("\n**Final Answer**\n\n") == content


def test_models_and_an_unknown_model(server: ServeProcess) -> None:
    client = _client(server)
    assert [m.id for m in client.models.list()] == [MODEL, "qvq-72b"]
    assert client.models.retrieve("qvq-72b").id == "qvq-72b"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    raw = httpx.get(f"{server.base_url}/models/nope")
    assert raw.status_code == 404 and raw.json()["error"]["code"] == "model_not_found"


def test_chat_splits_the_reasoning_from_the_final_answer(
    server: ServeProcess, replica: ReplicaProcess, marker: str
) -> None:
    prompt = f"{marker} [[replica tokens=6 delay=0]]"
    done = _client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}],
        max_completion_tokens=50_000, seed=1, user="u", extra_body={"vendor_extra": {"a": 1}},
    )
    message = done.choices[0].message
    assert message.content == "\\boxed{6}"
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning == message.model_extra["reasoning"]
    _is_split(expected_text(prompt, 6), reasoning, message.content)
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_streaming_framing_usage_and_done(server: ServeProcess, marker: str) -> None:
    prompt = f"{marker} [[replica tokens=20 delay=0.01]]"
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = _sse(response)
    assert lines[-1] == "data: [DONE]"
    chunks = _chunks(lines)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *body_chunks, final, last = chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in body_chunks)
    assert final["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                   "finish_reason": "stop"}
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "")
                        for c in body_chunks)
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in body_chunks)
    assert content == "\\boxed{20}"
    _is_split(expected_text(prompt, 20), reasoning, content)
    assert len(body_chunks) > 10  # streamed as it arrived, not held back


def test_no_final_section_still_gives_content(server: ServeProcess, marker: str) -> None:
    prompt = f"{marker} [[replica tokens=5 delay=0 final=no]]"
    done = _client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}]
    )
    message = done.choices[0].message
    # No heading and no \boxed{}: the whole text, so a harness reading content sees it all.
    assert message.content == message.model_extra["reasoning_content"]
    assert message.content.startswith("Received prompt")


def test_inline_mode_is_the_spaces_text_byte_exact(
    qvq_server: Serve, replica: ReplicaProcess, marker: str
) -> None:
    server = qvq_server(replica.url, "--no-history", "--reasoning", "inline")
    prompt = f"{marker} [[replica tokens=7 delay=0]]"
    stream = _client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == expected_text(prompt, 7)


def _png_data_uri(size: tuple[int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_an_image_by_data_uri_reaches_the_space(
    server: ServeProcess, replica: ReplicaProcess, marker: str
) -> None:
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    content = [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": _png_data_uri((64, 48)), "detail": "high"}},
    ]
    _client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief"}]},
                  {"role": "user", "content": content}],
    )
    record = replica.wait_ended(marker)
    assert record["image"] is not None
    assert (record["image"]["width"], record["image"]["height"]) == (64, 48)


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([], "messages"),
        ([{"role": "wizard", "content": "x"}], "role"),
        ([{"role": "user", "content": [{"type": "audio", "audio": "x"}]}], "part type"),
        ([{"role": "user", "content": [{"type": "image_url",
                                         "image_url": {"url": "data:image/png;base64"}}]}],
         "data: URI"),
    ],
)
def test_bad_input_is_a_400_before_anything_is_sent(
    server: ServeProcess, replica: ReplicaProcess, marker: str, messages: Any, says: str
) -> None:
    messages = [*messages[:-1], {**messages[-1]}] if messages else messages
    if messages and isinstance(messages[-1].get("content"), list):
        messages[-1]["content"] = [{"type": "text", "text": marker}, *messages[-1]["content"]]
    for stream in (False, True):
        response = httpx.post(f"{server.base_url}/chat/completions", timeout=60,
                              json={"model": MODEL, "messages": messages, "stream": stream})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert says in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert not [r for r in replica.requests() if marker in r["prompt"]]


def test_a_wrong_key_is_a_401_in_openais_shape(
    qvq_server: Serve, replica: ReplicaProcess
) -> None:
    server = qvq_server(replica.url, "--no-history", "--api-key", "s3cret-key")
    with pytest.raises(openai.AuthenticationError):
        _client(server, "wrong").models.list()
    raw = httpx.get(f"{server.base_url}/models")
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"
    assert "s3cret-key" not in raw.text
    assert MODEL in [m.id for m in _client(server, "s3cret-key").models.list()]


def test_quota_is_a_429_with_retry_after_also_when_streaming(
    server: ServeProcess, marker: str
) -> None:
    prompt = f"{marker} [[replica fail=quota]]"
    for stream in (False, True):
        response = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": stream})
        assert response.status_code == 429
        assert 0 < int(response.headers["retry-after"]) <= 588
        assert response.json()["error"]["code"] == "quota_exceeded"


def test_an_unreachable_space_is_a_503(qvq_server: Serve) -> None:
    server = qvq_server("http://127.0.0.1:9", "--no-history", "--connect-timeout", "5")
    with pytest.raises(openai.InternalServerError) as caught:
        _client(server).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 503


def test_a_client_that_disconnects_mid_stream_cancels_the_space_job(
    server: ServeProcess, replica: ReplicaProcess, marker: str
) -> None:
    prompt = f"{marker} [[replica tokens=3000 delay=0.01]]"
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                      timeout=60) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n > 20:
                break  # leaving the block closes the connection
    record = replica.wait_ended(marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]
    assert record["tokens_generated"] < 3000


def test_sigterm_with_streams_in_flight_exits_and_cancels_them(
    qvq_server: Serve, replica: ReplicaProcess, marker: str
) -> None:
    server = qvq_server(replica.url, "--no-history")
    prompt = f"{marker} [[replica tokens=3000 delay=0.01]]"
    with httpx.stream("POST", f"{server.base_url}/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True,
    }) as response:
        lines = response.iter_lines()
        next(lines)
        # uvicorn shuts down gracefully, then ends by the signal it caught (as it documents).
        assert server.terminate(timeout=30) in (0, -15)
    record = replica.wait_ended(marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]


def test_the_responses_api_streaming_and_not(server: ServeProcess, marker: str) -> None:
    client = _client(server)
    prompt = f"{marker} [[replica tokens=4 delay=0]]"
    done = client.responses.create(model=MODEL, input=prompt, instructions="Think.")
    assert done.output_text == "\\boxed{4}"
    assert [item.type for item in done.output] == ["reasoning", "message"]
    events = list(client.responses.create(
        model=MODEL, stream=True,
        input=[{"role": "user", "content": [{"type": "input_text", "text": prompt}]}],
    ))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "\\boxed{4}" == events[-1].response.output_text


@pytest.mark.anyio
async def test_the_async_sdk_streams(server: ServeProcess, marker: str) -> None:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    prompt = f"{marker} [[replica tokens=5 delay=0]]"
    stream = await client.chat.completions.create(
        model="qvq-72b", messages=[{"role": "user", "content": prompt}], stream=True
    )
    content = ""
    async for chunk in stream:
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
    await client.close()
    assert content == "\\boxed{5}"


def test_a_non_loopback_host_without_a_key_is_refused(replica: ReplicaProcess) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "qvq_gradio", "serve", "--space", replica.url,
         "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "without an API key" in done.stderr and "Traceback" not in done.stderr
