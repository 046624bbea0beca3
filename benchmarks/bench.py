"""Benchmarks: qvq-gradio vs raw gradio_client, side by side in one run, against the replica.

    python benchmarks/bench.py            # everything
    python benchmarks/bench.py stream     # (a) 200 tokens x 10 ms: wall time, time to first token
    python benchmarks/bench.py memory     # (b) 8,000 tokens unpaced: process memory growth
    python benchmarks/bench.py concurrent # (c) 32 streams x 100 tokens x 10 ms: wall, CPU, loop lag
    python benchmarks/bench.py media      # image normalisation vs a naive Pillow pipeline
    python benchmarks/bench.py pool       # 3 Spaces as one Pool vs one Space; one killed
    python benchmarks/bench.py batch      # qvq batch vs asyncio.gather; resume; 100k-row input
    python benchmarks/bench.py floor      # 1/32/128 streams: ours vs raw SSE vs gradio_client
    python benchmarks/bench.py cold       # a cold `qvq ask` at 0 and 100 ms RTT; start-up times
    python benchmarks/bench.py serve      # qvq serve vs Session directly, 1/32/128 streams
    python benchmarks/bench.py connections # the Space's CPU per request: new vs kept-alive
    python benchmarks/bench.py shapes     # a question to QVQ's /generate, a chat, Qwen's demo
    python benchmarks/bench.py endpoints  # an openai+ endpoint: ours vs the openai SDK vs httpx

Raw gradio_client is used as its documentation shows: one ``Client``, ``job = submit(...)``,
``for output in job``. Each side gets one warm-up stream; figures are medians over rounds, and
the two sides alternate within each round. The replica runs in its own process, so its CPU time
is not counted. Memory is measured in a fresh process per side (peak RSS growth).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import anyio
from gradio_client import Client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import floor  # the floor and cold-start scenarios, a module of their own
from floor import ours_stream, raw_stream

from qvq_gradio import Pool, ResponseError, Session
from qvq_gradio.replica import ReplicaProcess

RESULTS: dict[str, Any] = {}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b else "n/a"


# -- (a) one stream: wall time and time to first token -------------------------------------------


def bench_stream(url: str, rounds: int) -> None:
    prompt = "[[replica tokens=200 delay=0.01]] bench a"
    client = Client(url, verbose=False)
    raw_stream(client, prompt)  # warm-up
    raw: list[tuple[float, float | None]] = []
    ours: list[tuple[float, float | None]] = []

    async def run() -> None:
        async with Session(url) as session:
            await ours_stream(session, prompt)  # warm-up
            for i in range(rounds):
                if i % 2:
                    ours.append(await ours_stream(session, prompt))
                    raw.append(await anyio.to_thread.run_sync(raw_stream, client, prompt))
                else:
                    raw.append(await anyio.to_thread.run_sync(raw_stream, client, prompt))
                    ours.append(await ours_stream(session, prompt))

    anyio.run(run)
    client.close()
    raw_wall = statistics.median(w for w, _ in raw)
    our_wall = statistics.median(w for w, _ in ours)
    raw_first = statistics.median(f or 0 for _, f in raw)
    our_first = statistics.median(f or 0 for _, f in ours)
    RESULTS["stream"] = {
        "raw_wall_s": raw_wall,
        "ours_wall_s": our_wall,
        "raw_ttft_ms": raw_first * 1000,
        "ours_ttft_ms": our_first * 1000,
    }
    print(f"(a) 200 tokens x 10 ms, median of {rounds} rounds")
    print(
        f"    wall  raw {raw_wall:.3f} s  ours {our_wall:.3f} s  ratio {ratio(our_wall, raw_wall)}"
    )
    print(
        f"    TTFT  raw {raw_first * 1000:.1f} ms  ours {our_first * 1000:.1f} ms  "
        f"diff {(our_first - raw_first) * 1000:+.1f} ms"
    )


# -- (b) memory: a fresh process per side ---------------------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    VmHWM, not getrusage's ru_maxrss: on Linux ru_maxrss is carried over fork and exec, so a
    child would start with its parent's peak and hide its own growth under it.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def memory_child(side: str, url: str, tokens: int) -> None:
    prompt = f"[[replica tokens={tokens} delay=0]] bench b"
    warm = "[[replica tokens=10 delay=0]] warm"
    if side == "raw":
        client = Client(url, verbose=False)
        raw_stream(client, warm)
        before = _peak_rss_mb()
        job = client.submit(None, prompt, api_name="/generate")
        chars = 0
        for output in job:
            chars = len(output)
        job.result()
        after = _peak_rss_mb()
    else:

        async def run() -> tuple[float, float, int]:
            async with Session(url) as session:
                await session.ask(warm)
                before = _peak_rss_mb()
                text = await session.ask(prompt)
                return before, _peak_rss_mb(), len(text)

        before, after, chars = anyio.run(run)
    print(json.dumps({"growth_mb": after - before, "chars": chars}))


def bench_memory(url: str, tokens: int) -> None:
    growth = {}
    for side in ("raw", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, "_memory", side, url, str(tokens)],
            capture_output=True,
            text=True,
            check=True,
        )
        growth[side] = json.loads(out.stdout.strip().splitlines()[-1])
    RESULTS["memory"] = growth
    print(f"(b) {tokens} tokens unpaced ({growth['ours']['chars']} chars): peak RSS growth")
    print(f"    raw {growth['raw']['growth_mb']:.1f} MB  ours {growth['ours']['growth_mb']:.1f} MB")


# -- (c) 32 concurrent streams ------------------------------------------------------------------


async def _lag_monitor(samples: list[float], stop: asyncio.Event, period: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(period)
        samples.append(loop.time() - start - period)


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else 0.0


async def _concurrent_raw(client: Client, prompt: str, n: int) -> tuple[float, float, float]:
    lags: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_lag_monitor(lags, stop))
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(
            *[loop.run_in_executor(pool, raw_stream, client, prompt) for _ in range(n)]
        )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await monitor
    return wall, cpu, _p99(lags)


async def _concurrent_ours(session: Session, prompt: str, n: int) -> tuple[float, float, float]:
    lags: list[float] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_lag_monitor(lags, stop))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*[ours_stream(session, prompt) for _ in range(n)])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await monitor
    return wall, cpu, _p99(lags)


def bench_concurrent(url: str, rounds: int, n: int = 32) -> None:
    prompt = "[[replica tokens=100 delay=0.01]] bench c"
    client = Client(url, verbose=False, max_workers=64)
    raw: list[tuple[float, float, float]] = []
    ours: list[tuple[float, float, float]] = []

    async def run() -> None:
        async with Session(url) as session:
            await _concurrent_raw(client, prompt, n)  # warm-up: threads come into being
            await _concurrent_ours(session, prompt, n)
            for i in range(rounds):
                for side in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
                    if side == "raw":
                        raw.append(await _concurrent_raw(client, prompt, n))
                    else:
                        ours.append(await _concurrent_ours(session, prompt, n))

    asyncio.run(run())
    client.close()
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    figures = {
        "raw_wall_s": med(raw, 0),
        "ours_wall_s": med(ours, 0),
        "raw_cpu_s": med(raw, 1),
        "ours_cpu_s": med(ours, 1),
        "raw_lag_p99_ms": med(raw, 2) * 1000,
        "ours_lag_p99_ms": med(ours, 2) * 1000,
    }
    RESULTS["concurrent"] = figures
    print(f"(c) {n} concurrent streams x 100 tokens x 10 ms, median of {rounds} rounds")
    print(
        f"    wall  raw {figures['raw_wall_s']:.3f} s  ours {figures['ours_wall_s']:.3f} s  "
        f"ratio {ratio(figures['ours_wall_s'], figures['raw_wall_s'])}"
    )
    print(
        f"    CPU   raw {figures['raw_cpu_s']:.2f} s  ours {figures['ours_cpu_s']:.2f} s  "
        f"ratio {ratio(figures['ours_cpu_s'], figures['raw_cpu_s'])}"
    )
    print(
        f"    event-loop lag p99  raw {figures['raw_lag_p99_ms']:.1f} ms  "
        f"ours {figures['ours_lag_p99_ms']:.1f} ms"
    )


# -- media: our normalisation vs the naive Pillow pipeline ----------------------------------------


def _naive(data: bytes, box: tuple[int, int]) -> bytes:
    """What most code does: decode everything, convert, shrink, save as PNG."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail(box)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _ours(data: bytes) -> bytes:
    from qvq_gradio.imaging import normalise

    result = normalise(data)
    return result.data if result.data is not None else data


