"""Space shapes: a ChatInterface and Qwen's stateful Blocks demo asked through every surface,
against the replica standing in for each (``--shape chat`` / ``blocks``); thinking apart."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from PIL import Image

from qvq_gradio import (
    Finished,
    MediaError,
    ProtocolError,
    ReasoningDelta,
    Session,
    ShapeFound,
    TextDelta,
)
from qvq_gradio.history import History
from qvq_gradio.replica.host import HostedReplica
from qvq_gradio.thinking import Said, split_thinking

from .conftest import Served
from .test_cli import run

pytestmark = [pytest.mark.anyio, pytest.mark.adapter]

Start = Callable[..., HostedReplica]


async def _replica(start_replica: Start, *options: str) -> HostedReplica:
    return await anyio.to_thread.run_sync(lambda: start_replica(*options))


async def _events(session: Session, prompt: Any, **options: Any) -> list[Any]:
    return [event async for event in session.events(prompt, **options)]


def _request(replica: HostedReplica, marker: str) -> dict[str, Any]:
    found = [r for r in replica.requests() if marker in r["prompt"]]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def picture(tmp_path: Path) -> str:
    path = tmp_path / "red.png"
    Image.new("RGB", (64, 48), "red").save(path)
    return str(path)


# -- <think> tags, split as the text grows ----------------------------------------------------


def test_thinking_splits_as_the_text_grows() -> None:
    text = "<think>\nLet me see.\n</think>\n\nThe answer is 4."
    seen = [split_thinking(text[:i]) for i in range(len(text) + 1)]
    for before, after in itertools.pairwise(seen):  # each read grows the last
        assert after.reasoning.startswith(before.reasoning)
        assert after.text.startswith(before.text)
    assert seen[-1] == Said("Let me see.", "The answer is 4.")
    assert split_thinking("<thi") == Said()  # a tag split across reads is held back
    assert split_thinking("<thi", final=True) == Said(text="<thi")
    assert split_thinking("<think>still thinking</thi") == Said("still thinking")


def test_a_lone_closing_tag_and_a_literal_tag() -> None:
    assert split_thinking("I reckon.</think>Four.") == Said("I reckon.", "Four.")
    assert split_thinking("Four. Close it with `</think>`.", text_started=True) == Said(
        text="Four. Close it with `</think>`."
    )
    code = "Use this:\n```\n<think>x</think>\n```"
    assert split_thinking(code, text_started=True) == Said(text=code)


# -- a ChatInterface --------------------------------------------------------------------------


async def test_a_chat_space_gets_the_system_prompt_and_sampling_at_its_inputs(
    start_replica: Start, marker: str, picture: str
) -> None:
    replica = await _replica(start_replica, "--shape", "chat")
    messages = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": f"{marker} [[replica tokens=3 delay=0]]"},
    ]
    async with Session(replica.url) as session:
        events = await _events(session, messages, image=picture, temperature=0.2, top_p=0.9)
    found = events[0]
    assert isinstance(found, ShapeFound) and (found.space, found.shape) == (replica.url, "chat")
    assert found.app  # which build of the app answered
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.shape == "chat"
    # The Space has a system prompt and a temperature input, no top_p one: not sent.
    assert dict(finished.applied) == {"system": "Answer in French.", "temperature": 0.2}
    request = _request(replica, marker)
    assert request["params"] == {
        "system": "Answer in French.", "temperature": 0.2, "max_tokens": 1024, "history": 0
    }
    # The message is the user's alone (the system prompt went to its input), the image a file.
    assert request["prompt"] == f"{marker} [[replica tokens=3 delay=0]]"
    assert [(i["width"], i["height"]) for i in request["images"]] == [(64, 48)]
    assert finished.text == "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("think", ["tags", "title"])
async def test_a_chat_spaces_thinking_comes_apart(
    start_replica: Start, marker: str, think: str
) -> None:
    replica = await _replica(start_replica, "--shape", "chat", "--think", think)
    prompt = f"{marker} [[replica tokens=4 delay=0]]"
    async with Session(replica.url) as session:
        events = await _events(session, prompt)
        answer = await session.ask(f"{prompt} again")
    thinking = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert thinking.startswith("Received prompt") and "Let me look at" in thinking
    assert text == "\\boxed{4}" == answer  # ask() and stream() give the answer's text
    finished = events[-1]
    assert (finished.reasoning, finished.text) == (thinking, text)


async def test_earlier_turns_are_flattened_where_the_chat_hides_its_history(
    start_replica: Start, marker: str
) -> None:
    replica = await _replica(start_replica, "--shape", "chat")
    messages = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": f"{marker} And times 3? [[replica tokens=1 delay=0]]"},
    ]
    async with Session(replica.url) as session:
        await session.ask(messages)
    request = _request(replica, marker)
    assert request["prompt"] == (
        "User: What is 2 + 2?\nAssistant: 4\n"
        f"User: {marker} And times 3? [[replica tokens=1 delay=0]]\nAssistant:"
    )
    assert request["params"]["history"] == 0


async def test_shape_chooses_and_a_space_without_that_shape_is_refused_before_sending(
    start_replica: Start, marker: str
) -> None:
    replica = await _replica(start_replica, "--shape", "chat")
    async with Session(replica.url, shape="blocks") as session:
        with pytest.raises(ProtocolError, match=r"no blocks endpoint: its endpoints are .*/"):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
    async with Session(replica.url, shape="qvq") as session:
        with pytest.raises(ProtocolError, match="no qvq endpoint"):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]")
    assert not [r for r in replica.requests() if marker in r["prompt"]]


async def test_a_non_chat_space_is_refused_naming_its_endpoints(start_replica: Start) -> None:
    replica = await _replica(start_replica, "--layout", "text-only")
    async with Session(replica.url, shape="chat") as session:
        with pytest.raises(ProtocolError, match=r"no chat endpoint: its endpoints are /generate"):
            await session.describe_shape()


# -- Qwen's stateful Blocks demo ---------------------------------------------------------------


async def test_the_blocks_chain_asks_with_the_image_and_many_never_share_a_conversation(
    start_replica: Start, marker: str, picture: str
) -> None:
    replica = await _replica(start_replica, "--shape", "blocks")
    async with Session(replica.url) as session:
        assert (await session.describe_shape()).startswith("blocks: /add_file per image")
        async with anyio.create_task_group() as tasks:
            for i in range(4):
                tasks.start_soon(
                    session.ask, f"{marker}-{i} [[replica tokens=2 delay=0.02]]", picture
                )
        events = await _events(session, f"{marker}-x [[replica tokens=2 delay=0]]")
    for i in range(4):
        request = _request(replica, f"{marker}-{i}")
        # One Gradio session per question: its state holds its own image and text only.
        assert request["params"] == {"history": 2}
        assert request["prompt"] == f"{marker}-{i} [[replica tokens=2 delay=0.02]]"
        assert [(i["width"], i["height"]) for i in request["images"]] == [(64, 48)]
    assert _request(replica, f"{marker}-x")["images"] == []
    finished = events[-1]
    assert finished.shape == "blocks" and finished.text.startswith("Received prompt")


async def test_stopping_a_blocks_answer_cancels_it_on_the_space(
    start_replica: Start, marker: str
) -> None:
    replica = await _replica(start_replica, "--shape", "blocks")
    async with Session(replica.url) as session:
        stream = session.stream(f"{marker} [[replica tokens=500 delay=0.05]]")
        await stream.__anext__()
        await stream.aclose()
    record = await anyio.to_thread.run_sync(lambda: replica.wait_ended(marker))
    assert record["state"] == "cancelled" and record["tokens_generated"] < 500


async def test_a_text_only_chat_refuses_images_before_sending(
    start_replica: Start, marker: str, picture: str
) -> None:
    replica = await _replica(start_replica, "--shape", "chat", "--layout", "text-only")
    async with Session(replica.url) as session:
        with pytest.raises(MediaError, match="cannot be sent images"):
            await session.ask(f"{marker} [[replica tokens=1 delay=0]]", image=picture)
    assert not replica.requests()


# -- every surface ------------------------------------------------------------------------------


def test_serve_sends_a_chat_spaces_thinking_as_reasoning(
    start_replica: Start, served: Callable[..., Served], marker: str
) -> None:
    replica = start_replica("--shape", "chat", "--think", "tags")
    server = served(replica.url, "--no-history")
    inline = served(replica.url, "--no-history", "--reasoning", "inline")
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="qvq-72b",
            messages=[{"role": "user", "content": f"{marker} [[replica tokens=3]]"}],
        )
        message = reply.choices[0].message.model_dump()
        assert message["content"] == "\\boxed{3}"
        assert message["reasoning_content"].startswith("Received prompt")
        assert message["reasoning"] == message["reasoning_content"]
        stream = client.chat.completions.create(
            model="qvq-72b", stream=True,
            messages=[{"role": "user", "content": f"{marker}-s [[replica tokens=3]]"}],
        )
        deltas = [chunk.choices[0].delta.model_dump() for chunk in stream if chunk.choices]
    content = "".join(d.get("content") or "" for d in deltas)
    thinking = "".join(d.get("reasoning_content") or "" for d in deltas)
    assert content == "\\boxed{3}" and "Let me look" in thinking
    with openai.OpenAI(base_url=inline.base_url, api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model="qvq-72b",
            messages=[{"role": "user", "content": f"{marker}-i [[replica tokens=3]]"}],
        )
    text = reply.choices[0].message.content or ""
    assert text.startswith("<think>\nReceived prompt") and text.endswith("</think>\n\n\\boxed{3}")


def test_cli_ask_shows_the_thinking_then_the_answer(
    start_replica: Start, marker: str, tmp_path: Path
) -> None:
    replica = start_replica("--shape", "chat", "--think", "title")
    code, out, _ = run(
        ["ask", f"{marker} [[replica tokens=3 delay=0]]", "--space", replica.url, "--no-history"]
    )
    assert code == 0
    thinking, _, answer = out.rpartition("\n\n")
    assert thinking.startswith("Received prompt") and answer.strip() == "\\boxed{3}"
    code, out, _ = run(["ask", f"{marker}-j [[replica tokens=3 delay=0]]", "--space",
                        replica.url, "--no-history", "--json"])
    shown = json.loads(out)
    assert shown["text"] == "\\boxed{3}" and shown["reasoning"].startswith("Received prompt")
    assert shown["shape"] == "chat"
    code, out, _ = run(["info", "--space", replica.url])
    assert out.splitlines()[1].startswith("Shape: chat: /respond") or out.splitlines()[
        1
    ].startswith("Shape: chat: /chat")


async def test_history_keeps_the_thinking_and_the_cache_keys_on_the_parameters(
    start_replica: Start, marker: str, tmp_path: Path
) -> None:
    replica = await _replica(start_replica, "--shape", "chat", "--think", "tags")
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    with History(tmp_path / "history.db") as history:
        async with Session(replica.url, history=history, cache=True) as session:
            first = (await _events(session, prompt, temperature=0.0))[-1]
            again = (await _events(session, prompt, temperature=0.0))[-1]
            warmer = (await _events(session, prompt, temperature=1.0))[-1]
            plain = (await _events(session, prompt))[-1]
        rows = list(reversed(await anyio.to_thread.run_sync(history.search, marker)))
    assert (first.cached, again.cached, warmer.cached, plain.cached) == (
        False, True, False, False
    )
    assert (again.reasoning, again.text) == (first.reasoning, first.text)
    assert len([r for r in replica.requests() if marker in r["prompt"]]) == 3
    row = rows[0]
    assert row.shape == "chat" and row.applied == {"temperature": 0.0}
    assert row.reasoning == first.reasoning and row.text == "\\boxed{2}"


async def test_a_pool_of_two_shapes_fails_over_from_one_to_the_other(
    start_replica: Start, marker: str
) -> None:
    from qvq_gradio import Pool, SpaceChanged
    from qvq_gradio.upstreams.gradio import GradioUpstream

    qvq = await _replica(start_replica, "--fail", "quota")
    chat = await _replica(start_replica, "--shape", "chat", "--think", "tags")
    async with Pool([GradioUpstream(qvq.url), GradioUpstream(chat.url, shape="chat")]) as pool:
        events = await _events(pool, f"{marker} [[replica tokens=2 delay=0]]")
    moves = [e for e in events if isinstance(e, SpaceChanged)]
    assert [m.space for m in moves] == [qvq.url, chat.url]
    assert "QuotaExceededError" in (moves[1].reason or "")
    found = [e for e in events if isinstance(e, ShapeFound)][-1]
    assert (found.space, found.shape) == (chat.url, "chat")
    finished = events[-1]
    assert finished.space == chat.url and finished.text == "\\boxed{2}"


async def test_a_batch_records_the_thinking_and_the_shape(
    start_replica: Start, marker: str, tmp_path: Path
) -> None:
    from qvq_gradio import batch

    replica = await _replica(start_replica, "--shape", "chat", "--think", "tags")
    rows = [{"id": f"q{i}", "prompt": f"{marker}-{i} [[replica tokens=2 delay=0]]",
             "expected": "2"} for i in range(3)]
    async with Session(replica.url) as session:
        result = await batch.arun(rows, tmp_path / "out.jsonl", session=session)
    assert (result.summary.ok, result.summary.accuracy) == (3, 1.0)
    records = await anyio.to_thread.run_sync(list, result)
    for record in records:
        assert record["shape"] == "chat" and record["text"] == "\\boxed{2}"
        assert record["reasoning"].startswith("Received prompt")


def test_status_names_the_shape_of_each_space(start_replica: Start) -> None:
    chat = start_replica("--shape", "chat")
    other = start_replica("--layout", "text-only")
    code, out, _ = run(["status", "--space", chat.url, "--space", other.url])
    assert code == 0  # one of them can be asked
    first, second = out.split("\n\n")
    assert first.splitlines()[0] == f"Space: {chat.url}"
    assert first.splitlines()[1].startswith("Up:    Gradio ")
    assert first.splitlines()[2].startswith("Shape: chat: /")
    assert "max_tokens -> 'Max new tokens'" in first
    assert second.splitlines()[2].startswith("Shape: none (ProtocolError: The Space's /generate")
    code, out, err = run(["status", "--space", other.url])
    assert code == 3 and "no Space can be asked" in err


async def test_a_chat_that_takes_its_history_gets_the_earlier_turns_apart(
    start_replica: Start, marker: str
) -> None:
    replica = await _replica(start_replica, "--shape", "chat", "--layout", "history")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": f"{marker} And times 3? [[replica tokens=1 delay=0]]"},
    ]
    async with Session(replica.url) as session:
        assert "history apart" in await session.describe_shape()
        finished = (await _events(session, messages))[-1]
    request = _request(replica, marker)
    assert request["prompt"] == f"{marker} And times 3? [[replica tokens=1 delay=0]]"
    assert request["params"] == {
        "system": "Be brief.",
        "history": [["user", "What is 2 + 2?"], ["assistant", "4"]],
    }
    assert dict(finished.applied) == {"system": "Be brief."}


async def test_a_rebuilt_space_never_answers_from_a_stale_cache_entry(
    start_replica: Start, marker: str, tmp_path: Path
) -> None:
    first = await _replica(start_replica, "--shape", "chat")
    port = int(first.url.rsplit(":", 1)[1])
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    with History(tmp_path / "history.db") as history:
        async with Session(first.url, history=history, cache=True) as session:
            asked = (await _events(session, prompt))[-1]
            again = (await _events(session, prompt))[-1]
        assert (asked.cached, again.cached) == (False, True)
        await anyio.to_thread.run_sync(first.stop)
        # The same address, rebuilt (another app): asked, not answered from the history.
        rebuilt = await anyio.to_thread.run_sync(
            lambda: start_replica("--shape", "chat", "--think", "tags", port=port)
        )
        async with Session(rebuilt.url, history=history, cache=True) as session:
            fresh = (await _events(session, prompt))[-1]
        assert not fresh.cached and fresh.text == "\\boxed{2}"
        assert len([r for r in rebuilt.requests() if marker in r["prompt"]]) == 1
        await anyio.to_thread.run_sync(rebuilt.stop)
        # Nothing answers there now: the newest recorded answer is served.
        async with Session(rebuilt.url, history=history, cache=True,
                           connect_timeout=5) as session:
            offline = (await _events(session, prompt))[-1]
        assert offline.cached and offline.text == fresh.text


async def test_sampling_never_splits_the_cache_of_a_space_that_takes_none(
    replica: Any, marker: str, tmp_path: Path
) -> None:
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    with History(tmp_path / "history.db") as history:
        async with Session(replica.url, history=history, cache=True) as session:
            plain = (await _events(session, prompt))[-1]
            warm = (await _events(session, prompt, temperature=0.3))[-1]
            other = (await _events(session, f"{prompt} b", temperature=0.9))[-1]
            back = (await _events(session, f"{prompt} b"))[-1]
    # QVQ's Space has no temperature: the same request, whatever the sampling asked for.
    assert (plain.cached, warm.cached, other.cached, back.cached) == (False, True, False, True)
    assert dict(warm.applied) == {}


def test_serve_passes_sampling_to_a_chat_spaces_inputs(
    start_replica: Start, served: Callable[..., Served], marker: str
) -> None:
    replica = start_replica("--shape", "chat")
    server = served(replica.url, "--no-history")
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        client.chat.completions.create(
            model="qvq-72b", temperature=0.25, max_completion_tokens=77,
            messages=[{"role": "system", "content": "Terse."},
                      {"role": "user", "content": f"{marker} [[replica tokens=1]]"}],
        )
        with pytest.raises(openai.BadRequestError, match="temperature"):
            client.chat.completions.create(
                model="qvq-72b", temperature=-1,
                messages=[{"role": "user", "content": f"{marker}-bad"}],
            )
    params = _request(replica, marker)["params"]
    assert (params["temperature"], params["max_tokens"], params["system"]) == (0.25, 77, "Terse.")


async def test_a_repeated_request_hits_even_with_a_parameter_the_space_has_no_input_for(
    start_replica: Start, marker: str, tmp_path: Path
) -> None:
    replica = await _replica(start_replica, "--shape", "chat")
    prompt = f"{marker} [[replica tokens=2 delay=0]]"
    with History(tmp_path / "history.db") as history:
        async with Session(replica.url, history=history, cache=True) as session:
            first = (await _events(session, prompt, temperature=0.2, top_p=0.9))[-1]
            again = (await _events(session, prompt, temperature=0.2, top_p=0.9))[-1]
    assert dict(first.applied) == {"temperature": 0.2}  # the chat has no top_p input
    assert (first.cached, again.cached) == (False, True)


@pytest.mark.parametrize(("shape", "history"), [("chat", 0), ("blocks", 3)])
async def test_several_images_reach_a_chat_each_as_its_own_file(
    start_replica: Start, marker: str, tmp_path: Path, shape: str, history: int
) -> None:
    replica = await _replica(start_replica, "--shape", shape)
    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.new("RGB", (80, 40), "green").save(wide)
    Image.new("RGB", (30, 60), "blue").save(tall)
    async with Session(replica.url) as session:
        for n in (1, 2):  # the shape unknown, then known: each time as two files
            await session.ask(f"{marker}-{n} [[replica tokens=2 delay=0]]",
                              media=[str(wide), str(tall)])
            request = _request(replica, f"{marker}-{n}")
            sizes = [(i["width"], i["height"]) for i in request["images"]]
            assert sizes == [(80, 40), (30, 60)], n
            assert "grid" not in request["prompt"]
            assert request["params"].get("history", 0) == history  # blocks: a file, a file, text
