"""``qvq serve`` driven by real clients: the openai SDK (sync and async) and raw HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import signal
import threading
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from qvq_gradio.pytest_plugin import ServeProcess
from qvq_gradio.replica import ReplicaProcess

from .conftest import Served as InProcess
from .test_stream import expected_text

Serve = Callable[..., ServeProcess]
Served = Callable[..., InProcess]
MODEL = "qwen-qvq-72b-preview"


@pytest.fixture
def server(served: Served, replica: ReplicaProcess) -> ServeProcess:
    return served(replica.url, "--no-history", "--hold", "2", "--keepalive", "0.2")


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    """Every SDK client a test made is closed after it (their sockets, not the GC's)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(server: ServeProcess, key: str = "unused") -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)
    _OPEN.append(client)
    return client


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
    served: Served, replica: ReplicaProcess, marker: str
) -> None:
    server = served(replica.url, "--no-history", "--reasoning", "inline")
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
    served: Served, replica: ReplicaProcess
) -> None:
    server = served(replica.url, "--no-history", "--api-key", "s3cret-key")
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


def test_an_unreachable_space_is_a_503(served: Served) -> None:
    server = served("http://127.0.0.1:9", "--no-history", "--connect-timeout", "5")
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


def _stream_lines(server: ServeProcess, prompt: str, started: threading.Event) -> list[str]:
    """A streamed answer's lines; ``started`` is set once its first line has come."""
    lines = []
    with _post_stream(server, prompt) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                lines.append(line)
                started.set()
    return lines


def _ends_shutting_down(lines: list[str]) -> None:
    assert lines[-1] == "data: [DONE]", lines[-3:]
    assert json.loads(lines[-2][6:])["error"]["code"] == "shutting_down"


def test_sigterm_ends_every_answer_in_flight_and_exits_0(
    qvq_server: Serve, replica: ReplicaProcess, marker: str
) -> None:
    """Running answers get the grace period, then end with an error chunk and [DONE] (a
    stream) or a 503 (a whole answer); a waiting one ends at once; the Space jobs are
    cancelled; no traceback; exit 0."""
    server = qvq_server(replica.url, "--no-history", "--shutdown-grace", "1",
                        "--max-running", "2", "--hold", "0.2", "--keepalive", "0.2")
    long = "[[replica tokens=3000 delay=0.01]]"
    streamed, whole, waiting = (f"{marker}-{n}" for n in ("streamed", "whole", "waiting"))
    first, queued = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        stream = pool.submit(_stream_lines, server, f"{streamed} {long}", first)
        answer = pool.submit(httpx.post, f"{server.base_url}/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": f"{whole} {long}"}]})
        assert first.wait(30)
        replica.wait_started(whole)
        behind = pool.submit(_stream_lines, server, f"{waiting} {long}", queued)
        assert queued.wait(30)  # its headers came after the hold, while it waits for a slot
        assert server.terminate(timeout=30) == 0
        _, stderr = server.process.communicate()
        _ends_shutting_down(stream.result())
        _ends_shutting_down(behind.result())
        response = answer.result()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down"
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    for name in (streamed, whole):
        record = replica.wait_ended(name)
        assert record["state"] == "cancelled" and record["cancel_requested"]
    assert not [r for r in replica.requests() if waiting in r["prompt"]]


def test_sigint_lets_an_answer_finish_within_the_grace_period(
    qvq_server: Serve, replica: ReplicaProcess, marker: str
) -> None:
    server = qvq_server(replica.url, "--no-history", "--shutdown-grace", "60")
    first = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stream = pool.submit(_stream_lines, server, f"{marker} [[replica tokens=15 delay=0.05]]",
                             first)
        assert first.wait(30)
        server.process.send_signal(signal.SIGINT)
        lines = stream.result()
    assert server.process.wait(60) == 0
    _, stderr = server.process.communicate()
    assert lines[-1] == "data: [DONE]"
    chunks = _chunks(lines)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "\\boxed{15}"
    assert "Traceback" not in stderr, stderr
    # Stopped: it accepts nothing more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/models", timeout=10)


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
    prompt = f"{marker} [[replica tokens=5 delay=0]]"
    content = ""
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="qvq-72b", messages=[{"role": "user", "content": prompt}], stream=True
        )
        async for chunk in stream:
            if chunk.choices:
                content += chunk.choices[0].delta.content or ""
    assert content == "\\boxed{5}"


def test_a_non_loopback_host_without_a_key_is_refused(replica: ReplicaProcess) -> None:
    import subprocess
    import sys

    # Several times: the command refuses before its modules are imported, while the CA bundle
    # may still be loading on a thread of its own (see qvq_gradio._tls.warm_up); a daemon
    # thread there made most of these exits a segfault.
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-m", "qvq_gradio", "serve", "--space", replica.url,
             "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "without an API key" in done.stderr and "Traceback" not in done.stderr


