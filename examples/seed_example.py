"""The seed's example, as written there; only the import path is adapted.

Runs against the real Space by default; point it at the bundled replica with QVQ_SPACE:

    qvq replica --port 7860 &
    QVQ_SPACE=http://127.0.0.1:7860 python examples/seed_example.py
"""

import asyncio

from qvq_gradio import Messages, Qwen_QVQ_72B

provider = Qwen_QVQ_72B()
messages = Messages([{"role": "user", "content": "Привет! Как дела?"}])


async def main():
    async for response in provider.create_async_generator(
        model="qwen-qvq-72b-preview", messages=messages
    ):
        print(f"Model: {response}")


asyncio.run(main())
