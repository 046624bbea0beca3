"""What a careful reviewer and a new user found: each test fails on the code before the fix.

Against the replica, real SQLite, real files and real processes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import anyio
import pytest

from qvq_gradio import (
    AppError,
    AuthenticationError,
    OptionError,
    Pool,
    QVQError,
    Session,
    TextDelta,
    batch,
)
from qvq_gradio.history import History
from qvq_gradio.media import Upload
from qvq_gradio.replica import ReplicaProcess

from .conftest import replica_env
from .test_batch import _qvq_batch, _wait_for_lines
from .test_hub import FakeHub, HubSpace, qvq

pytestmark = pytest.mark.anyio

# -- the cache and the history ------------------------------------------------


async def test_the_cache_tells_passed_through_image_urls_apart(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    from qvq_gradio import ImageOptions

    database = tmp_path / "history.db"
    first = "https://images.example.org/cat.png?X-Signature=abcdef0123456789secret"
    other = "https://images.example.org/dog.png"
    prompt = f"{marker} what is this? [[replica tokens=2 delay=0]]"
    key_of = Upload(target=first).identity

    def record() -> None:  # an answer recorded for the first URL
        with History(database) as store:
            store.record(space=replica.url, prompt=prompt, text="a cat", image_key=key_of)

    await anyio.to_thread.run_sync(record)
    options = ImageOptions(url_mode="pass")
    async with Session(replica.url, history=database, cache=True) as session:
        assert await session.ask(prompt, image=first, image_options=options) == "a cat"
        # Another URL is another image: the Space is asked (and, here on 127.0.0.1, Gradio
        # refuses to fetch a URL it is given, so it fails: the error is the Space's, not a
        # cached answer).
        with pytest.raises(AppError):
            await session.ask(prompt, image=other, image_options=options)

    def rows() -> list[Any]:
        with History(database) as store:
            return store.search(marker)

    failed, hit, recorded = await anyio.to_thread.run_sync(rows)
    assert hit.from_cache and not recorded.from_cache
    # A signed URL's signature is stored nowhere: neither as the name nor anywhere else.
    assert failed.image_name == "https://images.example.org/dog.png"
    assert hit.image_name == "https://images.example.org/cat.png"
    dump = repr(sqlite3.connect(database).execute("SELECT * FROM answers").fetchall())
    assert "abcdef0123456789secret" not in dump


def test_history_search_by_space_takes_underscores_literally(tmp_path: Path) -> None:
    with History(tmp_path / "h.db") as store:
        store.record(space="https://me-my_space.hf.space", prompt="p", text="t")
        store.record(space="https://me-myXspace.hf.space", prompt="p", text="t")
        found = store.search("my_space")
    assert [row.space for row in found] == ["https://me-my_space.hf.space"]


def test_keep_images_stores_the_uploaded_bytes(tmp_path: Path) -> None:
    with History(tmp_path / "h.db", keep_images=True) as store:
        store.record(space="s", prompt="p", text="t", image_sha256="ab", image=b"\x89PNG")
    image = sqlite3.connect(tmp_path / "h.db").execute("SELECT image FROM answers").fetchone()
    assert image == (b"\x89PNG",)


# -- errors: copy, pickle, and the pool ------------------------------------------------------


def test_a_pool_whose_spaces_are_all_paused_raises_a_typed_error(
    replica: ReplicaProcess,
) -> None:
    with FakeHub() as hub:
        hub.spaces["owner/a"] = HubSpace(replica.url, ["PAUSED"])
        hub.spaces["owner/b"] = HubSpace(replica.url, ["PAUSED"])
        done = qvq(hub.url, "ask", "hi", "--space", "owner/a,owner/b")
    assert done.returncode == 3, done.stderr
    assert "SpaceUnavailableError" in done.stderr and "is paused by its owner" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bug_is_reported_as_one_line_with_the_version() -> None:
    script = (
        "import sys, qvq_gradio.cli, qvq_gradio.cli.ask\n"
        "def broken(*a, **k):\n    raise ZeroDivisionError('boom')\n"
        "sys.modules['qvq_gradio.cli.ask'].connect_from = broken\n"
        "sys.exit(qvq_gradio.cli.main(['ask', 'hi', '--space', 'http://127.0.0.1:9']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=replica_env()
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "internal error: ZeroDivisionError: boom" in done.stderr
    assert "bug in qvq-gradio 0.1.0" in done.stderr


async def test_every_space_cooling_after_an_outage_raises_the_first_ones_error(
    qvq_replicas: Any, marker: str
) -> None:
    servers = qvq_replicas(2)
    urls = [s.url for s in servers]
    for server in servers:
        await anyio.to_thread.run_sync(server.kill)
    async with Pool(urls) as pool:
        with pytest.raises(QVQError) as caught:
            await pool.ask(f"{marker} hi")
        # Both failed (and now cool): the next question raises at once, without a TypeError.
        with pytest.raises(type(caught.value)):
            await pool.ask(f"{marker} again")
        assert {row.state for row in pool.status()} == {"cooling"}


# -- options ------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -1, "5"])
async def test_bad_timeouts_are_input_errors(replica: ReplicaProcess, bad: Any) -> None:
    async with Session(replica.url) as session:
        with pytest.raises(OptionError) as caught:
            await session.ask("hi", total_timeout=bad)
    assert isinstance(caught.value, ValueError)


async def test_a_misspelt_keyword_names_the_function_called(replica: ReplicaProcess) -> None:
    async with Session(replica.url) as session:
        with pytest.raises(TypeError, match=r"^ask\(\) got an unexpected keyword .*idle_timout"):
            await session.ask("hi", idle_timout=5)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"^stream\(\) got an unexpected keyword"):
            session.stream("hi", idle_timout=5)  # type: ignore[call-arg]


async def test_timeout_is_an_alias_of_total_timeout(replica: ReplicaProcess, marker: str) -> None:
    async with Session(replica.url) as session:
        text = await session.ask(f"{marker} [[replica tokens=2 delay=0]]", timeout=30)  # type: ignore[call-arg]
        assert text.endswith("\\boxed{2}")
        with pytest.raises(OptionError, match="total_timeout"):
            await session.ask("hi", timeout=float("nan"))  # type: ignore[call-arg]


async def test_a_prompt_of_the_wrong_type_says_a_string_works(replica: ReplicaProcess) -> None:
    async with Session(replica.url) as session:
        with pytest.raises(QVQError, match="must be a string"):
            await session.ask(123)  # type: ignore[arg-type]


# -- the pool ------------------------------------------------


async def test_pool_status_counts_questions_asked_with_ask(
    qvq_replicas: Any, marker: str
) -> None:
    servers = qvq_replicas(2)
    async with Pool([s.url for s in servers]) as pool:
        for n in range(4):
            await pool.ask(f"{marker}-{n} [[replica tokens=1 delay=0]]")
        assert sum(row.answered for row in pool.status()) == 4
        assert all(row.in_flight == 0 for row in pool.status())


async def test_break_through_a_pool_cancels_upstream_before_the_slot_frees(
    qvq_replicas: Any, marker: str
) -> None:
    (server,) = qvq_replicas(1)
    async with Pool([server.url, server.url.replace("127.0.0.1", "localhost")]) as pool:
        stream = pool.stream(f"{marker} [[replica tokens=3000 delay=0.01]]")
        async for _ in stream:
            break
        await stream.aclose()
        assert all(row.in_flight == 0 for row in pool.status())
    record = await anyio.to_thread.run_sync(server.wait_ended, marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]
    assert record["tokens_generated"] < 3000


async def test_an_auth_failure_disables_that_space(qvq_replicas: Any, marker: str) -> None:
    locked = qvq_replicas(1, "--require-token", "hf_TheRightToken1")[0]
    (open_space,) = qvq_replicas(1)
    refused = 0
    async with Pool([locked.url, open_space.url], token="hf_TheWrongToken1") as pool:
        for n in range(4):
            try:
                await pool.ask(f"{marker}-{n} [[replica tokens=1 delay=0]]")
            except AuthenticationError:  # not moved: a wrong token is the caller's to fix
                refused += 1
        rows = {row.space: row for row in pool.status()}
    assert rows[locked.url].state == "disabled" and rows[locked.url].failed == refused == 1
    assert "AuthenticationError" in (rows[locked.url].last_error or "")
    assert rows[open_space.url].answered == 3  # never asked again: the rest went elsewhere


async def test_a_recovered_space_is_used_again_within_seconds(
    qvq_replicas: Any, marker: str, monkeypatch: pytest.MonkeyPatch, start_replica: Any
) -> None:
    # A backoff of ten minutes: only the cheap probe of a cooling Space can bring it back in
    # time, and the questions that failed together count as one failure.
    monkeypatch.setattr("qvq_gradio.pool._BACKOFF_FIRST", 600.0)
    monkeypatch.setattr("qvq_gradio.pool._BACKOFF_CAP", 600.0)
    port = _free_port()
    victim = qvq_replicas(1, "--concurrency", "4", port=port)[0]
    (other,) = qvq_replicas(1, "--concurrency", "4")
    async with Pool([victim.url, other.url], max_in_flight_per_space=4) as pool:
        started = anyio.Event()

        async def one(n: int) -> None:
            try:
                async for event in pool.events(f"{marker}-{n} [[replica tokens=100 delay=0.01]]"):
                    if isinstance(event, TextDelta):
                        started.set()
            except QVQError:
                pass

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(one, n)
            await started.wait()
            # The victim itself must be answering (its session connected, so the pool can
            # probe it later), not only the other Space: a loaded machine connects slowly.
            await anyio.to_thread.run_sync(victim.wait_started, marker)
            await anyio.to_thread.run_sync(victim.kill)  # under load: several fail at once
        row = {r.space: r for r in pool.status()}[victim.url]
        assert row.state == "cooling"
        revived = await anyio.to_thread.run_sync(
            lambda: start_replica("--concurrency", "4", port=port)
        )
        try:
            with anyio.fail_after(60):
                while True:
                    await pool.ask(f"{marker}-again [[replica tokens=1 delay=0]]")
                    served = await anyio.to_thread.run_sync(revived.requests)
                    if served:
                        break
                    with anyio.move_on_after(0.2):
                        await anyio.Event().wait()
        finally:
            await anyio.to_thread.run_sync(revived.stop)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- batch: input, output, order ------------------------------------------------


def _rows(marker: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i}", "prompt": f"{marker}-{i} [[replica tokens=2 delay=0]]", **extra}
        for i in range(n)
    ]


async def test_bad_rows_fail_alone_and_the_good_ones_are_asked(
    session: Session, marker: str, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    good = _rows(marker, 2)
    source.write_text(
        json.dumps(good[0]) + "\n{not json\n" + '["a list"]\n{"id": "x"}\n' + json.dumps(good[1])
        + "\n"
    )
    result = await batch.arun(source, tmp_path / "out.jsonl", session=session)
    records = list(result)
    assert {r["id"] for r in records if r["status"] == "ok"} == {"r0", "r1"}
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 3
    assert {r["error"]["type"] for r in failed} == {"BatchInputError"}
    assert sorted(r["error"]["message"].split(": ")[0] for r in failed) == [
        f"{source}:2", f"{source}:3", f"{source}:4"
    ]
    assert result.summary.failed == 3 and result.summary.failures == {"BatchInputError": 3}


def test_cli_bad_rows_exit_8_and_unusable_files_exit_2(tmp_path: Path, replica: Any) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "[[replica tokens=1 delay=0]]"}\n{broken\n')
    done = _qvq("batch", str(source), "-o", str(tmp_path / "out.jsonl"), url=replica.url)
    assert done.returncode == 8, done.stderr
    assert "Traceback" not in done.stderr
    table = tmp_path / "in.csv"
    table.write_text("id,question\n1,hello\n")
    for bad in (table, tmp_path / "empty.jsonl", tmp_path / "nothing"):
        if bad.suffix == ".jsonl":
            bad.write_text("")
        elif not bad.suffix:
            bad.mkdir()
        done = _qvq("batch", str(bad), "-o", str(tmp_path / "o.jsonl"), "--prompt", "p",
                    url=replica.url) if not bad.suffix else _qvq(
            "batch", str(bad), "-o", str(tmp_path / "o.jsonl"), url=replica.url)
        assert done.returncode == 2, (bad, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert "no items found" in done.stderr


def _qvq(*args: str, url: str, env: dict[str, str] | None = None, process: bool = False) -> Any:
    """``qvq ARGS`` in this process (main(), its exit code and output; ``env`` adds to the
    test's environment), or with ``process`` as a command of its own (where what it logs to
    stderr is checked: in this process, logging goes to pytest)."""
    from .test_cli import run

    argv = [*args, "--space", url, "--no-progress"] if args[0] == "batch" else list(args)
    if process:
        return subprocess.run([sys.executable, "-m", "qvq_gradio", *argv], capture_output=True,
                              text=True, env={**replica_env(), **(env or {})}, timeout=120)
    code, out, err = run(argv, env=env)
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.mark.parametrize("retry", [False, True])
def test_an_output_that_is_the_input_is_refused_and_left_alone(
    tmp_path: Path, replica: Any, retry: bool
) -> None:
    source = tmp_path / "copy.jsonl"
    content = "".join(json.dumps(r) + "\n" for r in _rows("m", 3))
    source.write_text(content)
    link = tmp_path / "link.jsonl"
    link.symlink_to(source)
    for output in (source, link):
        args = ["batch", str(source), "-o", str(output)] + (["--retry-failed"] if retry else [])
        done = _qvq(*args, url=replica.url)
        assert done.returncode == 2, done.stderr
        assert "is the input" in done.stderr
        assert source.read_text() == content


def test_retry_failed_never_rewrites_a_file_it_did_not_write(tmp_path: Path, replica: Any) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(_rows("m", 1)[0]) + "\n")
    other = tmp_path / "notes.jsonl"
    other.write_text('{"id": "1", "prompt": "an input row, not a result"}\n')
    before = other.read_bytes()
    done = _qvq("batch", str(source), "-o", str(other), "--retry-failed", url=replica.url)
    assert done.returncode == 2 and "not a batch result" in done.stderr
    assert other.read_bytes() == before


def test_an_output_in_a_missing_folder_is_refused(tmp_path: Path, replica: Any) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(_rows("m", 1)[0]) + "\n")
    done = _qvq("batch", str(source), "-o", str(tmp_path / "no" / "such" / "x.jsonl"),
                url=replica.url)
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert not (tmp_path / "no").exists()


async def test_a_resumed_run_reports_the_whole_file(
    session: Session, marker: str, tmp_path: Path
) -> None:
    rows = [dict(r, expected="2") for r in _rows(marker, 3)]
    rows[2]["expected"] = "wrong"
    output = tmp_path / "out.jsonl"
    await batch.arun(rows, output, session=session, limit=2)
    result = await batch.arun(rows, output, session=session)
    summary = result.summary
    assert (summary.ok, summary.skipped) == (1, 2)
    assert (summary.file_ok, summary.file_failed, summary.graded) == (3, 0, 3)
    assert summary.accuracy == pytest.approx(2 / 3)
    assert summary.run_accuracy == 0.0 and summary.run_graded == 1
    assert "the file: 3 ok, 0 failed; accuracy 66.7% of 3 graded" in str(summary)


def test_input_order_loses_nothing_on_a_kill_and_is_ordered_at_the_end(
    tmp_path: Path, qvq_replica: Any, marker: str
) -> None:
    rows = _rows(marker, 8)
    rows[0]["prompt"] = f"{marker}-0 [[replica tokens=400 delay=0.01]]"  # the slow first one
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out.jsonl"
    proc = _qvq_batch(source, output, qvq_replica.url, "--concurrency", "8", "--order", "input")
    _wait_for_lines(output, 4, proc)  # later items written while the first is still asked
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    kept = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert len(kept) >= 4 and "r0" not in kept  # answered records survived the kill
    done = _qvq("batch", str(source), "-o", str(output), "--order", "input", url=qvq_replica.url)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [
        f"r{i}" for i in range(8)
    ]


def test_a_csv_record_torn_mid_answer_is_dropped_and_the_run_resumes(
    tmp_path: Path, replica: Any, marker: str
) -> None:
    source = tmp_path / "in.jsonl"
    rows = _rows(marker, 4)
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out.csv"
    done = _qvq("batch", str(source), "-o", str(output), "--limit", "2", url=replica.url)
    assert done.returncode == 0, done.stderr
    whole = output.read_bytes()
    # What a kill in the middle of writing a multi-line answer leaves: a quoted cell, open.
    torn = b'r9,ok,"Received prompt\nLet me look at this carefully\nand then'
    output.write_bytes(whole + torn)
    done = _qvq("batch", str(source), "-o", str(output), url=replica.url, process=True)
    assert done.returncode == 0, done.stderr
    assert "cut short by an earlier crash" in done.stderr
    raw = output.read_bytes()
    assert raw.startswith(whole) and torn not in raw
    with open(output, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert sorted(r["id"] for r in records) == [f"r{i}" for i in range(4)]
    assert all(r["status"] == "ok" and "\n" in r["text"] for r in records)


def test_sigkill_while_writing_multi_line_csv_answers_loses_nothing(
    tmp_path: Path, qvq_replica: Any, marker: str
) -> None:
    source = tmp_path / "in.jsonl"
    rows = [
        {"id": f"k{i}", "prompt": f"{marker}-{i} [[replica tokens=30 delay=0.005]]"}
        for i in range(24)
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out.csv"
    for stop_at in (3, 9, 15):
        proc = _qvq_batch(source, output, qvq_replica.url, "--concurrency", "4")
        _wait_for_lines(output, stop_at, proc, count=_csv_records)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    done = _qvq("batch", str(source), "-o", str(output), url=qvq_replica.url)
    assert done.returncode == 0, done.stderr
    with open(output, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in rows)
    assert all(r["status"] == "ok" for r in records)


def _csv_records(path: Path) -> int:
    """Complete CSV records in ``path``: newlines outside quotes, less the header."""
    if not path.exists():
        return 0
    count, inside = 0, False
    for byte in path.read_bytes():
        if byte == 0x22:
            inside = not inside
        elif byte == 0x0A and not inside:
            count += 1
    return max(count - 1, 0)


def test_progress_is_drawn_where_it_was_asked_for(tmp_path: Path) -> None:
    stream = io.StringIO()
    bar = batch.TqdmProgress(file=stream, disable=False)
    bar(batch.Progress(0, 0, 1, 0, 2, None))
    bar(batch.Progress(2, 0, 0, 0, 2, None))
    bar.close()
    drawn = stream.getvalue()
    assert "2/2" in drawn and "ok=2" in drawn
    assert ": :" not in drawn
    hidden = io.StringIO()  # not a terminal, nothing forced: no bar
    quiet = batch.TqdmProgress(file=hidden)
    quiet(batch.Progress(1, 0, 0, 0, 1, None))
    quiet.close()
    assert hidden.getvalue() == ""


# -- the command line ------------------------------------------------


def test_a_closed_stdout_ends_the_command_quietly_and_cancels(
    replica: ReplicaProcess, marker: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qvq_gradio", "ask", f"{marker} [[replica tokens=3000 delay=0.01]]",
         "--space", replica.url, "--no-history"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=replica_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)  # the first bytes of the answer, then the reader goes away
    proc.stdout.close()
    code = proc.wait(timeout=60)
    errors = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 141 and errors == ""
    record = replica.wait_ended(marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]


def _help(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``qvq ARGS`` in this process (help needs no child process): exit code and stdout."""
    from qvq_gradio.cli import main

    code = main(list(args))
    return code, capsys.readouterr().out


