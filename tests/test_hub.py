"""Spaces given as ``owner/name``: the real huggingface_hub code path, against a local Hub.

huggingface_hub reads ``HF_ENDPOINT`` when imported, so each check runs in a child process
(the ``qvq`` command, or a short script) pointed at :class:`~tests.hub.FakeHub`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qvq_gradio.replica import ReplicaProcess

from .conftest import replica_env
from .hub import FakeHub, HubSpace
from .test_stream import expected_text

pytestmark = pytest.mark.adapter


@pytest.fixture(scope="module")
def hub(qvq_replica: ReplicaProcess) -> Iterator[FakeHub]:
    """One stand-in Hub for the module (each test names Spaces of its own)."""
    with FakeHub() as fake:
        fake.spaces["owner/good"] = HubSpace(qvq_replica.url)
        yield fake


def _env(endpoint: str) -> dict[str, str]:
    env = replica_env()
    env.pop("HF_HUB_OFFLINE", None)
    env.update(HF_ENDPOINT=endpoint, HF_HOME=env.get("HF_HOME", "/nonexistent-hf-home"))
    return env


def qvq(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qvq_gradio", *args],
        capture_output=True,
        text=True,
        env=_env(endpoint),
        timeout=120,
    )


_RUNNER = """
import contextlib, io, json, sys
from qvq_gradio.cli import main
for line in sys.stdin:
    command = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if "argv" in command:
            code = main(command["argv"])
        else:
            exec(command["python"], {})
            code = 0
    print(json.dumps([code, out.getvalue(), err.getvalue()]), flush=True)
