"""A models file: names for what users would otherwise retype (specs, key variables, shape,
default parameters). TOML, ``models.toml`` beside the history (``$QVQ_HOME``), or a file given
(``--models FILE``); read by every command::

    [models.qvq]
    spaces = ["Qwen/QVQ-72B-preview", "openai+https://dashscope-intl.aliyuncs.com/compatible-mode/v1#qvq-max"]

    [models.max]
    space = "openai+https://dashscope-intl.aliyuncs.com/compatible-mode/v1#qvq-max"
    key = "MY_DASHSCOPE_KEY"      # the variable the key comes from (endpoints)
    temperature = 0.2             # defaults for every question to it
    max_tokens = 4096

    [models.chat]
    space = "someone/some-chat-space"
    shape = "chat"

A model's name then stands for its specs wherever a spec is accepted (``--space max``,
``$QVQ_SPACE``, ``qvq serve --space qvq --space max``); ``qvq serve`` with no ``--space``
serves every model of the file, ``qvq batch --compare`` with none compares them all. Each
entry takes ``space`` (one spec) or ``spaces`` (a pool), and optionally ``key``, ``shape``,
``temperature``, ``max_tokens``, ``top_p``; anything else is refused, naming the file, the
model and the key, before anything is sent.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .endpoints import is_endpoint
from .errors import ModelsFileError
from .options import SAMPLING
from .spaces import split_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = [
    "MODELS_FILE", "ModelEntry", "default_models_path", "expand", "load_models", "resolve"
]

MODELS_FILE: Final = "models.toml"
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")
_VARIABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHAPES: Final = ("qvq", "chat", "blocks")
_KEYS: Final = ("space", "spaces", "key", "shape", *(name for name, *_ in SAMPLING))


@dataclass(frozen=True)
class ModelEntry:
    """One named model of the file: its specs (several: one pool), the shape its Spaces are
    asked in, the sampling parameters every question to it gets unless it says otherwise."""

    name: str
    specs: tuple[str, ...]
    shape: str | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)


def default_models_path() -> Path:
    """``models.toml`` beside the history database (``$QVQ_HOME``, else the data directory)."""
    from .history import default_path

    return default_path().parent / MODELS_FILE


def load_models(path: str | os.PathLike[str] | None = None) -> dict[str, ModelEntry]:
    """The models of ``path`` (it must exist), or of the default file (none there: ``{}``).
    Blocking (reads a file)."""
    source = Path(path) if path is not None else default_models_path()
    if path is None and not source.is_file():
        return {}
    try:
        with open(source, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ModelsFileError(f"{source}: no such models file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsFileError(f"{source}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"{source}: not TOML ({exc})") from None
    models = data.get("models", {})
    unknown = sorted(set(data) - {"models"})
    if unknown or not isinstance(models, dict):
        raise ModelsFileError(
            f"{source}: a models file holds [models.NAME] tables only, not {unknown or 'models'}"
        )
    return {name: _entry(source, name, table) for name, table in models.items()}


def _entry(source: Path, name: str, table: Any) -> ModelEntry:
    where = f"{source}: model {name!r}"
    if not _NAME.fullmatch(name):
        raise ModelsFileError(f"{where}: a name is letters, digits, '_', '.' and '-'")
    if not isinstance(table, dict):
        raise ModelsFileError(f"{where}: give it as a [models.{name}] table")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ModelsFileError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    given = table.get("spaces", table.get("space"))
    specs = [given] if isinstance(given, str) else given
    if ("space" in table) == ("spaces" in table) or not isinstance(specs, list) or not specs or (
        not all(isinstance(spec, str) and spec.strip() for spec in specs)
    ):
        raise ModelsFileError(f"{where}: give space = \"SPEC\" or spaces = [\"SPEC\", ...]")
    key = table.get("key")
    if key is not None and (not isinstance(key, str) or not _VARIABLE.fullmatch(key)):
        raise ModelsFileError(f"{where}: key is the name of the variable holding the key")
    shape = table.get("shape")
    if shape is not None and shape not in _SHAPES:
        raise ModelsFileError(f"{where}: shape is one of {', '.join(_SHAPES)}, not {shape!r}")
    sampling = {}
    for option, low, high, integer in SAMPLING:
        value = table.get(option)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high
        ) or (integer and not isinstance(value, int)):
            raise ModelsFileError(f"{where}: {option} must be a number from {low} to {high}")
        sampling[option] = value
    return ModelEntry(name, tuple(_keyed(s.strip(), key) for s in specs), shape, sampling)


def _keyed(spec: str, key: str | None) -> str:
    """An endpoint's spec with ``&key=VAR`` from the entry's ``key`` (unless it names one)."""
    if key is None or not is_endpoint(spec) or "&key=" in spec:
        return spec
    return f"{spec}&key={key}"


def resolve(
    specs: Sequence[str], models: Mapping[str, ModelEntry]
) -> list[tuple[str | None, str, ModelEntry | None]]:
    """``specs`` (each maybe comma-separated) as (NAME, SPEC, the file's entry it came from):
    a bare model NAME of ``models`` stands for each of its specs, under its name; ``NAME=OTHER``
    where OTHER is a model of the file takes that model's specs (and settings) under NAME.
    Anything else stays as given, with no entry."""
    out: list[tuple[str | None, str, ModelEntry | None]] = []
    for given in specs:
        for part in given.split(","):
            name, rest = split_name(part)
            if not rest:
                continue
            entry = models.get(rest)
            if entry is None:
                out.append((name, rest, None))
            else:
                out += [(name or entry.name, each, entry) for each in entry.specs]
    return out


def expand(specs: Sequence[str], models: Mapping[str, ModelEntry]) -> list[str]:
    """:func:`resolve`'s specs written back as ``NAME=SPEC`` (or ``SPEC`` without a name)."""
    return [spec if name is None else f"{name}={spec}" for name, spec, _ in resolve(specs, models)]