def test_help_version_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, top = _help(capsys, "-h")
    assert code == 0 and "Examples:" in top
    commands = top.split("Commands:")[1].split("Examples:")[0]
    assert not any(line.rstrip().endswith("...") for line in commands.splitlines())
    code, version = _help(capsys, "--version")
    assert code == 0 and "0.1.0" in version
    for command in ("ask", "batch", "history", "info", "spaces", "demo", "replica"):
        code, shown = _help(capsys, command, "-h")
        assert code == 0 and "Examples:" in shown, command
    for command in ("ask", "batch", "info", "spaces"):
        shown = " ".join(_help(capsys, command, "--help")[1].split())
        assert "[default: $QVQ_SPACE, else the QVQ-72B Space]" in shown, command
    replica = " ".join(_help(capsys, "replica", "--help")[1].split())
    for described in ("--tokens INTEGER RANGE Words", "--delay FLOAT RANGE Seconds",
                      "--concurrency INTEGER RANGE", "--fail [",
                      "--fail-after INTEGER RANGE Tokens", "--max-queue INTEGER RANGE Requests"):
        assert described in replica, described
    ask = " ".join(_help(capsys, "ask", "--help")[1].split())
    assert "--connect-timeout SECONDS Seconds" in ask


def test_history_messages(tmp_path: Path) -> None:
    env = dict(replica_env(), QVQ_HOME=str(tmp_path))
    shown = _qvq("history", "show", "99999", url="", env=env)
    assert shown.returncode == 2 and shown.stderr.startswith("qvq: no answer 99999")
    shown = _qvq("history", "show", "abc", url="", env=env)
    assert shown.returncode == 2 and "whole numbers" in shown.stderr
    shown = _qvq("history", "nothing-like-this", url="", env=env)
    assert shown.returncode == 0 and "no answers match" in shown.stderr


