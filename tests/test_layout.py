"""The layering of the package, read from its imports (every import, deferred ones included).

    base      errors, secrets, events, options, answer, prompt, media, fetch, imaging,
              thinking, helpers
    upstreams what answers: the protocol, and each kind (gradio/: the only code that imports
              gradio_client); it never imports the core or the shells
    core      history, pipeline, session, pool, health, cooling, protocol, models
    shells    batch, sync, notebook, provider, gpt4free, cli, serve, pytest_plugin
    replica   the offline Space: imports nothing of the client

Data flows one way: no module imports a layer above its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qvq_gradio"

BASE = {
    "errors", "_secrets", "events", "options", "answer", "prompt", "media", "fetch", "imaging",
    "_backoff", "_threads", "_tls", "_wakeups", "thinking", "spaces", "endpoints",
}
#: Input code: reads what the caller gave; knows nothing of Spaces.
INPUT = {"prompt", "media", "fetch", "imaging", "options", "answer", "events", "thinking"}
CORE = {
    "history", "pipeline", "job", "session", "pool", "health", "cooling", "protocol", "models",
}
SHELLS = {
    "batch", "sync", "notebook", "provider", "gpt4free", "cli", "serve", "pytest_plugin",
    "__main__", "__init__",
}
LAYERS = {"base": 0, "upstreams": 1, "core": 2, "shells": 3}


def _top(module: str) -> str:
    """``qvq_gradio.a.b`` -> ``a``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(top: str) -> str:
    if top in BASE:
        return "base"
    if top == "upstreams":
        return "upstreams"
    if top in CORE:
        return "core"
    if top in SHELLS:
        return "shells"
    if top == "replica":
        return "replica"
    raise AssertionError(f"qvq_gradio.{top} is in no layer: add it to tests/test_layout.py")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, absolute names, deferred imports included."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


MODULES = _modules()


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(_top(module))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up(module: str) -> None:
    top = _top(module)
    layer = _layer(top)
    for name in _imports(module, MODULES[module]):
        if not name.startswith("qvq_gradio.") or name not in MODULES:
            continue
        other = _top(name)
        if other == top:
            continue
        other_layer = _layer(other)
        if layer == "replica":
            pytest.fail(f"{module} (the replica) imports {name}: it must stand alone")
        assert other_layer != "replica" or layer == "shells", f"{module} imports the replica"
        if other_layer == "replica":
            continue
        assert LAYERS[other_layer] <= LAYERS[layer], (
            f"{module} ({layer}) imports {name} ({other_layer}): an arrow back up"
        )
        if top in INPUT:
            assert other_layer == "base", f"input code {module} imports {name}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_gradio_upstream_imports_gradio_client(module: str) -> None:
    if module.startswith("qvq_gradio.upstreams.gradio"):
        return
    for name in _imports(module, MODULES[module]):
        assert name.split(".")[0] != "gradio_client", f"{module} imports {name}"
        if _top(module) != "replica":
            assert name.split(".")[0] != "gradio", f"{module} imports {name}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_an_upstream_kind_imports_no_other_kind(module: str) -> None:
    """Each kind of upstream stands alone on the protocol: a new kind is one package."""
    parts = module.split(".")
    if parts[:2] != ["qvq_gradio", "upstreams"]:
        return
    kind = parts[2] if len(parts) > 2 else None
    for name in _imports(module, MODULES[module]):
        other = name.split(".")
        if other[:2] == ["qvq_gradio", "upstreams"] and len(other) > 2 and other[2] in {
            m.split(".")[2] for m in MODULES if m.count(".") >= 2 and m.startswith(
                "qvq_gradio.upstreams.")
        }:
            assert other[2] == kind, f"{module} imports {name}: another kind of upstream"
