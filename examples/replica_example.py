"""Test your own code offline: start the replica, point a Session at it, inspect its log."""

import anyio

from qvq_gradio import Session
from qvq_gradio.replica import Replica, ReplicaConfig


async def ask(url: str) -> str:
    async with Session(url) as session:
        return await session.ask("hello [[replica tokens=5 delay=0]]")


with Replica(ReplicaConfig(tokens=50, delay=0.01)) as replica:  # a free port on 127.0.0.1
    print(anyio.run(ask, replica.url))
    record = replica.wait_ended("hello")  # blocks until that request ended: no sleeps
    print(record["state"], record["tokens_generated"])  # done 5
