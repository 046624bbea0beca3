"""The qvq command: with click's runner, and end to end as a subprocess."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from qvq_gradio.cli import cli, main
from qvq_gradio.cli.status import StatusLine as _Status
from qvq_gradio.events import QueueUpdate
from qvq_gradio.replica import ReplicaProcess

from .conftest import replica_env
from .test_errors import TOKEN, private_replica  # noqa: F401 - a fixture used here too
from .test_stream import expected_text


def run(
    args: list[str], stdin: str | bytes | None = None, env: dict[str, str] | None = None
) -> Any:
    """The CLI in-process, with main()'s exit codes (click's runner would give click's)."""
    runner = CliRunner()
    codes: list[int] = []

    def entry() -> None:
        codes.append(main(args))

    with runner.isolation(input=stdin, env=env) as (out, err, *_):
        entry()
        return codes[0], out.getvalue().decode(), err.getvalue().decode()


def test_ask_streams_to_stdout(replica: ReplicaProcess, marker: str) -> None:
    prompt = f"{marker} [[replica tokens=8 delay=0]]"
    code, out, _ = run(["ask", prompt, "--space", replica.url])
    assert code == 0
    assert out == expected_text(prompt, 8) + "\n"


def test_prompt_from_stdin_and_final_only(replica: ReplicaProcess, marker: str) -> None:
    code, out, _ = run(
        ["ask", "--final-only", "--space", replica.url],
        stdin=f"{marker} [[replica tokens=7 delay=0]]\n",
    )
    assert (code, out) == (0, "7\n")
    code, out, _ = run(
        ["ask", "-", "--final-only", "--space", replica.url],
        stdin=f"{marker} [[replica tokens=9 delay=0]]",
    )
    assert (code, out) == (0, "9\n")


def test_json_output(replica: ReplicaProcess, marker: str) -> None:
    prompt = f"{marker} [[replica tokens=4 delay=0]]"
    code, out, _ = run(["ask", prompt, "--json", "--space", replica.url])
    assert code == 0
    result = json.loads(out)
    assert result["text"] == expected_text(prompt, 4)
    assert result["final_answer"] == "4"
    assert result["space"] == replica.url
    assert result["elapsed"] >= result["time_to_first_token"] >= 0