def media_child(side: str, path: str) -> None:
    from qvq_gradio.imaging import ImageOptions, open_image, target_size

    with open(path, "rb") as handle:
        data = handle.read()
    with open_image(data) as image:
        box = target_size(image.width, image.height, ImageOptions())
    before = _peak_rss_mb()
    out = _naive(data, box) if side == "naive" else _ours(data)
    print(json.dumps({"peak_mb": _peak_rss_mb() - before, "bytes": len(out)}))


def _media_inputs(directory: str) -> dict[str, str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    h, w = 4000, 6000
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 255 // (w + h))], axis=-1)
    noise = rng.normal(0, 10, (h, w, 1))
    photo = Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))
    paths = {"24 MP photo (JPEG, 6000x4000)": os.path.join(directory, "photo.jpg")}
    photo.save(paths["24 MP photo (JPEG, 6000x4000)"], quality=92)
    screen = np.full((3000, 4000, 3), 246, np.uint8)
    for i in range(0, 3000, 40):
        screen[i : i + 2] = (200, 200, 210)
    for j in range(0, 4000, 300):
        screen[:, j : j + 120] = (30, 90, 180)
    for i in range(60, 3000, 40):  # text-like speckle on every line
        screen[i : i + 10, 130:3900:7] = (20, 20, 20)
    key = "screenshot (PNG, 4000x3000)"
    paths[key] = os.path.join(directory, "screen.png")
    Image.fromarray(screen).save(paths[key])
    return paths


