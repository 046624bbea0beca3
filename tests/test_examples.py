"""The seed's example and the README's main job, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qvq_gradio.replica import ReplicaProcess

from .conftest import replica_env

ROOT = Path(__file__).resolve().parent.parent


def test_seed_example_runs_unmodified(replica: ReplicaProcess) -> None:
    env = {**replica_env(), "QVQ_SPACE": replica.url}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed_example.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("Model: ")
    assert lines[0] == ""
    answer = "".join(chunk.removesuffix("\n") for chunk in lines[1:])
    assert answer.startswith("Received prompt")
    assert "Привет! Как дела?" in answer
    assert answer.endswith("\\boxed{40}")
    assert record_ended(replica, "Привет! Как дела?")["state"] == "done"


def record_ended(replica: ReplicaProcess, marker: str) -> dict[str, object]:
    return replica.wait_ended(marker)


@pytest.mark.inprocess_gradio
def test_demo_streams_offline() -> None:
    env = {**replica_env(), "HF_HUB_OFFLINE": "1"}
    env.pop("QVQ_SPACE", None)
    done = subprocess.run(
        [sys.executable, "-m", "qvq_gradio.cli", "demo", "--tokens", "12", "--delay", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
        cwd=os.getcwd(),
    )
    assert done.returncode == 0, done.stderr
    assert "What shapes are in this picture?" in done.stdout
    assert "Image: 320x200 RGB PNG" in done.stdout
    assert done.stdout.rstrip().endswith("\\boxed{12}")
    assert "[replica Space on http://127.0.0.1:" in done.stderr


@pytest.mark.inprocess_gradio
def test_replica_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "replica_example.py")],
        capture_output=True,
        text=True,
        env=replica_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "done 5"
