"""Batch runs against the replica: resume after SIGKILL, retries, quota, Ctrl-C, inputs, history."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from qvq_gradio import Session, batch
from qvq_gradio.batch.output import Output
from qvq_gradio.history import History
from qvq_gradio.replica import ReplicaProcess

from .conftest import Factory, replica_env
from .test_stream import expected_text
from .web import Web

pytestmark = pytest.mark.anyio


def _items(marker: str, n: int, tokens: int = 3, delay: float = 0.0) -> list[dict[str, Any]]:
    return [
        {"id": f"{marker}-{i:03d}", "prompt": f"{marker}-{i:03d} [[replica tokens={tokens} "
         f"delay={delay}]]", "expected": str(tokens), "row": i}
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _records(path: Path) -> list[dict[str, Any]]:
    return list(batch.read_output(path))


async def _read(result: batch.BatchResult) -> list[dict[str, Any]]:
    """The records of a result, read off the event loop (reading a file blocks)."""
    return await anyio.to_thread.run_sync(list, result)


async def test_a_batch_answers_every_item_and_grades_it(
    session: Session, marker: str, tmp_path: Path
) -> None:
    rows = _items(marker, 12)
    rows[3]["expected"] = "wrong"
    result = await batch.arun(rows, tmp_path / "out.jsonl", session=session, concurrency=4)
    summary = result.summary
    assert (summary.ok, summary.failed, summary.skipped) == (12, 0, 0)
    assert summary.graded == 12 and summary.accuracy == pytest.approx(11 / 12)
    records = {r["id"]: r for r in await _read(result)}
    for row in rows:
        record = records[row["id"]]
        assert record["text"] == expected_text(row["prompt"], 3)
        assert record["final_answer"] == "3"
        assert record["correct"] is (row["expected"] == "3")
        assert record["meta"] == {"row": row["row"]}
        assert record["error"] is None and record["attempts"] == 1
        assert set(record) == set(batch.FIELDS)
    frame = await anyio.to_thread.run_sync(result.to_pandas)
    assert len(frame) == 12 and set(batch.FIELDS) <= set(frame.columns)


async def test_accuracy_is_the_files_the_same_fresh_and_resumed(
    session: Session, marker: str, tmp_path: Path
) -> None:
    """Graded: an expected answer and an answer that arrived; a failed item is counted apart."""
    rows = _items(marker, 5)
    rows[1]["expected"] = "wrong"
    rows[4]["prompt"] = f"{marker}-004 [[replica fail=before]]"
    del rows[2]["expected"]
    out = tmp_path / "out.jsonl"
    fresh = (await batch.arun(rows, out, session=session, concurrency=2, retries=0)).summary
    again = (await batch.arun(rows, out, session=session)).summary
    assert (fresh.graded, fresh.accuracy, fresh.ungraded) == (3, pytest.approx(2 / 3), 1)
    assert (again.graded, again.accuracy, again.ungraded) == (3, pytest.approx(2 / 3), 1)
    assert again.asked == 0
    shown = "accuracy 66.7% of 3 graded; 1 failed, not graded"
    assert shown in str(fresh) and shown in str(again)


async def test_input_order_and_a_bad_image_among_good_ones(
    session: Session, marker: str, tmp_path: Path
) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (0, 200, 0)).save(good)
    (tmp_path / "bad.png").write_text("not an image")
    rows = [
        {"id": f"{marker}-{i}", "prompt": f"{marker}-{i} [[replica tokens={10 - i} delay=0.01]]",
         "image": "bad.png" if i == 4 else "good.png"}
        for i in range(8)
    ]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)  # image paths relative to the file
    result = await batch.arun(
        source, tmp_path / "out.jsonl", session=session, concurrency=4, order="input"
    )
    records = await _read(result)
    assert [r["id"] for r in records] == [row["id"] for row in rows]  # input order
    bad = records[4]
    assert bad["status"] == "failed" and bad["attempts"] == 1
    assert bad["error"]["type"] == "MediaError" and "text, not an image" in bad["error"]["message"]
    assert all(r["status"] == "ok" for i, r in enumerate(records) if i != 4)  # 5 went on
    assert result.summary.failures == {"MediaError": 1}


async def test_csv_and_folder_inputs_and_csv_output(
    session: Session, marker: str, tmp_path: Path
) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for name, colour in (("a.png", (255, 0, 0)), ("b.jpg", (0, 0, 255))):
        Image.new("RGB", (32, 32), colour).save(folder / name)
    (folder / "notes.txt").write_text("not a picture: skipped")
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    result = await batch.arun(folder, tmp_path / "out.csv", session=session, prompt=prompt)
    rows = await _read(result)
    assert [r["id"] for r in sorted(rows, key=lambda r: r["id"])] == ["a.png", "b.jpg"]
    assert all(r["status"] == "ok" and r["final_answer"] == "2" for r in rows)
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header.split(",") == list(batch.FIELDS)  # cells are found by this header

    table = tmp_path / "in.csv"
    table.write_text(
        "id,prompt,image,expected,topic\n"
        f"r1,{marker}-r1 [[replica tokens=2]],pics/a.png,2,x\n"
        f"r2,{marker}-r2 [[replica tokens=2]],,,y\n"
    )
    result = await batch.arun(table, tmp_path / "out2.jsonl", session=session)
    records = {r["id"]: r for r in await _read(result)}
    assert records["r1"]["correct"] is True and records["r1"]["meta"] == {"topic": "x"}
    assert records["r2"]["expected"] is None and records["r2"]["correct"] is None


def test_bad_input_rows_become_items_that_name_the_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "fine"}\n\n{"prompt": "x"\n')
    fine, broken = batch.read_input(source)
    assert fine.problem is None and fine.prompt == "fine"
    assert re.fullmatch(r".*in\.jsonl:3: not valid JSON.*", broken.problem or "")
    source.write_text('{"prompt": "fine"}\n{"image": "a.png"}\n["a list"]\n')
    _, no_prompt, not_object = batch.read_input(source)
    assert re.fullmatch(r".*in\.jsonl:2: an item needs a prompt.*", no_prompt.problem or "")
    assert re.fullmatch(r".*in\.jsonl:3: a batch item is a dict.*", not_object.problem or "")
    source.write_text('{"id": "a"}\n{"id": "b", "prompt": "own"}\n')
    filled = list(batch.read_input(source, prompt="shared"))
    assert [item.prompt for item in filled] == ["shared", "own"]
    table = tmp_path / "in.csv"
    table.write_text("id,prompt\n1,hello\n2,hi,extra\n")
    _, extra = batch.read_input(table)
    assert re.fullmatch(r".*in\.csv:3: more cells.*", extra.problem or "")
    assert extra.id == "2"  # the row's own id, so a re-run matches it
    table.write_text("id,question\n1,hello\n")
    with pytest.raises(batch.BatchInputError, match=r"in\.csv:1: the header has no 'prompt'"):
        batch.read_input(table)  # the whole file is unusable: refused before anything is read
    assert batch.item_id(batch.BatchItem(prompt="p")) == batch.item_id(batch.BatchItem(prompt="p"))
    assert batch.item_id(batch.BatchItem(prompt="p")) != batch.item_id(
        batch.BatchItem(prompt="p", image=b"\x89PNG")
    )


async def test_pandas_and_datasets_inputs(session: Session, marker: str, tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    frame = pd.DataFrame(
        {"prompt": [f"{marker}-p{i} [[replica tokens=2]]" for i in range(3)],
         "expected": ["2", None, "2"]}
    )
    result = await batch.arun(batch.from_pandas(frame), tmp_path / "a.jsonl", session=session)
    assert result.summary.ok == 3 and result.summary.graded == 2
    images = [Image.new("RGB", (30, 30), (i * 80, 0, 0)) for i in range(3)]
    dataset = datasets.Dataset.from_dict(
        {"picture": images, "prompt": [f"{marker}-d{i} [[replica tokens=2]]" for i in range(3)]},
        features=datasets.Features(
            {"picture": datasets.Image(), "prompt": datasets.Value("string")}
        ),
    )
    items = batch.from_dataset(dataset, image_column="picture")
    result = await batch.arun(items, tmp_path / "b.jsonl", session=session)
    texts = [r["text"] for r in await _read(result)]
    assert result.summary.ok == 3
    assert all("Image: 30x30 RGB PNG" in text for text in texts)


async def test_transient_failures_are_retried_then_recorded(
    qvq_replicas: Factory, marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qvq_gradio.batch.engine._BACKOFF_FIRST", 0.05)
    # One slot and a queue of one: with four in flight, two are turned away (HTTP 503).
    server = qvq_replicas(1, "--concurrency", "1", "--max-queue", "1")[0]
    rows = _items(marker, 8, tokens=10, delay=0.02)
    async with Session(server.url) as session:
        result = await batch.arun(
            rows, tmp_path / "retried.jsonl", session=session, concurrency=4, retries=50
        )
        assert result.summary.ok == 8
        attempts = [r["attempts"] for r in await _read(result)]
        assert max(attempts) > 1  # some were turned away, and retried until answered
        result = await batch.arun(
            _items(f"{marker}-x", 8, tokens=10, delay=0.02),
            tmp_path / "not-retried.jsonl", session=session, concurrency=4, retries=0,
        )
    failed = [r for r in await _read(result) if r["status"] == "failed"]
    assert failed and all(r["error"]["type"] == "RateLimitError" for r in failed)
    assert all(r["attempts"] == 1 for r in failed)
    assert result.summary.failures == {"RateLimitError": len(failed)}


async def test_app_errors_fail_at_once(session: Session, marker: str, tmp_path: Path) -> None:
    rows = [{"id": "x", "prompt": f"{marker} [[replica fail=mid after=2]]"}]
    result = await batch.arun(rows, tmp_path / "out.jsonl", session=session, retries=5)
    (record,) = await _read(result)
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["error"]["type"] == "AppError"
    assert record["text"].startswith("Received prompt")  # the text that had arrived is kept


async def test_quota_pauses_the_whole_run_then_resumes(
    qvq_replicas: Factory, marker: str, tmp_path: Path
) -> None:
    server = qvq_replicas(1, "--quota-budget", "3", "--quota-retry", "2")[0]
    rows = _items(marker, 8)
    seen: list[batch.Progress] = []
    async with Session(server.url) as session:
        result = await batch.arun(
            rows, tmp_path / "out.jsonl", session=session, concurrency=2, progress=seen.append
        )
    assert result.summary.ok == 8 and result.summary.failed == 0
    assert result.summary.quota_wait > 0
    assert any(p.paused_for for p in seen)  # the countdown was shown
    _assert_exactly_once_plain(result.output, rows)
    # Every question cut by the quota was asked again, none failed.
    assert all(r["attempts"] == 1 for r in await _read(result))


def _assert_exactly_once_plain(path: Path, rows: list[dict[str, Any]]) -> None:
    records = _records(path)
    assert sorted(r["id"] for r in records) == sorted(row["id"] for row in rows)
    by_id = {row["id"]: row for row in rows}
    for record in records:
        tokens = int(by_id[record["id"]]["expected"])
        assert record["text"] == expected_text(by_id[record["id"]]["prompt"], tokens)


async def test_quota_stop_ends_cleanly_and_a_later_run_resumes(
    qvq_replicas: Factory, marker: str, tmp_path: Path
) -> None:
    server = qvq_replicas(1, "--quota-budget", "3", "--quota-retry", "1")[0]
    rows = _items(marker, 6)
    output = tmp_path / "out.jsonl"
    async with Session(server.url) as session:
        first = await batch.arun(rows, output, session=session, concurrency=1, on_quota="stop")
        assert first.summary.stopped_on_quota and first.summary.ok == 3
        assert len(_records(output)) == 3
        while True:  # resumed "tomorrow": once the quota is back
            again = await batch.arun(rows, output, session=session, concurrency=1,
                                     on_quota="stop")
            if not again.summary.stopped_on_quota:
                break
            await anyio.sleep(0.5)
    assert again.summary.skipped >= 3
    _assert_exactly_once_plain(output, rows)


async def test_retry_failed_replaces_the_failed_records(
    session: Session, marker: str, tmp_path: Path
) -> None:
    missing = tmp_path / "later.png"
    rows = [{"id": "a", "prompt": f"{marker}-a [[replica tokens=2]]"},
            {"id": "b", "prompt": f"{marker}-b [[replica tokens=2]]", "image": str(missing)}]
    output = tmp_path / "out.jsonl"
    first = await batch.arun(rows, output, session=session)
    assert first.summary.failed == 1
    again = await batch.arun(rows, output, session=session)
    assert again.summary.skipped == 2 and again.summary.skipped_failed == 1
    assert not again.summary.all_ok
    Image.new("RGB", (30, 30)).save(missing)
    fixed = await batch.arun(rows, output, session=session, retry_failed=True)
    assert fixed.summary.ok == 1
    records = _records(output)
    assert sorted(r["id"] for r in records) == ["a", "b"]  # still once each
    assert all(r["status"] == "ok" for r in records)


def test_a_torn_last_line_is_dropped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "out.jsonl"
    good = {"id": "a", "status": "ok"}
    output.write_text(json.dumps(good) + "\n" + '{"id": "b", "sta')
    writer = Output(output)
    writer.open(retry_failed=False)
    writer.close()
    assert writer.done == {("a", None): "ok"}
    assert output.read_text() == json.dumps(good) + "\n"
    assert "cut short by an earlier crash" in caplog.text


# -- whole runs of the qvq command, killed and interrupted ----------------------------------------


def _qvq_batch(source: Path, output: Path, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qvq_gradio", "batch", str(source), "-o", str(output),
         "--space", url, "--no-progress", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=replica_env(),
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait_for_lines(
    path: Path, n: int, proc: subprocess.Popen[str], count: Callable[[Path], int] = _lines
) -> None:
    """Until ``path`` has ``n`` complete records (as ``count`` counts them: JSONL lines by
    default), so the run is under way; a hang guard."""
    import time

    deadline = time.monotonic() + 60
    while count(path) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.02)


def _outcome(server: ReplicaProcess, marker: str) -> str:
    """How the request ended upstream; "cancelled" only for a real cancel (the client's
    /cancel reached the Space), never for a generator that merely stalled."""
    record = server.wait_ended(marker, timeout=30)
    if record["state"] == "cancelled":
        assert record["cancel_requested"], record
    return str(record["state"])


def test_resume_after_sigkill_loses_nothing_and_writes_nothing_twice(
    qvq_replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    rows = [dict(r, delay=0.01) for r in _items(marker, 60, tokens=8, delay=0.01)]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    kills = 0
    for stop_at in (5, 18, 31, 44):
        proc = _qvq_batch(source, output, qvq_replica.url, "--concurrency", "6")
        _wait_for_lines(output, stop_at, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
        # Never a torn line, never an item twice, after any kill: read the raw bytes (a
        # reader that skips an unfinished line would hide a torn one).
        raw = output.read_bytes()
        assert raw.endswith(b"\n"), raw[-200:]
        records = [json.loads(line) for line in raw.decode().splitlines()]
        assert len({r["id"] for r in records}) == len(records)
    proc = _qvq_batch(source, output, qvq_replica.url, "--concurrency", "6")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert kills == 4
    _assert_exactly_once_plain(output, rows)


def test_ctrl_c_cancels_in_flight_and_exits_130(
    qvq_replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    # Two short answers, then long ones: when the short ones are written, the long ones are
    # in the middle of their answers.
    rows = _items(marker, 2, tokens=5, delay=0.02) + [
        dict(row, id=f"{row['id']}L", prompt=row["prompt"].replace(" ", "L ", 1))
        for row in _items(marker, 10, tokens=150, delay=0.02)
    ]
    source = _write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out.jsonl"
    proc = _qvq_batch(source, output, qvq_replica.url, "--concurrency", "4")
    _wait_for_lines(output, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    written = {r["id"] for r in _records(output)}
    # What was written, said: N questions were in flight, not one job.
    assert "the questions in flight were cancelled" in err
    assert f"the file: {len(written)} ok, 0 failed" in err
    # What was in flight was cancelled upstream: the replica says so (once it has stopped).
    asked = {r["prompt"].split()[0] for r in qvq_replica.requests() if marker in r["prompt"]}
    states = [_outcome(qvq_replica, f"{key} ") for key in asked - written]
    # Those that had just finished upstream when Ctrl-C came are asked again on resume.
    assert "cancelled" in states and set(states) <= {"cancelled", "done"}
    proc = _qvq_batch(source, output, qvq_replica.url, "--concurrency", "4")
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    _assert_exactly_once_plain(output, rows)


# -- the answer history ------------------------------------------------------------------------


async def test_history_records_and_the_cache_answers_without_the_space(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    database = tmp_path / "history.db"
    image = tmp_path / "cat.png"
    Image.new("RGB", (50, 40), (10, 20, 30)).save(image)
    prompt = f"{marker} [[replica tokens=4 delay=0]]"
    async with Session(replica.url, history=database, cache=True, token="hf_NeverStored1") as s:
        first = [e async for e in s.events(prompt, image=image)]
        second = [e async for e in s.events(prompt, image=image)]
    assert first[-1].cached is False and second[-1].cached is True  # type: ignore[union-attr]
    assert second[-1].text == first[-1].text  # type: ignore[union-attr]
    assert len([e for e in second if type(e).__name__ == "TextDelta"]) == 1
    asked = [r for r in replica.requests() if marker in r["prompt"]]
    assert len(asked) == 1  # the second answer never reached the Space

    def rows() -> list[Any]:
        with History(database) as store:
            return store.search(marker)

    hit, row = await anyio.to_thread.run_sync(rows)  # newest first: the cache hit is recorded
    assert hit.from_cache and not row.from_cache
    assert hit.text == row.text and hit.image_sha256 == row.image_sha256
    assert row.ok and row.text == first[-1].text and row.final_answer == "4"  # type: ignore[union-attr]
    assert row.image_sha256 and row.image_size and row.image_name == "cat.png"
    raw = sqlite3.connect(database).execute("SELECT * FROM answers").fetchall()
    assert "hf_NeverStored1" not in repr(raw)
    images = sqlite3.connect(database).execute("SELECT image FROM answers").fetchall()
    assert images and all(image is None for (image,) in images)  # no pixels unless asked


def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    database = tmp_path / "history.db"
    script = (
        "import sys\n"
        "from qvq_gradio.history import History\n"
        "with History(sys.argv[1]) as h:\n"
        "    for i in range(200):\n"
        "        h.record(space='s', prompt=f'{sys.argv[2]}-{i}', text='t')\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(database), name])
        for name in ("p1", "p2")
    ]
    store = History(database)
    threads = [
        threading.Thread(
            target=lambda n=n: [store.record(space="s", prompt=f"t{n}-{i}", text="t")
                                for i in range(100)]
        )
        for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert store.count() == 2 * 200 + 8 * 100
    store.close()


def test_cli_records_by_default_and_history_lists_it(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    from .test_cli import run

    prompt = f"{marker} [[replica tokens=2 delay=0]]"

    def qvq(*args: str, extra: dict[str, str] | None = None) -> Any:
        code, out, err = run(list(args), env={"QVQ_HOME": str(tmp_path), **(extra or {})})
        return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)

    assert qvq("ask", prompt, "--space", replica.url).returncode == 0
    assert qvq("ask", f"{prompt} off", "--space", replica.url, "--no-history").returncode == 0
    assert qvq("ask", f"{prompt} env", "--space", replica.url,
               extra={"QVQ_HISTORY": "0"}).returncode == 0
    listing = qvq("history", marker, "--json")
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == [prompt]
    shown = qvq("history", "show", str(rows[0]["id"]))
    assert shown.returncode == 0 and "**Final Answer**" in shown.stdout
    cached = qvq("ask", prompt, "--space", replica.url, "--cache", "--json")
    assert json.loads(cached.stdout)["text"] == rows[0]["text"]
    assert len([r for r in replica.requests() if r["prompt"] == prompt]) == 1
    assert (tmp_path / "history.db").exists()
    assert os.stat(tmp_path / "history.db").st_size > 0


@pytest.fixture
def not_gradio() -> Any:
    """A web server on loopback that is no Gradio app (a login page; no config)."""
    body = b"<html><body>Log in</body></html>"
    with Web(lambda path: (404 if "config" in path else 200, {}, body)) as server:
        yield server.url


def test_a_batch_against_no_space_stops_before_any_item(
    marker: str, tmp_path: Path, not_gradio: str
) -> None:
    """Nothing answers: one line naming the Space and what failed, no record, no output file."""
    from .test_cli import run as cli

    source = _write_jsonl(tmp_path / "in.jsonl", _items(marker, 30))
    out = tmp_path / "out.jsonl"
    for space, says, code in (("http://127.0.0.1:9", "Could not reach", 3),
                              (not_gradio, "not a Gradio app", 7),
                              (f"http://127.0.0.1:9,{not_gradio}", "no Space of the pool", 3)):
        status, stdout, stderr = cli(["batch", str(source), "-o", str(out), "--space", space])
        lines = stderr.strip().splitlines()
        assert (status, len(lines)) == (code, 1), stderr
        assert says in lines[0] and space.split(",")[0] in lines[0]
        assert not out.exists() and stdout == ""


async def test_a_pool_with_one_space_answering_runs_the_batch(
    replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    from qvq_gradio import Pool

    async with Pool(["http://127.0.0.1:9", replica.url], connect_timeout=5) as pool:
        result = await batch.arun(_items(marker, 3), tmp_path / "out.jsonl", session=pool)
    assert result.summary.ok == 3


def test_an_empty_input_leaves_no_output_file(tmp_path: Path) -> None:
    from .test_cli import run as cli

    source = tmp_path / "in.jsonl"
    source.write_text("")
    for name in ("out.jsonl", "out.csv"):
        code, _, err = cli(["batch", str(source), "-o", str(tmp_path / name),
                            "--space", "http://127.0.0.1:9"])
        assert code == 2 and "nothing to ask" in err
        assert not (tmp_path / name).exists()


async def test_resuming_a_csv_of_an_older_version_keeps_its_columns(
    session: Session, marker: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    old = [name for name in batch.FIELDS if name not in ("reasoning", "shape")]
    first = {name: "" for name in old} | {"id": "a", "status": "ok", "text": "earlier"}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, old)
    writer.writeheader()
    writer.writerow(first)
    await anyio.Path(out).write_text(buffer.getvalue(), encoding="utf-8", newline="")
    rows = [{"id": "a", "prompt": f"{marker}-a"},
            {"id": "b", "prompt": f"{marker}-b [[replica tokens=2 delay=0]]"}]
    await batch.arun(rows, out, session=session)
    records = await anyio.to_thread.run_sync(_records, out)
    assert [(r["id"], r["status"]) for r in records] == [("a", "ok"), ("b", "ok")]
    assert set(records[1]) == set(old) and records[1]["final_answer"] == "2"