def bench_media(rounds: int) -> None:
    import tempfile

    from qvq_gradio.imaging import ImageOptions, open_image, target_size

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        for label, path in _media_inputs(directory).items():
            with open(path, "rb") as handle:
                data = handle.read()
            with open_image(data) as image:
                box = target_size(image.width, image.height, ImageOptions())
            times: dict[str, list[float]] = {"naive": [], "ours": []}
            _naive(data, box), _ours(data)  # warm-up
            for i in range(rounds):
                for side in ("naive", "ours") if i % 2 == 0 else ("ours", "naive"):
                    start = time.perf_counter()
                    _naive(data, box) if side == "naive" else _ours(data)
                    times[side].append(time.perf_counter() - start)
            memory = {
                side: json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "_media", side, path],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                for side in ("naive", "ours")
            }
            naive_t, ours_t = statistics.median(times["naive"]), statistics.median(times["ours"])
            figures[label] = {
                "naive_s": naive_t,
                "ours_s": ours_t,
                "naive_peak_mb": memory["naive"]["peak_mb"],
                "ours_peak_mb": memory["ours"]["peak_mb"],
                "naive_bytes": memory["naive"]["bytes"],
                "ours_bytes": memory["ours"]["bytes"],
                "input_bytes": len(data),
            }
            print(f"media: {label}, {len(data) / 1e6:.1f} MB in, median of {rounds} rounds")
            print(
                f"    time   naive {naive_t * 1000:.0f} ms  ours {ours_t * 1000:.0f} ms  "
                f"ratio {ratio(ours_t, naive_t)}"
            )
            print(
                f"    peak RSS growth  naive {memory['naive']['peak_mb']:.0f} MB  "
                f"ours {memory['ours']['peak_mb']:.0f} MB"
            )
            print(
                f"    uploaded  naive {memory['naive']['bytes'] / 1e6:.2f} MB  "
                f"ours {memory['ours']['bytes'] / 1e6:.2f} MB"
            )
    RESULTS["media"] = figures


# -- (d) several Spaces as one -----------------------------------------------------------------


async def _ask_all(asker: Any, prompts: list[str], kill: Any = None) -> tuple[float, int, int]:
    """Wall time, answered, failed for ``prompts`` asked at once; ``kill()`` a third of the way."""
    answered = failed = 0
    done = 0
    start = time.perf_counter()

    async def one(prompt: str) -> None:
        nonlocal answered, failed, done
        try:
            await asker.ask(prompt)
            answered += 1
        except ResponseError:
            failed += 1
        done += 1
        if kill is not None and done == len(prompts) // 3:
            kill()

    async with anyio.create_task_group() as tg:
        for prompt in prompts:
            tg.start_soon(one, prompt)
    return time.perf_counter() - start, answered, failed


