"""``qvq serve`` vs the same questions through ``Session`` directly, side by side.

    python benchmarks/bench.py serve   # 1, 32 and 128 streams x 100 tokens x 10 ms

The server runs in its own process (``qvq serve --no-history`` over the replica); its CPU is
read from that process, the direct side's from this one. The client of the server is one
``httpx.AsyncClient`` reading the SSE chunks (its own CPU is not counted). Medians over rounds,
the sides alternating.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx
import psutil
from floor import ours_stream

from qvq_gradio import Session
from qvq_gradio.pytest_plugin import ServeProcess, replica_environment

_PROMPT = "[[replica tokens=100 delay=0.01]] serve"


async def _direct(session: Session) -> float:
    _, first = await ours_stream(session, _PROMPT)
    return first or 0.0


async def _served(http: httpx.AsyncClient, base: str) -> float:
    start = time.perf_counter()
    first = None
    body = {"model": "qwen-qvq-72b-preview", "stream": True,
            "messages": [{"role": "user", "content": _PROMPT}]}
    async with http.stream("POST", f"{base}/chat/completions", json=body) as response:
        # The chunks are parsed until the first text; the rest is read as bytes, as cheaply as
        # a client can (on two cores the client's CPU competes with the server's).
        seen = b""
        async for chunk in response.aiter_raw():
            if first is not None:
                continue
            seen += chunk
            for line in seen.split(b"\n\n")[:-1]:
                if line.startswith(b"data: {"):
                    delta = json.loads(line[6:])["choices"]
                    if delta and (delta[0]["delta"].get("content")
                                  or delta[0]["delta"].get("reasoning_content")):
                        first = time.perf_counter() - start
                        break
    return first or 0.0


async def _burst(side: str, n: int, session: Session, http: httpx.AsyncClient, base: str,
                 server: psutil.Process) -> dict[str, float]:
    def cpu() -> float:
        if side == "direct":
            return time.process_time()
        times = server.cpu_times()
        return float(times.user + times.system)

    before, wall = cpu(), time.perf_counter()
    if side == "direct":
        firsts = await asyncio.gather(*[_direct(session) for _ in range(n)])
    else:
        firsts = await asyncio.gather(*[_served(http, base) for _ in range(n)])
    return {"wall_s": time.perf_counter() - wall, "cpu_s": cpu() - before,
            "ttft_ms": statistics.median(firsts) * 1000}


def bench_serve(url: str, rounds: int, sizes: tuple[int, ...] = (1, 32, 128)) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    served = ServeProcess(url, ("--no-history", "--max-running", "256"), replica_environment())
    try:
        server = psutil.Process(served.process.pid)

        async def run() -> None:
            limits = httpx.Limits(max_connections=None, keepalive_expiry=1.0)
            async with (
                httpx.AsyncClient(timeout=120, limits=limits) as http,
                Session(url, max_workers=max(sizes)) as session,
            ):
                for n in sizes:
                    samples: dict[str, list[dict[str, float]]] = {"direct": [], "served": []}
                    for side in samples:  # warm-up
                        await _burst(side, min(n, 8), session, http, served.base_url, server)
                    for i in range(rounds):
                        for side in (("direct", "served") if i % 2 == 0
                                     else ("served", "direct")):
                            samples[side].append(await _burst(
                                side, n, session, http, served.base_url, server))
                    figures[str(n)] = {
                        side: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
                        for side, runs in samples.items()
                    }

        asyncio.run(run())
    finally:
        served.stop()
    for n, sides in figures.items():
        direct, via = sides["direct"], sides["served"]
        print(f"(s) {n} stream(s) x 100 tokens x 10 ms, median of {rounds} rounds")
        for side, f in sides.items():
            print(f"    {side:8} wall {f['wall_s']:7.3f}s  CPU {f['cpu_s']:6.2f}s "
                  f"({f['cpu_s'] / int(n) * 1000:6.1f} ms/stream)  TTFT {f['ttft_ms']:7.1f} ms")
        print(f"    served / direct: wall {via['wall_s'] / direct['wall_s']:.3f}x, "
              f"TTFT {via['ttft_ms'] - direct['ttft_ms']:+.1f} ms")
    return figures
