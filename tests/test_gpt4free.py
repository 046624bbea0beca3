"""gpt4free's clients stream QVQ answers through our wrapper (real g4f, against the replica)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from qvq_gradio.replica import ReplicaProcess

from .conftest import replica_env
from .test_stream import expected_text

SCRIPT = Path(__file__).parent / "scripts" / "g4f_check.py"


def test_g4f_clients_stream_through_qvq_gradio(replica: ReplicaProcess, marker: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), marker],
        capture_output=True,
        text=True,
        env={**replica_env(), "QVQ_SPACE": replica.url},
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    prompt = f"{marker}-async [[replica tokens=20 delay=0.02]]"
    assert len(result["async_chunks"]) > 1
    assert "".join(result["async_chunks"]) == expected_text(prompt, 20)
    assert result["sync_text"].endswith("\\boxed{3}")
    record = replica.wait_ended(f"{marker}-sync")
    assert (record["image"]["width"], record["image"]["height"]) == (64, 32)  # the image arrived


def test_provider_is_built_on_g4f_base_classes() -> None:
    code = (
        "from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin\n"
        "from qvq_gradio.gpt4free import Qwen_QVQ_72B as P\n"
        "assert issubclass(P, AsyncGeneratorProvider) and issubclass(P, ProviderModelMixin)\n"
        "assert P.get_model('qvq-72b') == 'qwen-qvq-72b-preview'\n"
        "print(P.label)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Qwen QVQ-72B"


def test_without_g4f_the_import_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['g4f'] = None\n"  # as if g4f were not installed
        "import qvq_gradio.gpt4free\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "needs the 'g4f' extra: pip install 'qvq-gradio[g4f]'" in done.stderr


def test_g4f_gets_a_chat_spaces_thinking_as_its_reasoning_chunks(
    start_replica: Any, marker: str
) -> None:
    chat = start_replica("--shape", "chat", "--think", "tags")
    code = (
        "import asyncio, json, sys\n"
        "from g4f.client import AsyncClient\n"
        "from qvq_gradio.gpt4free import Qwen_QVQ_72B\n"
        "async def main():\n"
        "    client = AsyncClient(provider=Qwen_QVQ_72B)\n"
        "    stream = client.chat.completions.create(model='qvq-72b', stream=True,\n"
        "        messages=[{'role': 'user', 'content': sys.argv[1]}])\n"
        "    content, reasoning = [], []\n"
        "    async for chunk in stream:\n"
        "        delta = chunk.choices[0].delta if chunk.choices else None\n"
        "        content.append(getattr(delta, 'content', None) or '')\n"
        "        reasoning.append(getattr(delta, 'reasoning', None) or '')\n"
        "    print(json.dumps({'content': ''.join(content), 'reasoning': ''.join(reasoning)}))\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, f"{marker} [[replica tokens=3 delay=0]]"],
        capture_output=True, text=True, env={**replica_env(), "QVQ_SPACE": chat.url},
        timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["content"] == "\\boxed{3}"
    thinking = result["reasoning"]
    assert thinking.startswith("Received prompt") and "Let me look" in thinking