def bench_pool(n: int = 120, tokens: int = 50, delay: float = 0.01) -> None:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    args = ["--concurrency", "4"]
    prompt = f"[[replica tokens={tokens} delay={delay}]]"
    prompts = [f"q{i} {prompt}" for i in range(n)]
    servers = [ReplicaProcess(args, env=env).start() for _ in range(4)]
    try:
        single, *three = servers

        async def one_space() -> tuple[float, int, int]:
            async with Session(single.url) as session:
                await session.ask("warm-up [[replica tokens=1]]")
                return await _ask_all(session, prompts)

        async def pool(kill: Any = None) -> tuple[float, int, int]:
            async with Pool([s.url for s in three], max_in_flight_per_space=4) as asker:
                for _ in three:
                    await asker.ask("warm-up [[replica tokens=1]]")
                return await _ask_all(asker, prompts, kill)

        base, ok1, _ = anyio.run(one_space)
        wall, ok3, _ = anyio.run(pool)
        killed, ok_k, failed_k = anyio.run(pool, three[2].kill)
    finally:
        for server in servers:
            server.stop()
    print(f"(d) {n} questions x {tokens} tokens x {delay * 1000:.0f} ms, replicas of concurrency 4")
    print(f"    one Space: {base:.2f} s ({ok1} answered)")
    print(f"    pool of 3: {wall:.2f} s ({ok3} answered)  {ratio(wall, base)} (target <= 0.4x)")
    print(
        f"    pool of 3, one killed a third of the way: {killed:.2f} s ({ok_k} answered, "
        f"{failed_k} failed mid-answer, {n - ok_k - failed_k} lost)  {ratio(killed, base)} "
        "(target <= 0.6x)"
    )
    RESULTS["pool"] = {
        "one_space_s": base,
        "pool_s": wall,
        "pool_killed_s": killed,
        "answered_killed": ok_k,
        "failed_killed": failed_k,
        "lost_killed": n - ok_k - failed_k,
    }


# -- (e) batch runs ---------------------------------------------------------------------------

