"""The docs stay true: every relative link resolves, the README's Python examples run against the
replica, and no page reads as a diary (commit hashes, issue numbers, dates)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from qvq_gradio.replica import ReplicaProcess

from .conftest import Served, replica_env

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "docs").glob("*.md")])
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
#: The mark of an example that needs the internet (a real Space, a paid endpoint): skipped here.
INTERNET = "# needs the internet"


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page.name}: no #{anchor}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_reads_as_a_diary(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"`[0-9a-f]{7,12}`", text), "a commit hash"
    assert not re.search(r"\bissues? #?\d+", text, re.IGNORECASE), "an issue number"
    if page.name != "CHANGELOG.md":
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a dated line"


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def _examples() -> list[str]:
    return _BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("number", range(len(_examples())))
def test_the_readmes_python_examples_run(
    number: int, replica: ReplicaProcess, served: Any, tmp_path: Path
) -> None:
    code = _examples()[number]
    if INTERNET in code:
        pytest.skip("this example needs the internet")
    # What the examples name: a photo, a batch file with its images, a server on :8000.
    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (40, 30), (20, 40, 200)).save(tmp_path / "c1.png")
    (tmp_path / "charts.jsonl").write_text(
        '{"id": "c1", "prompt": "What is the peak value?", "image": "c1.png", "expected": "40"}\n'
    )
    if "127.0.0.1:8000" in code:
        server: Served = served(replica.url, "--no-history")
        code = code.replace("http://127.0.0.1:8000", server.url)
    if "def test_" in code:  # the plugin's example: called with the replica as its fixture
        names = re.findall(r"^def (test_\w+)\(qvq_replica\)", code, re.M)
        code += "".join(f"\n{name}(type('R', (), {{'url': {replica.url!r}}})())\n"
                        for name in names)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**replica_env(), "QVQ_SPACE": replica.url, "QVQ_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, f"example {number}:\n{code}\n{done.stderr}"
    assert "Traceback" not in done.stderr
