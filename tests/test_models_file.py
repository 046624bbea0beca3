"""A models file (``models.toml``): names for specs, key variables, shapes and default
parameters, read by every command (``--models FILE``, else beside the history)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qvq_gradio import ModelsFileError, batch
from qvq_gradio.models import ModelEntry, expand, load_models
from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.replica.host import HostedReplica

from .conftest import Served
from .test_cli import run

Standin = Callable[..., tuple[HostedReplica, str]]


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_models_file_names_specs_keys_shapes_and_defaults(tmp_path: Path) -> None:
    models = load_models(_file(tmp_path / "m.toml", """
[models.qvq]
spaces = ["Qwen/QVQ-72B-preview", "openai+https://example.org/v1#qvq-max"]
key = "MY_KEY"

[models.chat]
space = "someone/chat"
shape = "chat"
temperature = 0.2
max_tokens = 512
"""))
    assert models == {
        "qvq": ModelEntry("qvq", ("Qwen/QVQ-72B-preview",
                                  "openai+https://example.org/v1#qvq-max&key=MY_KEY")),
        "chat": ModelEntry("chat", ("someone/chat",), "chat",
                           {"temperature": 0.2, "max_tokens": 512}),
    }
    # A bare name stands for its specs, under its name; NAME=MODEL renames; others stay.
    assert expand(["qvq", "c=chat", "a/b,chat"], models) == [
        "qvq=Qwen/QVQ-72B-preview", "qvq=openai+https://example.org/v1#qvq-max&key=MY_KEY",
        "c=someone/chat", "a/b", "chat=someone/chat",
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[models.a]\nspace = 'x/y'\ntemprature = 1", "model 'a': unknown key 'temprature'"),
        ("[models.a]\nshape = 'chat'", "give space = "),
        ("[models.a]\nspace = 'x/y'\nspaces = ['x/z']", "give space = "),
        ("[models.a]\nspace = 'x/y'\nshape = 'gradio'", "shape is one of qvq, chat, blocks"),
        ("[models.a]\nspace = 'x/y'\ntop_p = 2", "top_p must be a number from 0.0 to 1.0"),
        ("[models.a]\nspace = 'x/y'\nmax_tokens = 1.5", "max_tokens must be a number"),
        ("[models.a]\nspace = 'x/y'\nkey = 'sk-123 456'", "key is the name of the variable"),
        ('[models."a b"]\nspace = "x/y"', "a name is letters, digits"),
        ("[spaces]\nx = 1", "holds [models.NAME] tables only"),
        ("models = [", "not TOML"),
    ],
)
def test_a_bad_models_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, text: str, says: str
) -> None:
    path = _file(tmp_path / "m.toml", text)
    with pytest.raises(ModelsFileError, match=re.escape(says)) as caught:
        load_models(path)
    assert str(path) in str(caught.value)
    code, _, err = run(["ask", "hi", "--models", str(path), "--space", "a"])
    assert code == 2 and says.split("(")[0][:20] in err and "Traceback" not in err


def test_no_file_given_and_none_beside_the_history_is_no_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QVQ_HOME", str(tmp_path))
    assert load_models() == {}
    with pytest.raises(ModelsFileError, match="no such models file"):
        load_models(tmp_path / "missing.toml")


def test_a_named_model_is_asked_with_its_defaults_from_the_default_file(
    standin: Standin, marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, spec = standin()
    endpoint = spec.replace("&key=QVQ_STANDIN_KEY", "")
    monkeypatch.setenv("QVQ_HOME", str(tmp_path))  # models.toml beside the history
    _file(tmp_path / "models.toml", f"""
[models.max]
space = "{endpoint}"
key = "QVQ_STANDIN_KEY"
temperature = 0.25
max_tokens = 99
""")
    code, out, err = run(["ask", f"{marker}-a", "--space", "max", "--json"])
    assert code == 0, err
    assert json.loads(out)["applied"] == {"temperature": 0.25, "max_tokens": 99}
    code, out, err = run(["ask", f"{marker}-b", "--space", "max", "--temperature", "0.9",
                          "--no-history"])
    assert code == 0, err
    params = {r["prompt"]: r["params"] for r in server.requests()}
    assert (params[f"{marker}-a"]["temperature"], params[f"{marker}-a"]["max_tokens"]) == (
        0.25, 99)
    assert (params[f"{marker}-b"]["temperature"], params[f"{marker}-b"]["max_tokens"]) == (
        0.9, 99)


def test_a_models_shape_is_how_its_space_is_asked(
    replica: ReplicaProcess, tmp_path: Path
) -> None:
    path = _file(tmp_path / "m.toml", f'[models.c]\nspace = "{replica.url}"\nshape = "chat"\n')
    code, _, err = run(["ask", "hi", "--models", str(path), "--space", "c", "--no-history"])
    assert code == 7 and "has no chat endpoint" in err and "Traceback" not in err


def test_serve_with_no_space_serves_every_model_of_the_file(
    served: Callable[..., Served], standin: Standin, replica: ReplicaProcess, marker: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import openai

    _, spec = standin()
    monkeypatch.delenv("QVQ_SPACE", raising=False)
    path = _file(tmp_path / "m.toml",
                 f'[models.qvq]\nspace = "{replica.url}"\n[models.max]\nspace = "{spec}"\n')
    server = served(None, "--models", str(path), "--no-history")
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["qvq", "max"]
        reply = client.chat.completions.create(
            model="max", messages=[{"role": "user", "content": f"{marker} hi"}]
        )
    assert reply.choices[0].message.content == "\\boxed{3}"


def test_batch_compare_with_no_space_compares_every_model_of_the_file(
    standin: Standin, replica: ReplicaProcess, marker: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, spec = standin()
    monkeypatch.delenv("QVQ_SPACE", raising=False)
    path = _file(tmp_path / "m.toml",
                 f'[models.qvq]\nspace = "{replica.url}"\n[models.max]\nspace = "{spec}"\n')
    source = _file(tmp_path / "in.jsonl", json.dumps(
        {"prompt": f"{marker} [[replica tokens=3 delay=0]]", "expected": "3"}) + "\n")
    out = tmp_path / "out.jsonl"
    code, _, err = run(["batch", str(source), "-o", str(out), "--compare", "--models", str(path),
                        "--no-history"])
    assert code == 0, err
    records: list[dict[str, Any]] = list(batch.read_output(out))
    assert sorted(r["model"] for r in records) == ["max", "qvq"]
    assert "qvq vs max: agree on 1 of 1" in err
