"""Run gpt4free's own clients over qvq_gradio.gpt4free (a separate process: g4f patches asyncio).

Prints one JSON object with what each client streamed.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys

from g4f.client import AsyncClient, Client
from PIL import Image

from qvq_gradio.gpt4free import Qwen_QVQ_72B

marker = sys.argv[1]
result: dict[str, object] = {}


async def async_client() -> None:
    client = AsyncClient(provider=Qwen_QVQ_72B)
    stream = client.chat.completions.create(
        model="qvq-72b",
        messages=[{"role": "user", "content": f"{marker}-async [[replica tokens=20 delay=0.02]]"}],
        stream=True,
    )
    chunks = [chunk.choices[0].delta.content async for chunk in stream]
    result["async_chunks"] = [c for c in chunks if c]


asyncio.run(async_client())

buffer = io.BytesIO()
Image.new("RGB", (64, 32), (255, 0, 0)).save(buffer, format="PNG")
client = Client(provider=Qwen_QVQ_72B)
response = client.chat.completions.create(
    model="qwen-qvq-72b-preview",
    messages=[{"role": "user", "content": f"{marker}-sync [[replica tokens=3 delay=0]]"}],
    image=buffer.getvalue(),
)
result["sync_text"] = response.choices[0].message.content
print(json.dumps(result))