_GATHER = """
import asyncio, json, sys
from qvq_gradio import Session

async def main(url, source, output, concurrency):
    prompts = [json.loads(line)["prompt"] for line in open(source)]
    limit = asyncio.Semaphore(concurrency)
    async with Session(url) as session:
        async def one(prompt):
            async with limit:
                return await session.ask(prompt)
        answers = await asyncio.gather(*(one(p) for p in prompts))
    with open(output, "w") as out:
        for prompt, answer in zip(prompts, answers):
            out.write(json.dumps({"prompt": prompt, "text": answer}) + chr(10))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""

_PEAK = """
import sys
from qvq_gradio.cli import main
code = main(sys.argv[1:])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("PEAK_MB", int(line.split()[1]) / 1024)
sys.exit(code)
"""


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 8):
        raise RuntimeError(f"{args[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done


def _jsonl(path: str, rows: Any) -> None:
    with open(path, "w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def bench_batch(directory: str) -> None:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "QVQ_HOME": directory}
    figures: dict[str, Any] = {}
    with ReplicaProcess(["--concurrency", "64"], env=env) as replica:
        url = replica.url
        qvq = [sys.executable, "-m", "qvq_gradio", "batch"]
        # (a) 2,000 questions of 20 tokens at concurrency 32, history on.
        source = os.path.join(directory, "a.jsonl")
        _jsonl(source, ({"id": f"a{i}", "prompt": f"a{i} [[replica tokens=20 delay=0.005]]"}
                        for i in range(2000)))
        gather_s, _ = _timed(
            [sys.executable, "-c", _GATHER, url, source,
             os.path.join(directory, "gather.jsonl"), "32"], env
        )
        ours_s, done = _timed(
            [*qvq, source, "-o", os.path.join(directory, "a-out.jsonl"), "--space", url,
             "--concurrency", "32", "--no-progress"], env
        )
        with sqlite3.connect(os.path.join(directory, "history.db")) as db:
            recorded = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        print("(e) batch runs against the replica (queue concurrency 64)")
        print(f"    (a) 2,000 questions x 20 tokens, concurrency 32: asyncio.gather "
              f"{gather_s:.2f} s, qvq batch {ours_s:.2f} s (history on, {recorded} rows)  "
              f"{ratio(ours_s, gather_s)} (target <= 1.1x)")
        figures["a"] = {"gather_s": gather_s, "qvq_batch_s": ours_s, "history_rows": recorded}

        # (b) re-running a finished 20,000-item run.
        n = 20_000
        source = os.path.join(directory, "b.jsonl")
        output = os.path.join(directory, "b-out.jsonl")
        text = "Let me look at this carefully and reason step by step . " * 8
        _jsonl(source, ({"id": f"b{i}", "prompt": f"b{i} [[replica tokens=2]]"} for i in range(n)))
        _jsonl(output, ({"id": f"b{i}", "status": "ok", "text": text, "final_answer": "2"}
                        for i in range(n)))
        before = len(replica.requests())
        rerun_s, done = _timed([*qvq, source, "-o", output, "--space", url, "--no-progress"], env)
        sent = len(replica.requests()) - before
        print(f"    (b) re-running a finished {n:,}-item run: {rerun_s:.2f} s, {sent} requests "
              "to the Space (target < 3 s, 0)")
        figures["b"] = {"rerun_s": rerun_s, "requests": sent}

        # (c) peak memory for a 100,000-row input (99,000 done before, 1,000 asked now).
        n = 100_000
        source = os.path.join(directory, "c.jsonl")
        output = os.path.join(directory, "c-out.jsonl")
        _jsonl(source, ({"id": f"c{i}", "prompt": f"c{i} [[replica tokens=2 delay=0]]",
                         "meta": {"row": i, "note": "x" * 40}} for i in range(n)))
        _jsonl(output, ({"id": f"c{i}", "status": "ok", "text": text} for i in range(99_000)))
        _, done = _timed(
            [sys.executable, "-c", _PEAK, "batch", source, "-o", output, "--space", url,
             "--concurrency", "32", "--no-progress"], env
        )
        peak = float(done.stdout.split("PEAK_MB")[-1])
        print(f"    (c) {n:,}-row input (99,000 done, 1,000 asked): peak RSS {peak:.0f} MB "
              "(target < 150 MB)")
        figures["c"] = {"peak_mb": peak}
    RESULTS["batch"] = figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_memory":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_media":
        media_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "which",
        nargs="*",
        default=["stream", "memory", "concurrent", "floor", "cold", "serve", "connections",
                 "media", "pool", "batch", "shapes", "endpoints"],
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=8000, help="for the memory benchmark")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter whose environment the cold benchmark measures")
    parser.add_argument("--streams", default="1,32,128",
                        help="concurrent streams for the floor benchmark (comma-separated)")
    parser.add_argument("--pin", action="store_true",
                        help="the Space on the last core, the clients on the others (Linux): "
                             "the clients' CPU without the Space competing for it")
    args = parser.parse_args()
    if set(args.which) & {"stream", "memory", "concurrent"}:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        _bench_streams(args, env)
    if set(args.which) & {"floor", "cold", "serve", "connections"}:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        cores = sorted(os.sched_getaffinity(0)) if args.pin else []
        if cores:  # the replica's process, started from this thread, inherits its core
            os.sched_setaffinity(0, cores[-1:])
        with ReplicaProcess(["--concurrency", "256"], env=env) as replica:
            if cores:
                os.sched_setaffinity(0, cores[:-1])
            pinned = f"; replica on core {cores[-1]}, clients on {cores[:-1]}" if cores else ""
            print(f"replica on {replica.url}; python {sys.version.split()[0]}; "
                  f"{os.cpu_count()} cores{pinned}")
            if "floor" in args.which:
                sizes = tuple(int(n) for n in args.streams.split(","))
                RESULTS["floor"] = floor.bench_floor(replica.url, args.rounds, sizes)
            if "serve" in args.which:
                import serving  # qvq serve vs Session (needs the serve extra)

                sizes = tuple(int(n) for n in args.streams.split(","))
                RESULTS["serve"] = serving.bench_serve(replica.url, args.rounds, sizes)
            if "connections" in args.which and replica.pid is not None:
                RESULTS["connections"] = floor.bench_connections(replica.url, replica.pid)
            if "cold" in args.which:
                with tempfile.TemporaryDirectory() as home:
                    RESULTS["cold"] = floor.bench_cold(
                        replica.url, args.rounds, {**env, "QVQ_HOME": home}, args.python
                    )
    if "media" in args.which:
        bench_media(args.rounds)
    if "pool" in args.which:
        bench_pool()
    if "batch" in args.which:
        with tempfile.TemporaryDirectory() as directory:
            bench_batch(directory)
    if "shapes" in args.which:
        import shapes  # a module of its own: a question to each Space shape

        RESULTS["shapes"] = shapes.bench_shapes(args.rounds)
    if "endpoints" in args.which:
        import endpoints  # a module of its own: an OpenAI-compatible endpoint three ways

        RESULTS["endpoints"] = endpoints.bench_endpoints(args.rounds)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(RESULTS, handle, indent=2)


def _bench_streams(args: argparse.Namespace, env: dict[str, str]) -> None:
    with ReplicaProcess(["--concurrency", "64"], env=env) as replica:
        print(f"replica on {replica.url}; python {sys.version.split()[0]}; {os.cpu_count()} cores")
        if "stream" in args.which:
            bench_stream(replica.url, args.rounds)
        if "memory" in args.which:
            bench_memory(replica.url, args.tokens)
        if "concurrent" in args.which:
            bench_concurrent(replica.url, args.rounds)


if __name__ == "__main__":
    main()
