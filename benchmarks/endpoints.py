"""An OpenAI-compatible endpoint asked three ways, side by side: ours (``Session`` on an
``openai+`` spec), the ``openai`` SDK's ``AsyncOpenAI`` streaming, and a bare httpx SSE reader
(the floor). The endpoint is a small stand-in (Starlette + uvicorn, its own process) streaming
the same answer to every request: 50 chunks of thinking, then 50 of answer, 10 ms apart. The
floor reads each chunk's JSON (the least any client does to get the text).

Each burst (N streams at once) runs in a fresh process; the sides alternate within each round,
their order rotating; history and cache are off.

    python benchmarks/bench.py endpoints --rounds 5
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

SIDES = ("ours", "sdk", "httpx")
CHUNKS = 100


def server(port: int) -> None:
    """The stand-in endpoint (run in its own process)."""
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()

        async def chunks() -> Any:
            for i in range(CHUNKS):
                field = "reasoning_content" if i < CHUNKS // 2 else "content"
                chunk = {"id": "c", "object": "chat.completion.chunk", "model": body["model"],
                         "choices": [{"index": 0, "delta": {field: f"w{i} "},
                                      "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
                await asyncio.sleep(0.01)
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def child(side: str, base: str, streams: int) -> None:
    """One burst of ``streams`` questions (a fresh process); prints JSON."""
    import anyio

    async def ours() -> tuple[float, float, float]:
        from qvq_gradio import ReasoningDelta, Session, TextDelta

        async with Session(f"openai+{base}#m") as session:
            async def ask() -> float | None:
                start, first = time.perf_counter(), None
                async for event in session.events("q"):
                    if first is None and isinstance(event, (ReasoningDelta, TextDelta)):
                        first = time.perf_counter() - start
                return first

            return await _timed(ask)

    async def sdk() -> tuple[float, float, float]:
        from openai import AsyncOpenAI

        async with AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as client:
            async def ask() -> float | None:
                start, first = time.perf_counter(), None
                stream = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "q"}], stream=True
                )
                async for chunk in stream:
                    delta = chunk.choices[0].delta if chunk.choices else None
                    extra = (delta.model_extra or {}) if delta is not None else {}
                    if first is None and delta is not None and (
                        delta.content or extra.get("reasoning_content")
                    ):
                        first = time.perf_counter() - start
                return first

            return await _timed(ask)

    async def floor() -> tuple[float, float, float]:
        import httpx

        async with httpx.AsyncClient(timeout=60) as client:
            async def ask() -> float | None:
                start, first = time.perf_counter(), None
                async with client.stream(
                    "POST", f"{base}/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "q"}],
                          "stream": True},
                ) as response:
                    async for line in response.aiter_lines():  # each chunk read, as needed
                        if not line.startswith("data: {"):
                            continue
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        if first is None and (delta.get("content") or delta.get(
                            "reasoning_content"
                        )):
                            first = time.perf_counter() - start
                return first

            return await _timed(ask)

    async def _timed(ask: Any) -> tuple[float, float, float]:
        """One warm-up question, then ``streams`` at once: CPU, wall, median first token."""
        await ask()
        firsts: list[float] = []

        async def one() -> None:
            firsts.append(await ask() or 0.0)

        cpu, wall = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tasks:
            for _ in range(streams):
                tasks.start_soon(one)
        return time.process_time() - cpu, time.perf_counter() - wall, statistics.median(firsts)

    run = {"ours": ours, "sdk": sdk, "httpx": floor}[side]
    cpu, wall, ttft = anyio.run(run)
    print(json.dumps({"cpu": cpu, "wall": wall, "ttft": ttft}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_endpoints(rounds: int, sizes: tuple[int, ...] = (1, 32)) -> Any:
    port = _free_port()
    env = {**os.environ, "QVQ_HISTORY": "0"}
    stand_in = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_server", str(port)],
                                env=env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        results: dict[str, Any] = {}
        for streams in sizes:
            seen: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
            for number in range(rounds):
                for side in SIDES[number % 3 :] + SIDES[: number % 3]:
                    done = subprocess.run(
                        [sys.executable, os.path.abspath(__file__), "_child", side, base,
                         str(streams)],
                        capture_output=True, text=True, check=True, env=env,
                    )
                    seen[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
            row = {side: {k: statistics.median(b[k] for b in seen[side])
                          for k in ("cpu", "wall", "ttft")} for side in SIDES}
            # Each round's sides ran one after another: a ratio within a round is not moved by
            # the machine's pace drifting between rounds. Reported: the median of those.
            def paired(side: str, other: str, key: str = "cpu", seen: Any = seen) -> float:
                return statistics.median(a[key] / b[key] for a, b in zip(seen[side], seen[other],
                                                                         strict=True))

            def ttft(side: str, seen: Any = seen) -> float:
                return statistics.median(a["ttft"] - b["ttft"] for a, b in zip(
                    seen[side], seen["sdk"], strict=True))

            results[str(streams)] = row
            print(f"\n{streams} stream(s) x {CHUNKS} chunks x 10 ms, {rounds} rounds (medians; "
                  "ratios and differences paired within each round):")
            for side in SIDES:
                one = row[side]
                print(f"  {side:6} CPU {one['cpu']:.3f} s ({paired(side, 'sdk'):.2f}x "
                      f"the SDK, {paired(side, 'httpx'):.2f}x httpx)  wall "
                      f"{one['wall']:.2f} s  first token {one['ttft'] * 1000:.1f} ms "
                      f"({ttft(side) * 1000:+.1f} ms vs the SDK)")
        return results
    finally:
        stand_in.terminate()
        stand_in.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_server"]:
        server(int(sys.argv[2]))
    elif sys.argv[1:2] == ["_child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        bench_endpoints(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
