"""Notebook display, and the quickstart notebook executed end to end in a real kernel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from qvq_gradio import Session
from qvq_gradio.notebook import ashow, render_answer, show
from qvq_gradio.replica import ReplicaProcess

from .test_stream import expected_text

ROOT = Path(__file__).resolve().parent.parent


def _executed(name: str) -> tuple[Any, list[Any], str]:
    """The notebook ``name`` run in a kernel (a cell that errors fails the test): the notebook,
    its code cells' outputs, and their streamed text."""
    import nbclient
    import nbformat

    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    streams = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "Traceback" not in streams
    return notebook, outputs, streams


@pytest.mark.inprocess_gradio
def test_quickstart_notebook_runs(replica: ReplicaProcess) -> None:
    _, outputs, streams = _executed("quickstart.ipynb")
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("Final answer" in h and "<details>" in h for h in html)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the thumbnail
    assert "out of GPU quota, retry in 588 s" in streams
    last = [o for o in outputs if o["output_type"] == "execute_result"][-1]
    assert last["data"]["text/plain"].startswith("('cancelled', ")


def test_show_prints_outside_a_notebook(
    replica: ReplicaProcess, marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = f"{marker} [[replica tokens=6 delay=0]]"
    text = show(prompt, space=replica.url)
    assert text == expected_text(prompt, 6)
    assert capsys.readouterr().out == text + "\n"


class FakeKernelDisplay:
    """Stands in for IPython's display machinery inside a kernel."""

    def __init__(self) -> None:
        self.shown: list[Any] = []
        self.updates: list[Any] = []

    def display(self, obj: Any, display_id: bool = False) -> Any:
        self.shown.append(obj)
        recorder = self

        class Handle:
            def update(self, new: Any) -> None:
                recorder.updates.append(new)

        return Handle() if display_id else None


@pytest.fixture
def kernel(mocker: Any) -> FakeKernelDisplay:
    import IPython
    import IPython.display

    fake = FakeKernelDisplay()
    mocker.patch.object(
        IPython, "get_ipython", return_value=type("Shell", (), {"kernel": object()})()
    )
    mocker.patch.object(IPython.display, "display", side_effect=fake.display)
    return fake


def _kinds(objects: list[Any]) -> list[str]:
    return [type(o).__name__ for o in objects]


def test_rich_display_in_a_kernel(
    replica: ReplicaProcess, marker: str, kernel: FakeKernelDisplay
) -> None:
    image = Image.new("RGB", (600, 300), (0, 128, 255))
    text = show(
        f"{marker} [[replica tokens=40 delay=0.002]]", image=image, space=replica.url, throttle=0
    )
    assert _kinds(kernel.shown) == ["Image", "Markdown"]  # the thumbnail, then the live area
    thumbnail = kernel.shown[0]
    assert max(Image.open(__import__("io").BytesIO(thumbnail.data)).size) == 256
    live = [u for u in kernel.updates if type(u).__name__ == "Markdown"]
    assert len(live) > 1
    assert live[-1].data == text[: len(live[-1].data)]  # always a prefix of the answer
    final = kernel.updates[-1]
    assert type(final).__name__ == "HTML"
    assert "<mark style='padding:2px 6px'>40</mark>" in final.data
    assert "<details><summary>Reasoning" in final.data


def test_redraws_are_throttled(
    replica: ReplicaProcess, marker: str, kernel: FakeKernelDisplay
) -> None:
    show(f"{marker} [[replica tokens=60 delay=0.002]]", space=replica.url, throttle=1e9)
    # The Space reports a queue position before it starts, even when nobody is ahead.
    redraws = [u for u in kernel.updates if not u.data.startswith("⏳")]
    assert _kinds(redraws) == ["HTML"]  # no redraw per token: only the final render


def test_errors_are_shown_then_raised(
    replica: ReplicaProcess, marker: str, kernel: FakeKernelDisplay
) -> None:
    with pytest.raises(Exception, match="failing after 3 tokens"):
        show(f"{marker} [[replica tokens=9 delay=0 fail=mid after=3]]", space=replica.url)
    assert "failing after 3 tokens" in kernel.updates[-1].data


@pytest.mark.anyio
async def test_ashow(
    replica: ReplicaProcess, marker: str, no_blocking: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Session(replica.url) as session:
        prompt = f"{marker} [[replica tokens=4 delay=0]]"
        assert await ashow(prompt, session=session) == expected_text(prompt, 4)


def test_render_answer_without_a_final_answer() -> None:
    assert render_answer("no conclusion <here>") == (
        "<div style='white-space:pre-wrap'>no conclusion &lt;here&gt;</div>"
    )


def test_batch_notebook_runs() -> None:
    notebook, outputs, streams = _executed("batch.ipynb")
    assert "10 ok, 0 failed, 0 already done" in streams
    assert "the file: 10 ok, 0 failed; accuracy 80.0% of 10 graded" in streams
    assert "this run: 0 ok, 0 failed, 10 already done" in streams
    html = [o["data"].get("text/html", "") for o in outputs if "data" in o]
    assert any("dots-10" in h and "correct" in h for h in html)  # the DataFrame
    # The quota paused the run (and said so), then it went on.
    assert "quota exceeded: pausing new questions for 2 s" in streams
    assert re.search(r"quota wait [1-9]", streams)
    # The progress bar is a widget; its last state counts every item.
    bar = json.dumps(notebook.metadata.get("widgets", {}))
    assert "10/10" in bar and "ok=10" in bar and "failed=0" in bar


def test_render_answer_folds_a_spaces_thinking() -> None:
    shown = render_answer("Four.", 1.5, thinking="2 + 2 <is> 4")
    assert shown.startswith("<div style='white-space:pre-wrap'>Four.</div>")
    assert "<summary>Thinking (5 words, 1.5 s)</summary>" in shown
    assert "2 + 2 &lt;is&gt; 4" in shown


def test_compare_notebook_runs(
    replica: ReplicaProcess, standin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, spec = standin()
    monkeypatch.setenv("COMPARE_QVQ", replica.url)  # the notebook's stand-ins, handed in
    monkeypatch.setenv("COMPARE_MAX", spec)
    _, outputs, streams = _executed("compare.ipynb")
    assert "this run: 18 ok, 0 failed, 0 already done" in streams
    assert "qvq: 9 ok, 0 failed; accuracy 66.7% of 9 graded" in streams
    assert "max: 9 ok, 0 failed; accuracy 100.0% of 9 graded" in streams
    assert "qvq vs max: agree on 6 of 9 items graded for both" in streams
    assert "this run: 0 ok, 0 failed, 18 already done" in streams
    html = [o["data"].get("text/html", "") for o in outputs if "data" in o]
    assert any("dots-6" in h and "three-1" in h for h in html)  # the side-by-side table
    assert any("median_elapsed" in h for h in html)  # the per-model table
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot
