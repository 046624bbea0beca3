"""A question to each Space shape, side by side: QVQ's /generate, a ChatInterface, Qwen's
stateful Blocks demo — the same answer (100 words, 10 ms apart) from replicas served alike.

Each burst runs in a fresh process (one `Session`, connected by a warm-up question first) and
reports the client's CPU seconds, the wall time and the median time to first token (and the
replica's CPU for the burst, read from /proc); the shapes alternate within each round, their
order rotating from round to round.

    python benchmarks/bench.py shapes --rounds 5
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qvq_gradio.replica import ReplicaProcess

SHAPES = ("qvq", "chat", "blocks")


def child(url: str, streams: int, tokens: int) -> None:
    """One burst of ``streams`` questions at once (run in a fresh process); prints JSON."""
    import anyio

    from qvq_gradio import ReasoningDelta, Session, TextDelta

    async def main() -> dict[str, Any]:
        firsts: list[float] = []
        async with Session(url) as session:
            await session.ask("warm-up [[replica tokens=1 delay=0]]")

            async def one(i: int) -> None:
                start = time.perf_counter()
                first = None
                async for event in session.events(f"q{i} [[replica tokens={tokens} delay=0.01]]"):
                    if first is None and isinstance(event, (TextDelta, ReasoningDelta)):
                        first = time.perf_counter() - start
                firsts.append(first if first is not None else float("nan"))

            cpu, wall = time.process_time(), time.perf_counter()
            async with anyio.create_task_group() as tasks:
                for i in range(streams):
                    tasks.start_soon(one, i)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu": cpu, "wall": wall, "ttft": statistics.median(firsts)}

    print(json.dumps(anyio.run(main)))


def _cpu_of(pid: int | None) -> float:
    """A process's CPU seconds so far (Linux), 0.0 when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _burst(url: str, streams: int, tokens: int, pid: int | None) -> dict[str, float]:
    before = _cpu_of(pid)
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "_child", url, str(streams), str(tokens)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    figures = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    figures["space"] = _cpu_of(pid) - before  # the replica's CPU for the burst (and warm-up)
    return figures


def bench_shapes(rounds: int, sizes: tuple[int, ...] = (1, 32), tokens: int = 100) -> Any:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    replicas = {
        shape: ReplicaProcess(["--concurrency", "64", "--shape", shape], env=env).start()
        for shape in SHAPES
    }
    results: dict[str, Any] = {}
    try:
        for streams in sizes:
            seen: dict[str, list[dict[str, float]]] = {shape: [] for shape in SHAPES}
            for number in range(rounds):
                order = SHAPES[number % 3 :] + SHAPES[: number % 3]
                for shape in order:
                    replica = replicas[shape]
                    seen[shape].append(_burst(replica.url, streams, tokens, replica.pid))
            row: dict[str, Any] = {}
            for shape in SHAPES:
                row[shape] = {k: statistics.median(b[k] for b in seen[shape])
                              for k in ("cpu", "wall", "ttft", "space")}
            results[str(streams)] = row
            qvq = row["qvq"]
            print(f"\n{streams} stream(s) x {tokens} words x 10 ms, {rounds} rounds (medians):")
            for shape in SHAPES:
                side = row[shape]
                print(f"  {shape:6}  CPU {side['cpu']:.3f} s ({side['cpu'] / qvq['cpu']:.2f}x qvq)"
                      f"  wall {side['wall']:.2f} s  first token {side['ttft'] * 1000:.0f} ms "
                      f"({(side['ttft'] - qvq['ttft']) * 1000:+.0f} ms)"
                      f"  the Space's CPU {side['space']:.2f} s")
    finally:
        for replica in replicas.values():
            replica.stop()
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        bench_shapes(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