"""


class HubCommands:
    """One process pointed at the stand-in Hub (huggingface_hub reads ``HF_ENDPOINT`` when
    imported) that runs ``qvq`` commands, and Python, one after the other, for the module."""

    def __init__(self, endpoint: str) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _RUNNER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=_env(endpoint))

    def _send(self, command: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        code, out, err = json.loads(self._proc.stdout.readline())
        return subprocess.CompletedProcess(command, code, out, err)

    def qvq(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._send({"argv": list(args)})

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return self._send({"python": code})

    def close(self) -> None:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.close()
        self._proc.wait(60)
        self._proc.stdout.close()


@pytest.fixture(scope="module")
def hub_cli(hub: FakeHub) -> Iterator[HubCommands]:
    runner = HubCommands(hub.url)
    yield runner
    runner.close()


def test_a_running_space_id_is_found_on_the_hub(hub_cli: HubCommands, marker: str) -> None:
    done = hub_cli.qvq("ask", f"{marker} [[replica tokens=3 delay=0]]", "--space", "owner/good")
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout and "Final Answer" in done.stdout


def test_asking_a_space_by_url_sends_nothing_to_the_hub(
    hub: FakeHub, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    # A fresh HF_HOME: huggingface_hub has nothing cached. Its telemetry would fetch a list of
    # "AI agents" from the Hub before the first request to the Space.
    env = {**_env(hub.url), "HF_HOME": str(tmp_path / "hf-home")}
    prompt = f"{marker} [[replica tokens=3 delay=0]]"
    before = len(hub.requests)  # the module's Hub: other tests' requests came before
    done = subprocess.run(
        [sys.executable, "-m", "qvq_gradio", "ask", prompt, "--space", replica.url],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected_text(prompt, 3).strip()
    assert hub.requests[before:] == []


_CANNOT_RUN = {
    "PAUSED": "is paused by its owner",
    "STOPPED": "is stopped",
    "BUILD_ERROR": "failed to build",
    "RUNTIME_ERROR": "crashed",
}


def test_a_space_that_cannot_run_says_why_and_no_such_space_or_no_access(
    hub: FakeHub, hub_cli: HubCommands
) -> None:
    for stage in _CANNOT_RUN:
        hub.spaces[f"owner/{stage.lower()}"] = HubSpace("http://127.0.0.1:9", [stage])
    hub.spaces["owner/private"] = HubSpace("http://127.0.0.1:9", status=401)
    cannot_run = [hub_cli.qvq("ask", "hi", "--space", f"owner/{stage.lower()}")
                  for stage in _CANNOT_RUN]
    missing = hub_cli.qvq("ask", "hi", "--space", "owner/missing")
    private = hub_cli.qvq("ask", "hi", "--space", "owner/private")
    for (stage, says), done in zip(_CANNOT_RUN.items(), cannot_run, strict=True):
        assert done.returncode == 3
        assert f"SpaceUnavailableError: owner/{stage.lower()} {says}" in done.stderr
        assert f"(state {stage})" in done.stderr
        assert "Traceback" not in done.stderr
    assert missing.returncode == 3
    assert "There is no Space owner/missing on the Hub" in missing.stderr
    assert private.returncode == 4
    assert "AuthenticationError" in private.stderr and "owner/private" in private.stderr


def test_an_unreachable_hub_is_a_connection_error_naming_the_space() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    done = qvq(closed, "ask", "hi", "--space", "owner/name")
    assert done.returncode == 3, done.stderr
    assert "SpaceConnectionError: Could not reach the Hugging Face Hub to look up owner/name" in (
        done.stderr
    )


@pytest.mark.parametrize("bad", ["not-a-url", "ftp://example.com/x", "a/b/c"])
def test_a_space_that_is_neither_url_nor_id_is_bad_input(bad: str) -> None:
    from .test_cli import run

    code, _, err = run(["ask", "hi", "--space", bad])  # refused before any network call
    assert code == 2
    assert "SpaceNameError" in err and "is not a Space" in err


@pytest.mark.parametrize("stages", [["SLEEPING", "RUNNING"], ["BUILDING", "BUILDING", "RUNNING"]])
def test_a_waking_space_is_reported_and_waited_for(
    hub: FakeHub, hub_cli: HubCommands, marker: str, stages: list[str]
) -> None:
    name = f"owner/waking-{len(stages)}"
    hub.spaces[name] = HubSpace(hub.spaces["owner/good"].host, stages)
    script = (
        "from qvq_gradio.sync import events\n"
        f"for e in events('{marker} [[replica tokens=2 delay=0]]', space='{name}'):\n"
        "    print(type(e).__name__, getattr(e, 'state', ''))\n"
    )
    done = hub_cli.python(script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == f"SpaceWaking {stages[0]}"
    assert "TextDelta " in lines and lines[-2] == "Finished "
    assert hub.spaces[name].runtime_calls >= len(stages) - (stages[0] == "SLEEPING")


def test_spaces_table_checks_every_space(hub_cli: HubCommands) -> None:
    done = hub_cli.qvq("spaces", "--space", "owner/good", "--space", "owner/missing")
    alone = hub_cli.qvq("spaces", "--space", "owner/missing")
    assert done.returncode == 0, done.stderr
    header, good, missing = done.stdout.splitlines()[:3]
    assert header.split()[:3] == ["SPACE", "REACHABLE", "GRADIO"]
    assert good.startswith("owner/good") and " qvq " in good and " yes " in good
    assert missing.startswith("owner/missing") and " no " in missing
    assert "There is no Space owner/missing" in done.stderr
    assert alone.returncode == 3


@pytest.mark.anyio
@pytest.mark.parametrize("explicit", [False, True])
async def test_the_environments_token_goes_to_hugging_face_only(
    replica: ReplicaProcess, marker: str, monkeypatch: pytest.MonkeyPatch, explicit: bool
) -> None:
    """$HF_TOKEN is not sent to a Space on another host; a token passed explicitly is."""
    from qvq_gradio import Session

    from .faults import FaultProxy

    token = "hf_" + marker.replace("-", "") + "TokenFromTheEnvironment"
    monkeypatch.setenv("HF_TOKEN", token)
    sent = bytearray()
    with FaultProxy(int(replica.url.rsplit(":", 1)[1])) as proxy:
        proxy.gate = lambda _, data: sent.extend(data)
        async with Session(proxy.url, token=token if explicit else None) as session:
            answer = await session.ask(f"{marker} [[replica tokens=2 delay=0]]")
    assert answer.endswith("\\boxed{2}")
    assert (token.encode() in sent) is explicit


def test_a_batch_checks_the_space_first_and_a_sleeping_one_counts_as_ready(
    hub: FakeHub, hub_cli: HubCommands, marker: str, tmp_path: Path
) -> None:
    host = hub.spaces["owner/good"].host
    hub.spaces["owner/paused"] = HubSpace(host, ["PAUSED"])
    hub.spaces["owner/asleep"] = HubSpace(host, ["SLEEPING", "RUNNING"])
    source = tmp_path / "in.jsonl"
    source.write_text(f'{{"id": "a", "prompt": "{marker} [[replica tokens=2 delay=0]]"}}\n')
    paused = hub_cli.qvq("batch", str(source), "-o", str(tmp_path / "p.jsonl"), "--space",
                         "owner/paused")
    asleep = hub_cli.qvq("batch", str(source), "-o", str(tmp_path / "s.jsonl"), "--space",
                         "owner/asleep")
    assert paused.returncode == 3 and "is paused by its owner" in paused.stderr
    assert len(paused.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.jsonl").exists()
    assert asleep.returncode == 0, asleep.stderr
    assert '"status": "ok"' in (tmp_path / "s.jsonl").read_text()
