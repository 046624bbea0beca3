"""The OpenAI-compatible upstream against the replica's endpoint (``qvq replica --shape
openai``): a real HTTP server on 127.0.0.1 with a key check, thinking in either field or in
tags, 429 with Retry-After, an account without quota, 400s, 500s, slow streams and a log of
who left early."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from qvq_gradio import (
    AppError,
    AuthenticationError,
    Finished,
    IdleTimeoutError,
    Pool,
    QuotaExceededError,
    ReasoningDelta,
    Session,
    SpaceChanged,
    SpaceConnectionError,
    TextDelta,
)
from qvq_gradio.endpoints import parse_endpoint
from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.replica.host import HostedReplica

from .conftest import STANDIN_KEY

pytestmark = pytest.mark.anyio

KEY = STANDIN_KEY

Standin = Callable[..., tuple[HostedReplica, str]]


async def _started(standin: Standin, *options: str) -> tuple[HostedReplica, str]:
    return await anyio.to_thread.run_sync(lambda: standin(*options))


async def _events(asking: Any, prompt: Any, **options: Any) -> list[Any]:
    return [event async for event in asking.events(prompt, **options)]


@pytest.mark.parametrize("think", ["reasoning_content", "reasoning", "tags"])
async def test_thinking_in_either_field_or_in_tags_comes_apart_from_the_answer(
    standin: Standin, marker: str, think: str
) -> None:
    server, spec = await _started(standin, "--think", think, "--served-model", "qvq-max-2025")
    async with Session(spec) as session:
        assert (await session.describe_shape()).startswith("openai: streamed chat completions")
        events = await _events(session, f"{marker} what is it?", temperature=0.3, max_tokens=64,
                               top_p=0.9)
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert thinking.startswith("Received prompt") and thinking.rstrip().endswith("look")
    assert text == finished.text == "\\boxed{3}"
    assert finished.reasoning == thinking
    # The provider's own model id, and its token counts, as it reported them.
    assert finished.model == "qvq-max-2025"
    usage = dict(finished.usage or {})
    assert usage["completion_tokens"] == 5 and usage["total_tokens"] > 5
    assert finished.applied == {"temperature": 0.3, "max_tokens": 64, "top_p": 0.9}
    (record,) = [r for r in server.requests() if marker in r["prompt"]]
    assert record["params"] | {"stream": True} == {
        "model": "qvq-max", "system": "", "stream": True, "messages": 1,
        "temperature": 0.3, "max_tokens": 64, "top_p": 0.9,
    }


async def test_several_images_go_as_several_parts_not_a_grid(
    standin: Standin, marker: str, tmp_path: Path
) -> None:
    server, spec = await _started(standin)
    wide, tall = tmp_path / "wide.png", tmp_path / "tall.jpg"
    Image.new("RGB", (80, 40), "green").save(wide)
    Image.new("RGB", (30, 60), "blue").save(tall)
    async with Session(spec) as session:
        answer = await session.ask(f"{marker} compare", media=[str(wide), tall.read_bytes()])
    assert answer == "\\boxed{3}"
    (record,) = [r for r in server.requests() if marker in r["prompt"]]
    sizes = [(image["width"], image["height"]) for image in record["images"]]
    assert sizes == [(80, 40), (30, 60)]
    assert "grid" not in record["prompt"]
    assert sorted(p.name for p in os.scandir(tmp_path)) == ["tall.jpg", "wide.png"]


async def test_a_pool_of_a_space_and_an_endpoint_sends_each_what_it_takes(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    server, spec = await _started(standin, "--fail", "server")
    one, two = tmp_path / "1.png", tmp_path / "2.png"
    Image.new("RGB", (64, 64), "red").save(one)
    Image.new("RGB", (64, 64), "white").save(two)
    async with Pool([spec, replica.url]) as pool:
        events = await _events(pool, f"{marker} [[replica tokens=2 delay=0]]",
                               media=[str(one), str(two)])
    assert [e.space for e in events if isinstance(e, SpaceChanged)][-1] == replica.url
    (asked,) = [r for r in server.requests() if marker in r["prompt"]]
    assert len(asked["images"]) == 2 and asked["state"] == "failed"
    record = await anyio.to_thread.run_sync(lambda: replica.wait_ended(marker))
    assert "grid of 2 pictures" in record["prompt"]
    assert record["image"]["width"] > 64  # one composite image


@pytest.mark.parametrize(
    ("fail", "error", "says"),
    [
        ("bad-request", AppError, r"refused the request \(400\): replica: refusing"),
        ("server", SpaceConnectionError, r"failed \(500\)"),
        ("no-quota", AuthenticationError, "no quota or billing .* not asked again"),
        ("echo-token", AuthenticationError, r"refused the key \(401.*QVQ_STANDIN_KEY"),
    ],
)
async def test_each_refusal_becomes_our_typed_error_without_the_key(
    standin: Standin, marker: str, fail: str, error: type[Exception], says: str
) -> None:
    _, spec = await _started(standin)
    async with Session(spec) as session:
        with pytest.raises(error, match=says) as caught:
            await session.ask(f"{marker} [[replica fail={fail}]]")
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


async def test_a_429_with_retry_after_is_a_quota_error_with_its_wait(
    standin: Standin, marker: str
) -> None:
    _, spec = await _started(standin, "--quota-retry", "42")
    async with Session(spec) as session:
        with pytest.raises(QuotaExceededError) as caught:
            await session.ask(f"{marker} [[replica fail=quota]]")
    assert caught.value.retry_after == 42


async def test_a_wrong_key_names_its_variable(
    standin: Standin, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, spec = await _started(standin)
    monkeypatch.setenv("QVQ_STANDIN_KEY", "sk-not-the-right-one-000")
    async with Session(spec) as session:
        with pytest.raises(AuthenticationError, match=r"\$QVQ_STANDIN_KEY") as caught:
            await session.ask(f"{marker} hi")
    assert "sk-not-the-right-one-000" not in str(caught.value)


async def test_an_error_mid_stream_keeps_what_had_come(standin: Standin, marker: str) -> None:
    _, spec = await _started(standin, "--think", "none")
    async with Session(spec) as session:
        with pytest.raises(AppError, match="failing after 2 tokens") as caught:
            await session.ask(f"{marker} [[replica tokens=9 fail=mid after=2]]")
    assert caught.value.text.startswith("Received prompt")


async def test_a_client_leaving_a_slow_stream_is_logged_as_gone(
    standin: Standin, marker: str
) -> None:
    server, spec = await _started(standin, "--think", "reasoning")
    async with Session(spec) as session:
        events = session.events(f"{marker} [[replica tokens=400 delay=0.05]]")
        async for event in events:
            if isinstance(event, ReasoningDelta) and "Let" in event.text:
                break
        await events.aclose()
    record = await anyio.to_thread.run_sync(lambda: server.wait_ended(marker))
    assert record["state"] == "cancelled" and 0 < record["tokens_generated"] < 400


async def test_an_endpoint_gone_silent_ends_at_the_idle_limit(
    standin: Standin, marker: str
) -> None:
    server, spec = await _started(standin)
    async with Session(spec) as session:
        with pytest.raises(IdleTimeoutError):
            await session.ask(f"{marker} [[replica tokens=9 fail=hang after=1]]",
                              idle_timeout=1.0)
    record = await anyio.to_thread.run_sync(lambda: server.wait_ended(marker))
    assert record["state"] == "cancelled" and record["tokens_generated"] == 1


def test_serve_in_front_of_an_endpoint_out_of_quota_passes_the_429_on(
    standin: Standin, served: Callable[..., Any], marker: str
) -> None:
    import openai

    _, spec = standin("--quota-retry", "42", "--fail", "quota")
    server = served(spec, "--no-history")
    with (
        openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.chat.completions.create(
            model="qvq-72b", messages=[{"role": "user", "content": marker}]
        )
    assert int(caught.value.response.headers["retry-after"]) in range(30, 43)
    assert KEY not in caught.value.response.text


async def test_the_history_keeps_the_name_model_and_usage_but_never_the_key(
    standin: Standin, marker: str, tmp_path: Path
) -> None:
    from qvq_gradio.history import History
    from qvq_gradio.pool import connect_named

    _, spec = await _started(standin, "--served-model", "qvq-max-2025")
    database = tmp_path / "history.db"
    sessions = await anyio.to_thread.run_sync(
        lambda: connect_named([f"max={spec}"], history=str(database), cache=True)
    )
    async with sessions["max"] as session:
        first = await session.ask(f"{marker} hello")
        again = [e async for e in session.events(f"{marker} hello")]
    assert isinstance(again[-1], Finished) and again[-1].cached
    assert again[-1].text == first and again[-1].model == "qvq-max-2025"
    def rows() -> list[Any]:
        with History(database) as history:
            return history.search(marker)

    hit, row = await anyio.to_thread.run_sync(rows)
    assert (row.name, row.model_id, row.space) == ("max", "qvq-max-2025", spec)
    assert row.usage is not None and row.usage["total_tokens"] > 0
    assert (hit.name, hit.from_cache, hit.usage) == ("max", True, None)  # nothing spent
    assert KEY.encode() not in await anyio.Path(database).read_bytes()


@pytest.fixture
def https_standin(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[HostedReplica, str, Any]]:
    """The stand-in behind a TLS front (``https://localhost:PORT``) whose certificate a test
    CA signed, that CA trusted through ``SSL_CERT_FILE``; and the CA."""
    import trustme

    from qvq_gradio import _tls

    from .relay import Relay

    server, _ = standin()
    authority = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(tls)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setattr(_tls, "_context", None)  # built again, from SSL_CERT_FILE
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                     "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    port = int(server.url.rsplit(":", 1)[1])
    with Relay(("127.0.0.1", port), tls) as front:
        yield server, f"openai+{front.url}/v1#qvq-max&key=QVQ_STANDIN_KEY", authority
    _tls._context = None


def test_an_endpoint_over_https_trusts_ssl_cert_file_and_goes_through_a_proxy(
    https_standin: tuple[HostedReplica, str, Any], marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qvq_gradio import SpaceConnectionError, SyncSession

    from .relay import Relay

    server, spec, _ = https_standin
    with SyncSession(spec) as session:  # verified against the CA of SSL_CERT_FILE
        assert session.ask(f"{marker}-direct") == "\\boxed{3}"
    port = spec.split(":")[2].split("/")[0]
    with Relay() as proxy:
        with SyncSession(spec, proxy=proxy.url) as session:  # --proxy / proxy=
            assert session.ask(f"{marker}-given") == "\\boxed{3}"
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)  # as for Spaces: the environment's
        with SyncSession(spec) as session:
            assert session.ask(f"{marker}-env") == "\\boxed{3}"
        assert proxy.tunnels == [f"localhost:{port}"] * 2
    prompts = [r["prompt"] for r in server.requests()]
    assert {f"{marker}-direct", f"{marker}-given", f"{marker}-env"} <= set(prompts)
    # A certificate nobody vouched for is refused, typed, nothing sent.
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("SSL_CERT_FILE")
    from qvq_gradio import _tls

    monkeypatch.setattr(_tls, "_context", None)  # built again: certifi's CAs only
    with SyncSession(spec) as session, pytest.raises(SpaceConnectionError, match="Could not"):
        session.ask(f"{marker}-untrusted")
    assert f"{marker}-untrusted" not in [r["prompt"] for r in server.requests()]


def test_the_pytest_plugins_server_takes_an_endpoint_spec(
    standin: Standin, qvq_server: Callable[..., Any], marker: str
) -> None:
    import openai

    _, spec = standin()
    server = qvq_server(spec, "--no-history")  # its key variable goes with it
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="qvq-72b", messages=[{"role": "user", "content": f"{marker} hi"}]
        )
    assert reply.choices[0].message.content == "\\boxed{3}"
    assert reply.choices[0].message.model_extra["reasoning_content"].startswith("Received")


def test_one_name_fails_over_from_a_space_out_of_quota_to_an_endpoint(
    standin: Standin, start_replica: Callable[..., HostedReplica],
    served: Callable[..., Any], marker: str,
) -> None:
    import openai

    endpoint, spec = standin()
    broke = start_replica("--fail", "quota")
    server = served(f"qvq={broke.url}", "--space", f"qvq={spec}", "--no-history")
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["qvq"]
        reply = client.chat.completions.create(
            model="qvq", messages=[{"role": "user", "content": f"{marker} hi"}]
        )
    assert reply.choices[0].message.content == "\\boxed{3}"
    assert [r for r in broke.requests() if marker in r["prompt"]]  # asked first, out of quota
    assert [r for r in endpoint.requests() if marker in r["prompt"]]  # then the endpoint


def test_qvq_space_may_name_endpoints_beside_spaces(
    standin: Standin, start_replica: Callable[..., HostedReplica], marker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .test_cli import run

    endpoint, spec = standin()
    broke = start_replica("--fail", "quota")
    monkeypatch.setenv("QVQ_SPACE", f"{broke.url},{spec}")
    code, out, err = run(["ask", f"{marker} hi", "--no-history", "--json"])
    assert code == 0, err
    assert json.loads(out)["space"] == parse_endpoint(spec).name
    assert [r for r in endpoint.requests() if marker in r["prompt"]]


def test_ctrl_c_closes_the_endpoints_request_and_exits_130(
    standin: Standin, marker: str
) -> None:
    import signal
    import subprocess
    import sys

    from .conftest import replica_env

    server, spec = standin("--think", "none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qvq_gradio.cli", "ask", "--no-history",
         f"{marker} [[replica tokens=5000 delay=0.01]]"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**replica_env(), "QVQ_SPACE": spec, "QVQ_STANDIN_KEY": KEY},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(8) == "Received"  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    record = server.wait_ended(marker)
    assert record["state"] == "cancelled" and record["tokens_generated"] < 5000


def test_spaces_status_and_info_check_an_endpoint_without_asking_it(
    standin: Standin, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_cli import run

    server, spec = standin("--served-model", "qvq-max")
    code, out, err = run(["spaces", "--space", spec, "--json"])
    assert code == 0, err
    check = json.loads(out)
    assert (check["reachable"], check["usable"], check["protocol"]) == (True, True, "openai")
    code, out, err = run(["status", "--space", spec])
    assert code == 0 and "Up:    an OpenAI-compatible endpoint" in out
    assert "model 'qvq-max' (the key from $QVQ_STANDIN_KEY" in out
    code, out, err = run(["info", "--space", spec])
    assert code == 0 and "Models it lists: qvq-max" in out
    assert not server.requests()  # nothing was asked
    # A key it refuses: reachable, not usable, the variable named, the key never shown.
    monkeypatch.setenv("QVQ_STANDIN_KEY", "sk-wrong-key-000000")
    code, out, err = run(["spaces", "--space", spec])
    assert code == 3 and "QVQ_STANDIN_KEY" in err and "sk-wrong-key-000000" not in out + err
    monkeypatch.delenv("QVQ_STANDIN_KEY")
    code, out, err = run(["info", "--space", spec])
    assert code == 2 and "$QVQ_STANDIN_KEY is not set" in err and "Traceback" not in err