def test_usage_errors_say_what_is_wrong(tmp_path: Path) -> None:
    env = replica_env()
    done = _qvq("ask", "hi", "--total-timeout", "nan", url="", env=env)
    assert done.returncode == 2 and "not a finite number" in done.stderr
    done = _qvq("ask", "hi", "-i", str(tmp_path), "--space", "http://127.0.0.1:9", url="",
                env=env)
    assert done.returncode == 2 and "is a folder" in done.stderr
    done = _qvq("ask", "hi", url="", env=dict(env, QVQ_SPACE="not a space"))
    assert done.returncode == 2 and "$QVQ_SPACE" in done.stderr
    done = _qvq("ask", "hi", "-i", "http://127.0.0.1:9/x.png", "--space", "http://127.0.0.1:9",
                "--no-history", url="", env=env)
    assert done.returncode == 3 and "MediaDownloadError" in done.stderr


# -- secrets ------------------------------------------------


def test_a_token_and_a_signed_url_appear_nowhere(
    tmp_path: Path, qvq_replicas: Any, marker: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = "hf_PlantedToken0123456789"
    signature = "Signature=planted0123456789abcdef"
    (server,) = qvq_replicas(1)
    source = tmp_path / "in.jsonl"
    rows = [
        {"id": "echo", "prompt": f"{marker} [[replica fail=echo-token]]"},
        {"id": "url", "prompt": f"{marker} look", "image": f"http://127.0.0.1:9/x.png?{signature}"},
        {"id": "ok", "prompt": f"{marker} fine [[replica tokens=2 delay=0]]"},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(replica_env(), HF_TOKEN=token, QVQ_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-m", "qvq_gradio", "--debug", "batch", str(source), "-o",
         str(tmp_path / "out.jsonl"), "--space", server.url, "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 8, done.stderr
    assert "HTTP Request" in done.stderr or "DEBUG" in done.stderr  # the libraries did log
    everything = [
        done.stdout,
        done.stderr,
        (tmp_path / "out.jsonl").read_text(),
        repr(sqlite3.connect(tmp_path / "home" / "history.db")
             .execute("SELECT * FROM answers").fetchall()),
    ]
    for text in everything:
        assert token not in text
        assert signature not in text
        assert "PlantedToken" not in text


def test_error_text_is_redacted() -> None:
    from qvq_gradio import ResponseError

    error = ResponseError("failed", text="the answer hf_SomeEchoedToken99 so far")
    assert "hf_SomeEchoedToken99" not in error.text
    logging.getLogger("httpx").info("GET https://x?token=%s", "hf_AnotherToken99")


def test_cli_on_quota_stop_exits_5_and_a_later_run_resumes(
    tmp_path: Path, qvq_replicas: Any, marker: str
) -> None:
    (server,) = qvq_replicas(1, "--quota-budget", "2", "--quota-retry", "600")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows(marker, 5)))
    output = tmp_path / "out.jsonl"
    done = _qvq("batch", str(source), "-o", str(output), "--on-quota", "stop",
                "--concurrency", "1", url=server.url)
    assert done.returncode == 5, done.stderr
    assert "stopped on quota" in done.stderr
    kept = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["status"] for r in kept] == ["ok", "ok"]  # the cut question is not a failure


def test_cli_retry_failed_asks_the_failed_again_and_keeps_each_once(
    tmp_path: Path, replica: Any, marker: str
) -> None:
    source = tmp_path / "in.jsonl"
    rows = _rows(marker, 3)
    rows[1]["prompt"] = f"{marker}-1 [[replica fail=before]]"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "out.jsonl"
    done = _qvq("batch", str(source), "-o", str(output), url=replica.url)
    assert done.returncode == 8
    # Fix the row (same id), then ask the failed one again: each item appears once.
    rows[1]["prompt"] = f"{marker}-1 [[replica tokens=2 delay=0]]"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = _qvq("batch", str(source), "-o", str(output), "--retry-failed", url=replica.url)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["r0", "r1", "r2"]
    assert all(r["status"] == "ok" for r in records)
