"""Ask questions on loops that end in every way a user's do, then report what was left behind.

A separate process, so that the garbage collector and the warnings filter are this script's
alone. Prints one JSON object: the errors raised where nobody could catch them (an unclosed
socket or transport is a ResourceWarning, an error here), and this process's connections to
the Space still open after the loops had ended and after every session was closed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import warnings
from typing import Any

import psutil
import trio

from qvq_gradio import Session, SyncSession

url, port = sys.argv[1], int(sys.argv[2])
PROMPT = "pools [[replica tokens=3 delay=0]]"
raised: list[str] = []


def unraisable(info: Any) -> None:
    raised.append(f"{info.exc_type.__name__}: {info.exc_value}")


sys.unraisablehook = unraisable
warnings.simplefilter("error", ResourceWarning)


def open_to_space() -> int:
    gc.collect()
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
    )


async def closed_on_its_loop() -> str:
    async with Session(url) as session:
        return await session.ask(PROMPT)


# One session on loops that end while it stays open: asyncio.run twice (as gpt4free calls on a
# session it shares do), then trio.
shared = Session(url)
answers: list[str] = []
after_each_loop: list[int] = []
for run in (asyncio.run, asyncio.run, trio.run):
    answers.append(run(shared.ask, PROMPT) if run is trio.run else run(shared.ask(PROMPT)))
    after_each_loop.append(open_to_space())
shared.close()
# The sync API: its loop runs on a thread of its own; the session is closed from this one.
with SyncSession(url) as sync:
    answers.append(sync.ask(PROMPT))
# Closed on its own loop.
answers.append(asyncio.run(closed_on_its_loop()))
# Every session is closed: their connections close now, or within moments (a thread's).
deadline = time.monotonic() + 30
while (at_end := open_to_space()) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"answers": answers, "raised": raised, "after_each_loop": after_each_loop,
                  "at_end": at_end}))