def _post_stream(server: ServeProcess, prompt: str, **timeouts: float) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    return httpx.stream("POST", f"{server.base_url}/chat/completions", json=body,
                        timeout=httpx.Timeout(60, **timeouts))


def test_queued_streams_get_keepalives_and_a_disconnect_there_cancels(
    qvq_replicas: Any, served: Served, marker: str
) -> None:
    (space,) = qvq_replicas(1, "--concurrency", "1")
    server = served(space.url, "--no-history", "--hold", "0.3", "--keepalive", "0.2")
    first, queued, after = (f"{marker}-{n}" for n in ("first", "queued", "after"))
    with _post_stream(server, f"{first} [[replica tokens=3000 delay=0.01]]") as running:
        lines = running.iter_lines()
        next(lines)
        space.wait_started(first)
        with _post_stream(server, f"{queued} [[replica tokens=5 delay=0]]") as waiting:
            assert waiting.status_code == 200  # headers after the hold, while queued
            comments = []
            for line in waiting.iter_lines():
                if line.startswith(":"):
                    comments.append(line)
                # A keep-alive every 0.2 s; the queue's word comes when the Space says it
                # (later on a busy machine): read until it came, or 100 comments (20 s).
                if any(c.startswith(": queued") for c in comments) or len(comments) >= 100:
                    break  # leaving the block disconnects: the queued job is cancelled
        assert any(c.startswith(": queued") for c in comments), comments
    assert space.wait_ended(first)["cancel_requested"]
    # One request at a time, in order: had the queued job survived, it would run before this.
    done = _client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"{after} [[replica tokens=2]]"}]
    )
    assert done.choices[0].message.content == "\\boxed{2}"
    records = [r for r in space.requests() if queued in r["prompt"]]
    assert all(r["state"] == "cancelled" for r in records), records


def test_an_error_after_text_is_a_last_error_chunk_then_done(
    server: ServeProcess, marker: str
) -> None:
    with _post_stream(server, f"{marker} [[replica tokens=50 delay=0 fail=mid after=5]]") as r:
        assert r.status_code == 200
        lines = _sse(r)
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "space_error" and "failing after 5 tokens" in error["message"]


@pytest.mark.parametrize(
    ("directive", "status"), [("fail=before", 502), ("fail=hang after=0", 504)]
)
def test_the_spaces_errors_and_timeouts_have_their_statuses(
    served: Served, replica: ReplicaProcess, marker: str, directive: str, status: int
) -> None:
    server = served(replica.url, "--no-history", "--idle-timeout", "1")
    prompt = f"{marker} [[replica {directive}]]"
    response = httpx.post(f"{server.base_url}/chat/completions", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": prompt}]})
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_an_image_by_url_and_the_history_and_cache(
    served: Served, replica: ReplicaProcess, marker: str, tmp_path: Any
) -> None:
    import functools
    import http.server
    import threading

    Image.new("RGB", (40, 30), (0, 90, 200)).save(tmp_path / "blue.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{images.server_address[1]}/blue.png"
        server = served(replica.url, "--cache", "--allow-private-urls",
                        home=str(tmp_path / "home"))
        messages = [{"role": "user", "content": [
            {"type": "text", "text": f"{marker} [[replica tokens=2 delay=0]]"},
            {"type": "image_url", "image_url": url}]}]
        first = _client(server).chat.completions.create(model=MODEL, messages=messages)
        record = replica.wait_ended(marker)
        assert (record["image"]["width"], record["image"]["height"]) == (40, 30)
        again = _client(server).chat.completions.create(model=MODEL, messages=messages)
        assert again.choices[0].message.content == first.choices[0].message.content
        # Answered from the history: the Space was asked once.
        assert len([r for r in replica.requests() if marker in r["prompt"]]) == 1
    finally:
        images.shutdown()
        images.server_close()


def test_health_shows_each_space_of_a_pool(qvq_replicas: Any, served: Served) -> None:
    spaces = qvq_replicas(2)
    server = served(",".join(s.url for s in spaces), "--no-history")
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert [row["space"] for row in health["spaces"]] == [s.url for s in spaces]
    assert health["status"] == "ok"


def test_every_space_of_a_pool_cooling_is_a_429_with_retry_after(
    qvq_replicas: Any, served: Served, marker: str
) -> None:
    spaces = qvq_replicas(2)
    server = served(",".join(s.url for s in spaces), "--no-history",
                        "--connect-timeout", "5")
    for space in spaces:
        space.kill()
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"{marker} hi"}]}
    first = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert first.status_code in (429, 503)  # the last Space tried failed, or all cool already
    again = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert again.status_code == 429, again.text
    assert again.json()["error"]["code"] == "all_spaces_cooling"
    assert 1 <= int(again.headers["retry-after"]) <= 120
