"""One batch asked of several named models (``--compare``): a Space (the replica) and an
endpoint (the replica's OpenAI-compatible stand-in), both real servers on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qvq_gradio import batch
from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.replica.host import HostedReplica

from .test_cli import run

Standin = Callable[..., tuple[HostedReplica, str]]


def _items(path: Path, marker: str) -> Path:
    """Three graded items: both models right on two; on the third only the endpoint (its
    answer is its --tokens, 3; the Space's default is 40)."""
    rows = [
        {"id": "two", "prompt": f"{marker}-two [[replica tokens=2 delay=0]]", "expected": "2"},
        {"id": "four", "prompt": f"{marker}-four [[replica tokens=4 delay=0]]", "expected": "4"},
        {"id": "own", "prompt": f"{marker}-own", "expected": "3"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _records(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["id"], r["model"]): r for r in batch.read_output(path)}


def test_every_item_is_asked_of_every_model_and_compared(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    endpoint, spec = standin("--served-model", "qvq-max-2025")
    source, out = _items(tmp_path / "in.jsonl", marker), tmp_path / "out.jsonl"
    result = batch.run(source, out, models={"space": replica.url, "max": spec})
    records = _records(out)
    assert set(records) == {(i, m) for i in ("two", "four", "own") for m in ("space", "max")}
    # Each record says which model, the upstream that answered, the provider's id and usage.
    mine = records[("two", "max")]
    assert (mine["status"], mine["correct"], mine["model_id"]) == ("ok", True, "qvq-max-2025")
    assert mine["space"].startswith("openai+") and mine["usage"]["total_tokens"] > 0
    theirs = records[("two", "space")]
    assert (theirs["space"], theirs["model_id"], theirs["usage"]) == (replica.url, None, None)
    assert records[("own", "space")]["correct"] is False
    summary = result.summary
    assert (summary.ok, summary.failed) == (6, 0)
    space, max_ = summary.models
    assert (space.name, space.accuracy, space.graded, space.tokens) == ("space", 2 / 3, 3, None)
    assert (max_.name, max_.accuracy, max_.ok) == ("max", 1.0, 3)
    assert max_.tokens == sum(records[(i, "max")]["usage"]["total_tokens"]
                              for i in ("two", "four", "own"))
    (pair,) = summary.agreements
    assert (pair.both_right, pair.only_first, pair.only_second, pair.both_wrong) == (2, 0, 1, 0)
    assert "space vs max: agree on 2 of 3 items graded for both" in str(summary)
    assert len([r for r in endpoint.requests() if marker in r["prompt"]]) == 3


def test_resume_is_by_item_and_model(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    endpoint, spec = standin()
    source, out = _items(tmp_path / "in.jsonl", marker), tmp_path / "out.jsonl"
    models = {"space": replica.url, "max": spec}
    batch.run(source, out, models=models)
    again = batch.run(source, out, models=models)
    assert (again.summary.asked, again.summary.skipped) == (0, 6)
    # One model's record of one item gone (as if killed before it was written): only that
    # one is asked again; the other model's record of the item stands.
    kept = [line for line in out.read_text().splitlines()
            if not ('"id": "four"' in line and '"model": "max"' in line)]
    out.write_text("\n".join(kept) + "\n")
    before = len(endpoint.requests())
    resumed = batch.run(source, out, models=models)
    assert (resumed.summary.asked, resumed.summary.skipped) == (1, 5)
    asked = endpoint.requests()[before:]
    assert [r["prompt"] for r in asked] == [f"{marker}-four [[replica tokens=4 delay=0]]"]
    assert len(_records(out)) == 6 and resumed.summary.models[1].graded == 3
    assert len(list(batch.read_output(out))) == 6  # no item written twice


def test_a_model_failing_fails_only_its_own_records(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    _, spec = standin("--fail", "bad-request")
    source, out = _items(tmp_path / "in.jsonl", marker), tmp_path / "out.csv"
    result = batch.run(source, out, models={"space": replica.url, "max": spec})
    space, max_ = result.summary.models
    assert (space.ok, space.failed) == (3, 0)
    assert (max_.ok, max_.failed, max_.failures) == (0, 3, {"AppError": 3})
    (pair,) = result.summary.agreements
    assert pair.rate is None and "no item graded for both" in str(result.summary)
    # The CSV carries the same columns, read back the same way.
    assert {r["model"] for r in batch.read_output(out)} == {"space", "max"}
    by_name = {m.name: m for m in batch.summarize_output(out).models}
    assert by_name == {m.name: m for m in result.summary.models}


def test_the_command_line_compares_named_models(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    _, spec = standin()
    source, out = _items(tmp_path / "in.jsonl", marker), tmp_path / "out.jsonl"
    code, _, err = run(["batch", str(source), "-o", str(out), "--compare", "--no-history",
                        "--space", f"space={replica.url}", "--space", f"max={spec}"])
    assert code == 0, err
    assert "space: 3 ok, 0 failed; accuracy 66.7% of 3 graded" in err
    assert "max: 3 ok, 0 failed; accuracy 100.0% of 3 graded" in err
    assert "space vs max: agree on 2 of 3" in err
    assert {r["model"] for r in batch.read_output(out)} == {"space", "max"}


@pytest.mark.parametrize(
    ("spaces", "says"),
    [
        (["a=owner/x", "owner/y"], "give each --space as NAME=SPEC (not 'owner/y')"),
        (["a=owner/x"], "two named models at least"),
    ],
)
def test_compare_without_two_named_models_is_refused_in_one_line(
    tmp_path: Path, spaces: list[str], says: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "hi"}\n')
    args = ["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--compare"]
    code, _, err = run(args + [a for s in spaces for a in ("--space", s)])
    assert code == 2 and says in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


def test_models_need_names_the_cli_would_take(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a model's name"):
        batch.run([{"prompt": "hi"}], tmp_path / "o.jsonl", models={"a b": "owner/x"})
    with pytest.raises(ValueError, match="not both"):
        batch.run([{"prompt": "hi"}], tmp_path / "o.jsonl", models={"a": "owner/x"},
                  session=object())


def test_one_models_quota_pause_does_not_hold_the_other(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path
) -> None:
    # The endpoint answers one question, then says 429 "retry after 5 s" for 5 s.
    _, spec = standin("--quota-budget", "1", "--quota-retry", "5")
    rows = [{"id": f"i{n}", "prompt": f"{marker}-{n} [[replica tokens=3 delay=0]]",
             "expected": "3"} for n in (1, 2)]
    out = tmp_path / "out.jsonl"
    result = batch.run(rows, out, models={"space": replica.url, "max": spec}, concurrency=1)
    order = [(r["model"], r["id"]) for r in batch.read_output(out)]
    assert sorted(order) == [("max", "i1"), ("max", "i2"), ("space", "i1"), ("space", "i2")]
    # The Space's answers were all written while the endpoint waited out its pause.
    assert order.index(("space", "i2")) < order.index(("max", "i2"))
    assert result.summary.quota_wait > 0 and result.summary.ok == 4