def test_images_by_path_and_stdin_and_system(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    code, out, _ = run(
        [
            "ask",
            f"{marker} [[replica tokens=1 delay=0]]",
            "-i",
            str(path),
            "--system",
            "Be brief.",
            "--space",
            replica.url,
        ]
    )
    assert code == 0
    assert "Image: 40x30 RGB PNG" in out
    assert replica.wait_ended(marker)["prompt"].startswith("System: Be brief.\nUser: ")
    buffer = io.BytesIO()
    Image.new("RGB", (50, 20), (0, 0, 255)).save(buffer, format="PNG")
    code, out, _ = run(
        ["ask", f"{marker}-b [[replica tokens=1 delay=0]]", "-i", "-", "--space", replica.url],
        stdin=buffer.getvalue(),
    )
    assert code == 0
    assert "Image: 50x28 RGB PNG" in out  # padded to the 28 px minimum


def test_the_token_option_and_hf_token(private_replica: ReplicaProcess, marker: str) -> None:  # noqa: F811
    """--token goes to the Space named; $HF_TOKEN only to Hugging Face's hosts."""
    args = ["ask", f"{marker} [[replica tokens=1 delay=0]]", "--space", private_replica.url]
    code, _, err = run(args, env={"HF_TOKEN": TOKEN})
    assert code == 4
    assert "AuthenticationError" in err and TOKEN not in err
    code, out, _ = run([*args, "--token", TOKEN])
    assert code == 0
    assert marker in out


@pytest.mark.parametrize(
    ("directive", "code", "name"),
    [
        ("[[replica fail=quota]]", 5, "QuotaExceededError"),
        ("[[replica fail=before]]", 7, "AppError"),
        ("[[replica tokens=50 delay=0 fail=hang after=2]]", 6, "IdleTimeoutError"),
    ],
)
def test_errors_are_one_line_with_distinct_codes(
    replica: ReplicaProcess, marker: str, directive: str, code: int, name: str
) -> None:
    got, _, err = run(
        ["ask", f"{marker} {directive}", "--space", replica.url, "--idle-timeout", "0.5"]
    )
    assert got == code
    assert err.startswith(f"qvq: {name}: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unreachable_space_and_bad_input() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert run(["ask", "hi", "--space", url])[0] == 3
    code, _, err = run(["ask", "hi", "-i", "/no/such.png", "--space", url])
    assert code == 2
    assert "no such image file" in err
    code, _, err = run(["ask", "-", "-i", "-", "--space", url], stdin="prompt")
    assert code == 2
    assert "both the prompt and an image" in err


@pytest.mark.parametrize("option", ["--idle-timeout", "--total-timeout", "--connect-timeout"])
@pytest.mark.parametrize("value", ["-1", "0"])
def test_bad_timeouts_are_usage_errors(option: str, value: str) -> None:
    code, _, err = run(["ask", "hi", option, value, "--space", "http://127.0.0.1:9"])
    assert code == 2
    assert "Traceback" not in err
    assert f"Invalid value for '{option}'" in err


@pytest.mark.parametrize(
    "code",
    ["from qvq_gradio.cli import main; sys.exit(main(['demo']))", "import qvq_gradio.replica"],
)
def test_replica_without_its_extra_names_the_extra(code: str) -> None:
    # As if installed without the extra: the import of uvicorn fails.
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules['uvicorn'] = None; {code}"],
        capture_output=True,
        text=True,
        env=replica_env(),
        timeout=60,
    )
    assert done.returncode == 1
    assert "pip install 'qvq-gradio[replica]'" in done.stderr
    assert "ModuleNotFoundError" not in done.stderr


def test_debug_shows_the_traceback(replica: ReplicaProcess, marker: str) -> None:
    code, _, err = run(
        ["--debug", "ask", f"{marker} [[replica fail=before]]", "--space", replica.url]
    )
    assert code == 7
    assert "Traceback" in err


def test_info_shows_the_api(replica: ReplicaProcess) -> None:
    code, out, _ = run(["info", "--space", replica.url])
    assert code == 0
    assert out.splitlines()[:4] == [
        f"Space: {replica.url}",
        "Shape: qvq: /generate (Image, Textbox -> textbox) (the conversation flattened into "
        "the text)",
        "Endpoint /generate",
        "  image: filepath  [Image 'Image']",
    ]
    code, out, _ = run(["info", "--json", "--space", replica.url])
    assert "/generate" in json.loads(out)["api"]["named_endpoints"]


def test_help_lists_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "130 Ctrl-C" in result.output


def test_queue_status_line_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        status = _Status(stream)
        status.tick()  # nothing to show yet
        status.queued(QueueUpdate(position=2, queue_size=7, eta=12.4))
        status.tick()  # the spinner turns between the Space's updates
        status.clear()
        status.tick()  # cleared: stays clear
    line = "waiting in the Space's queue: position 3 of 7, about 12 s"
    assert terminal.getvalue() == f"\r\x1b[K⠋ {line}\r\x1b[K⠙ {line}\r\x1b[K"
    assert pipe.getvalue() == ""


# -- end to end, as a user runs it -----------------------------------------------------------------


def test_piped_stdout_end_to_end(replica: ReplicaProcess, marker: str) -> None:
    prompt = f"{marker} [[replica tokens=30 delay=0.005]]"
    done = subprocess.run(
        [sys.executable, "-m", "qvq_gradio.cli", "ask", prompt],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**replica_env(), "QVQ_SPACE": replica.url},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected_text(prompt, 30) + "\n"
    assert done.stderr == ""  # no status line on a pipe


def test_ctrl_c_cancels_upstream_and_exits_130(replica: ReplicaProcess, marker: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qvq_gradio.cli",
            "ask",
            f"{marker} [[replica tokens=5000 delay=0.01]]",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**replica_env(), "QVQ_SPACE": replica.url},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(8) == "Received"  # the answer is streaming
        replica.wait_started(marker)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted; the job was cancelled" in err
    record = replica.wait_ended(marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] < 5000


def test_queue_status_on_a_real_terminal(marker: str, start_replica: Any) -> None:
    import os
    import pty
    import select
    import time

    busy = start_replica("--concurrency", "1")
    env = {**replica_env(), "QVQ_SPACE": busy.url}
    blocker = subprocess.Popen(  # holds the Space's only slot until we let it go
        [
            sys.executable,
            "-m",
            "qvq_gradio.cli",
            "ask",
            f"{marker}-hold [[replica fail=hang after=1]]",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    busy.wait_started(f"{marker}-hold")
    main_fd, term_fd = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qvq_gradio.cli",
            "ask",
            f"{marker} [[replica tokens=2 delay=0]]",
        ],
        stdout=subprocess.PIPE,
        stderr=term_fd,
        env=env,
        text=True,
    )
    os.close(term_fd)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"waiting in the Space's queue: position 1" not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([main_fd], [], [], 1)
            if ready:
                seen += os.read(main_fd, 4096)
        blocker.send_signal(signal.SIGINT)  # frees the slot: our question runs now
        out, _ = proc.communicate(timeout=60)
    finally:
        blocker.kill()
        proc.kill()
        blocker.wait()
        os.close(main_fd)
    assert proc.returncode == 0
    assert out.rstrip().endswith("\\boxed{2}")
    assert seen.startswith(b"\r\x1b[K")  # a status line redrawn in place, not a log


# -- what the environment did: one line, never "internal error" ---------------------------------


def test_replica_options_and_a_port_in_use_are_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _, err = run(["replica", "--port", port])
    assert code == 2
    assert err.strip() == f"qvq: cannot listen on 127.0.0.1:{port}: Address already in use"
    for args in (["--port", "99999"], ["--tokens", "-5"], ["--delay", "-1"]):
        code, _, err = run(["replica", *args])
        assert code == 2 and "Invalid value" in err and "internal error" not in err


def test_a_batch_output_that_is_a_picture_is_refused_untouched(tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(picture)
    before = picture.read_bytes()
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "hi"}\n')
    code, _, err = run(["batch", str(source), "-o", str(picture), "--space", "http://127.0.0.1:9"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a batch output" in err and str(picture) in err
    assert picture.read_bytes() == before


def test_a_damaged_history_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    damaged = tmp_path / "history.db"
    damaged.write_bytes(b"this is not a database\n" * 200)
    before = damaged.read_bytes()
    code, _, err = run(["history"], env={"QVQ_HOME": str(tmp_path)})
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "HistoryError" in err and str(damaged) in err and "move it aside" in err
    assert "internal error" not in err
    assert damaged.read_bytes() == before


def _with_answers(home: Path, count: int) -> dict[str, str]:
    from qvq_gradio.history import History

    with History(home / "history.db") as store:
        for n in range(count):
            store.record(space="s", prompt=f"question {n} " + "x" * 100, text="y" * 300)
    return {**replica_env(), "QVQ_HOME": str(home)}


def test_stdout_on_a_full_device_is_one_line(tmp_path: Path) -> None:
    env = _with_answers(tmp_path, 3)
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "qvq_gradio", "history", "show", "1"],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "qvq: cannot write to stdout: No space left on device"


def test_a_reader_that_leaves_ends_the_history_quietly(tmp_path: Path) -> None:
    env = _with_answers(tmp_path, 2000)
    process = subprocess.Popen(
        [sys.executable, "-m", "qvq_gradio", "history", "-n", "2000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"{")
    process.stdout.close()  # as `| head -1` does
    assert process.wait(60) == 141
    assert process.stderr.read() == b""
    process.stderr.close()


def test_json_honours_final_only_and_says_when_it_came_from_the_cache(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    env = {"QVQ_HOME": str(tmp_path)}
    args = ["ask", f"{marker} [[replica tokens=4 delay=0]]", "--space", replica.url, "--json",
            "--cache"]
    code, out, _ = run([*args, "--final-only"], env=env)
    first = json.loads(out)
    assert code == 0 and first["text"] == "4" and first["from_cache"] is False
    code, out, _ = run(args, env=env)
    again = json.loads(out)
    assert code == 0 and again["from_cache"] is True
    assert again["text"] == expected_text(f"{marker} [[replica tokens=4 delay=0]]", 4)
