"""Fault figures: how long a caller waits when the network to the Space dies.

    python benchmarks/faults.py

Against the replica behind a TCP proxy (``tests/faults.py``) that freezes every connection
mid-answer and holds new ones unanswered (a network gone silent):

* error latency: from the freeze to the ``IdleTimeoutError`` (idle_timeout 5 s);
* time to close: ``Session.aclose()`` right after, while the dead connection is still open;
* interpreter exit: a child process that got the error and exits (the same frozen network);
* threads: qvq threads at the peak of a burst of 64 streams, and once their keepalive passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from qvq_gradio import IdleTimeoutError, Session, TextDelta
from qvq_gradio._threads import KEEPALIVE
from qvq_gradio.replica import ReplicaProcess
from tests.faults import FaultProxy

IDLE = 5.0


def _qvq_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("qvq-"))


async def frozen(url: str, port: int) -> tuple[float, float]:
    with FaultProxy(port) as proxy:
        session = Session(proxy.url, idle_timeout=IDLE)
        received = 0
        frozen_at = 0.0
        try:
            async for event in session.events("x [[replica tokens=5000 delay=0.01]]"):
                if isinstance(event, TextDelta):
                    received += len(event.text)
                    if received > 200 and not frozen_at:
                        proxy.freeze()
                        frozen_at = time.perf_counter()
        except IdleTimeoutError:
            error = time.perf_counter() - frozen_at
        start = time.perf_counter()
        await session.aclose()
        return error, time.perf_counter() - start


def exit_time(port: int) -> float:
    with FaultProxy(port) as proxy:
        code = textwrap.dedent(
            f"""
            import qvq_gradio
            try:
                for _ in qvq_gradio.stream("x [[replica tokens=5000 delay=0.01]]",
                                           space="{proxy.url}", idle_timeout={IDLE}):
                    print("TEXT", flush=True)
            except qvq_gradio.IdleTimeoutError:
                print("ERROR", flush=True)
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        proxy.freeze()
        for line in proc.stdout:
            if line.startswith("ERROR"):
                break
        start = time.perf_counter()
        proc.wait()
        return time.perf_counter() - start


async def burst(url: str) -> tuple[int, int, float]:
    async with Session(url) as session:
        peak = 0

        async def one(i: int) -> None:
            nonlocal peak
            async for _ in session.stream(f"{i} [[replica tokens=50 delay=0.01]]"):
                peak = max(peak, _qvq_threads())

        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(one, i)
        start = time.perf_counter()
        while _qvq_threads() > 2 and time.perf_counter() - start < 60:  # noqa: ASYNC110
            await anyio.sleep(0.1)
        return peak, _qvq_threads(), time.perf_counter() - start


def main() -> None:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with ReplicaProcess(["--concurrency", "64"], env=env) as replica:
        port = int(replica.url.rsplit(":", 1)[1])
        error, close = anyio.run(frozen, replica.url, port)
        print(f"frozen connection: IdleTimeoutError {error:.2f} s after the freeze "
              f"(idle_timeout {IDLE:g} s); Session.aclose() {close:.2f} s")
        print(f"interpreter exit after the error, network still frozen: {exit_time(port):.2f} s")
        peak, after, waited = anyio.run(burst, replica.url)
        print(f"64-stream burst: {peak} qvq threads at the peak, {after} "
              f"{waited:.1f} s after it (keepalive {KEEPALIVE:g} s)")


if __name__ == "__main__":
    main()
