"""The OpenAI clients researchers use, run against ``qvq serve`` over the replica Space.

    python -m pip install -e '.[serve,replica]' openai langchain-openai
    python examples/serve_clients.py

Each client asks one question about an image (a data URI), once whole and once streamed, with
the settings the README gives for it, and this prints what each one read. A client that is not
installed is skipped (and said so). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from PIL import Image

from qvq_gradio.replica import ReplicaProcess

MODEL = "qwen-qvq-72b-preview"
QUESTION = "What shapes are in this picture? [[replica tokens=12 delay=0]]"


def image_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_sdk(base_url: str) -> None:
    from openai import OpenAI

    with OpenAI(base_url=base_url, api_key="x") as client:
        messages: Any = [{"role": "user", "content": [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": image_uri(), "detail": "low"}},
        ]}]
        done = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1024)
        message = done.choices[0].message
        print(f"  content: {message.content!r}")
        reasoning = message.model_extra["reasoning_content"]
        print(f"  reasoning_content ({len(reasoning)} characters), its second line (the replica "
              f"describes the image it received): {reasoning.splitlines()[1]!r}")
        print(f"  finish_reason: {done.choices[0].finish_reason}; usage: {done.usage}")
        stream = client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        content = reasoning = ""
        for chunk in stream:
            if chunk.choices:
                delta = chunk.choices[0].delta
                content += delta.content or ""
                reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            elif chunk.usage is not None:
                print(f"  streamed usage: {chunk.usage.total_tokens} tokens")
        print(f"  streamed: content {content!r}, reasoning {len(reasoning)} characters")


def langchain(base_url: str) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=base_url, api_key="x", model=MODEL, max_retries=2)
    message = HumanMessage(content=[
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": image_uri()}},
    ])
    reply = chat.invoke([message])
    extra = sorted(reply.additional_kwargs)
    print(f"  invoke: content {reply.content!r}; additional_kwargs: {extra}")
    print(f"  response_metadata finish_reason: {reply.response_metadata.get('finish_reason')}")
    streamed = "".join(str(chunk.content) for chunk in chat.stream([message]))
    print(f"  stream: content {streamed!r}")


def lmms_eval(base_url: str) -> None:
    """lmms-eval's ``openai`` model (``--model openai --model_args
    model_version=...,base_url=...``), both its chat and its simple form, asked what a task
    would ask: a question and an image, its own generation defaults."""
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    picture = Image.new("RGB", (64, 48), (200, 40, 40))
    doc = {"question": QUESTION, "image": picture}
    task = {"check": {"test": [doc]}}

    def doc_to_messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image", "url": doc["image"]},
                                             {"type": "text", "text": doc["question"]}]}]

    for simple in (False, True):
        model = get_model("openai", force_simple=simple)(
            model_version=MODEL, base_url=base_url, api_key="x", num_concurrent=2
        )
        model.task_dict = task
        if simple:
            args: tuple[Any, ...] = (QUESTION, {"max_new_tokens": 1024}, lambda d: [d["image"]],
                                     0, "check", "test")
        else:
            args = (QUESTION, doc_to_messages, {"max_new_tokens": 1024}, 0, "check", "test")
        request = Instance("generate_until", args, idx=0,
                           metadata={"task": "check", "doc_id": 0, "repeats": 1})
        result = model.generate_until([request])[0]
        text = getattr(result, "text", result)
        print(f"  {'simple' if simple else 'chat'} model: {text!r}")


CLIENTS: dict[str, tuple[str, Callable[[str], None]]] = {
    "openai SDK": ("openai", openai_sdk),
    "LangChain ChatOpenAI": ("langchain_openai", langchain),
    "lmms-eval openai model": ("lmms_eval", lmms_eval),
}


@contextlib.contextmanager
def qvq_serve(space: str) -> Iterator[str]:
    """``qvq serve --space SPACE`` on a free port, as a user runs it; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "qvq_gradio", "serve", "--space", space,
                               "--port", str(port), "--no-history"])
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{base_url}/models").raise_for_status()
                break
            time.sleep(0.1)
        yield base_url
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    with ReplicaProcess(["--tokens", "12"]) as replica, qvq_serve(replica.url) as base_url:
        print(f"qvq serve at {base_url} over the replica at {replica.url}")
        for name, (module, run) in CLIENTS.items():
            if importlib.util.find_spec(module) is None:
                print(f"{name}: not installed, skipped")
                continue
            print(f"{name}:")
            before = len(replica.requests())
            run(base_url)
            images = [record["image"] for record in replica.requests()[before:]]
            print(f"  the replica received {len(images)} questions, with the image in each: "
                  f"{all(images)} ({images[0]})")


if __name__ == "__main__":
    main()
