"""The blocking API: plain scripts, inside a running loop, cancellation, twin signatures."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
import typing
from collections.abc import Callable
from typing import Any

import pytest
from typing_extensions import Unpack

import qvq_gradio
from qvq_gradio import Finished, Session, SyncSession, TextDelta
from qvq_gradio.answer import extract_final_answer, split_reasoning
from qvq_gradio.replica import ReplicaProcess

from .conftest import replica_env
from .test_stream import expected_text


def test_ask_and_stream_in_plain_code(
    replica: ReplicaProcess, marker: str, no_blocking: Any
) -> None:
    # Under the guard: the portal thread runs an event loop, and our code there must not block.
    prompt = f"{marker} [[replica tokens=12 delay=0.01]]"
    assert qvq_gradio.ask(prompt, space=replica.url) == expected_text(prompt, 12)
    deltas = list(qvq_gradio.stream(prompt, space=replica.url))
    assert len(deltas) > 1
    assert "".join(deltas) == expected_text(prompt, 12)


def test_works_inside_a_running_event_loop(replica: ReplicaProcess, marker: str) -> None:
    # What a Jupyter cell is: synchronous code called while the kernel's loop is running.
    prompt = f"{marker} [[replica tokens=5 delay=0]]"

    async def cell() -> tuple[str, list[str]]:
        return qvq_gradio.ask(prompt, space=replica.url), list(
            qvq_gradio.stream(prompt, space=replica.url)
        )

    text, deltas = asyncio.run(cell())
    assert text == "".join(deltas) == expected_text(prompt, 5)


def test_break_cancels_upstream(replica: ReplicaProcess, marker: str) -> None:
    for i, _ in enumerate(
        qvq_gradio.stream(f"{marker} [[replica tokens=2000 delay=0.01]]", space=replica.url)
    ):
        if i == 2:
            break
    record = replica.wait_ended(marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] < 2000


def test_sync_session(replica: ReplicaProcess, marker: str) -> None:
    with SyncSession(replica.url, idle_timeout=30) as session:
        events = list(session.events(f"{marker} [[replica tokens=3 delay=0]]"))
        assert any(isinstance(event, TextDelta) for event in events)
        assert isinstance(events[-1], Finished)
        assert session.ask(f"{marker}-2 [[replica tokens=1 delay=0]]").endswith("\\boxed{1}")
    with pytest.raises(RuntimeError, match="closed"):
        session.ask("again")


def test_errors_surface_in_the_callers_thread(replica: ReplicaProcess, marker: str) -> None:
    with pytest.raises(qvq_gradio.AppError, match="failing before"):
        qvq_gradio.ask(f"{marker} [[replica fail=before]]", space=replica.url)
    with pytest.raises(qvq_gradio.MessagesError):
        qvq_gradio.ask([], space=replica.url)  # raised before anything is sent


def test_ctrl_c_in_a_sync_stream_cancels_upstream(replica: ReplicaProcess, marker: str) -> None:
    # The child starts as a process started from a terminal would: SIGINT at its default and
    # not blocked. It inherits an ignored SIGINT from a test run started in the background by
    # a non-interactive shell (bash has such jobs ignore SIGINT, and Python then keeps it
    # ignored): the child ran to the end, exit 0. What it inherited goes to stderr.
    script = textwrap.dedent(f"""
        import os, signal, sys
        print("inherited:", signal.getsignal(signal.SIGINT),
              signal.pthread_sigmask(signal.SIG_BLOCK, []), file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        import qvq_gradio
        try:
            for i, delta in enumerate(qvq_gradio.stream(
                "{marker} [[replica tokens=3000 delay=0.01]]", space="{replica.url}"
            )):
                if i == 3:
                    os.kill(os.getpid(), signal.SIGINT)   # what Ctrl-C does
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
        print("the stream ended without the interrupt", file=sys.stderr)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=replica_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    record = replica.wait_ended(marker)
    assert record["state"] == "cancelled" and record["cancel_requested"]  # a real cancel
    assert record["tokens_generated"] < 3000


# -- every surface takes the same per-call options -------------------------------------------------


def _params(
    func: Callable[..., Any], drop: tuple[str, ...] = ("self",)
) -> list[tuple[str, Any, Any]]:
    signature = inspect.signature(func)
    return [
        (p.name, p.kind, p.default) for p in signature.parameters.values() if p.name not in drop
    ]


def _surfaces() -> dict[str, Callable[..., Any]]:
    from qvq_gradio import Pool, notebook, sync

    surfaces: dict[str, Callable[..., Any]] = {}
    for name in ("events", "stream", "ask"):
        for owner in (Session, Pool, SyncSession, sync):
            surfaces[f"{getattr(owner, '__name__', owner)}.{name}"] = getattr(owner, name)
    surfaces["notebook.show"] = notebook.show
    surfaces["notebook.ashow"] = notebook.ashow
    return surfaces


@pytest.mark.parametrize("name", sorted(_surfaces()))
def test_every_surface_takes_the_one_options_type(name: str) -> None:
    from qvq_gradio.options import ASK_OPTIONS, AskOptions

    func = _surfaces()[name]
    options = inspect.signature(func).parameters["options"]
    assert options.kind is inspect.Parameter.VAR_KEYWORD
    hint = typing.get_type_hints(func, include_extras=True)["options"]
    assert hint == Unpack[AskOptions]
    # No surface spells an option out again beside **options.
    assert not set(inspect.signature(func).parameters) & set(ASK_OPTIONS)
    assert ASK_OPTIONS == (
        "media", "idle_timeout", "total_timeout", "connect_timeout", "image_options",
        "temperature", "max_tokens", "top_p",
    )


_BLOCKING = {
    "SyncSession.ask": lambda **o: SyncSession("http://127.0.0.1:9").ask("hi", **o),
    "sync.ask": lambda **o: qvq_gradio.ask("hi", space="http://127.0.0.1:9", **o),
    "sync.stream": lambda **o: qvq_gradio.stream("hi", space="http://127.0.0.1:9", **o),
    "Session.events": lambda **o: Session("http://127.0.0.1:9").events("hi", **o),
    "Pool.events": lambda **o: qvq_gradio.Pool(
        ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    ).events("hi", **o),
    "notebook.show": lambda **o: _show("hi", space="http://127.0.0.1:9", **o),
}


def _show(*args: Any, **kwargs: Any) -> Any:
    from qvq_gradio import notebook

    return notebook.show(*args, **kwargs)


@pytest.mark.parametrize("name", sorted(_BLOCKING))
def test_every_surface_checks_the_options_before_sending(name: str) -> None:
    call = _BLOCKING[name]
    with pytest.raises(TypeError, match="unexpected keyword argument 'idle_timout'"):
        call(idle_timout=5)
    with pytest.raises(ValueError, match="idle_timeout must be a positive, finite number"):
        call(idle_timeout=-1)
    with pytest.raises(ValueError, match="total_timeout must be a positive, finite number"):
        call(total_timeout=0)


def test_sync_session_constructor_mirrors_session() -> None:
    assert _params(SyncSession.__init__) == _params(Session.__init__)


# -- the final answer -----------------------------------------------------------------------------

QVQ_STYLE = r"""So I have this problem here: the triangle has sides 3, 4 and 5. I need its area.

First, I recall that a 3-4-5 triangle is right-angled, because 3² + 4² = 9 + 16 = 25 = 5².
So the legs are 3 and 4. Wait, let me double-check that the hypotenuse is 5... yes.

The area of a right triangle is half the product of the legs: ½ × 3 × 4 = 6.

Hmm, let me verify with Heron's formula: s = (3+4+5)/2 = 6, area = √(6·3·2·1) = √36 = 6.

**Final Answer**

\[ \boxed{6} \]"""


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (QVQ_STYLE, "6"),
        ("Reasoning...\n\n**Final Answer:** The cat is on the mat.", "The cat is on the mat."),
        ("Reasoning...\n\n### Final Answer\n$$\\boxed{\\frac{1}{2}}$$", "\\frac{1}{2}"),
        ("Thinking, and \\boxed{wrong}... then\n\nFinal answer: \\boxed{B}", "B"),
        ("no heading but \\boxed{x^{2}+1} at the end", "x^{2}+1"),
        ("Final Answer\n\n\\[ 42 \\]", "42"),
        ("**final answer**\n\n\\boxed{\\text{{nested} braces}}", "\\text{{nested} braces}"),
        ("Just thinking out loud, nothing final.", None),
        ("", None),
    ],
)
def test_extract_final_answer(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


def test_split_reasoning() -> None:
    reasoning, final = split_reasoning(QVQ_STYLE)
    assert reasoning.endswith("= √36 = 6.")
    assert final == "\\[ \\boxed{6} \\]"
    assert split_reasoning("plain") == ("plain", None)
