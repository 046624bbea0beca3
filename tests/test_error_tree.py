"""Every error class of the package survives copy, deepcopy and pickle, with all it carries.

Batch workers, multiprocessing and ``datasets.map(num_proc=...)`` pickle exceptions; the pool
copies the error of the Space that recovers first. The test walks the whole tree, so a class
added later is covered without being named here.
"""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import pytest

import qvq_gradio
import qvq_gradio.batch
from qvq_gradio import QVQError


def _tree(root: type[BaseException]) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    pending = [root]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: c.__qualname__)


# The extra arguments some classes require; every other class takes (message, *, text, space).
_REQUIRED: dict[str, dict[str, Any]] = {
    "SpaceUnavailableError": {"state": "PAUSED"},
    "QuotaExceededError": {"retry_after": 588.0},
    "HistoryError": {"path": "/home/me/.local/share/qvq-gradio/history.db"},
}


def _instance(cls: type[BaseException]) -> BaseException:
    if cls.__name__ == "UnknownModelError":
        return cls("gpt-5", ["qwen-qvq-72b-preview"])  # type: ignore[call-arg]
    parameters = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = dict(_REQUIRED.get(cls.__name__, {}))
    if "text" in parameters:
        kwargs["text"] = "the answer so far"
    if "space" in parameters:
        kwargs["space"] = "owner/space"
    return cls("something went wrong", **kwargs)


def test_the_tree_is_walked() -> None:
    names = {cls.__name__ for cls in _tree(QVQError)}
    assert {"SpaceUnavailableError", "QuotaExceededError", "BatchInputError"} <= names
    batch_errors = {"BatchInputError", "NotAnOutputError"}
    assert all(hasattr(qvq_gradio, name) for name in names - batch_errors)
    assert batch_errors <= names


@pytest.mark.parametrize("cls", _tree(QVQError), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_every_error_survives(cls: type[BaseException], clone: Any) -> None:
    error = _instance(cls)
    again = clone(error)
    assert type(again) is cls
    assert str(again) == str(error)
    assert again.args == error.args
    assert vars(again) == vars(error)
    if isinstance(error, qvq_gradio.ResponseError):
        assert isinstance(again, qvq_gradio.ResponseError)
        assert (again.text, again.space) == ("the answer so far", "owner/space")


def test_the_documented_policy_is_each_classs_own() -> None:
    """docs/errors.md's table says what each error means; the classes say the same."""
    import re
    from pathlib import Path

    import qvq_gradio.errors as errors

    page = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| `(\w+)` \| (\d+) \| (\d+) `(\w+)` \| (yes|no) \| (yes|no) \|$", page, re.M
    )
    assert len(rows) >= 15
    for name, code, status, api_code, transient, failover in rows:
        cls = getattr(errors, name)
        assert (cls.exit_code, cls.http_status, cls.api_code) == (int(code), int(status), api_code)
        assert (cls.transient, cls.failover) == (transient == "yes", failover == "yes"), name
