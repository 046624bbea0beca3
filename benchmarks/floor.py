"""The raw-SSE floor: ours vs a bare httpx SSE reader vs gradio_client, side by side.

    python benchmarks/bench.py floor   # 1, 32 and 128 streams x 100 tokens x 10 ms
    python benchmarks/bench.py cold    # a cold `qvq ask`: import, first byte, at 0 and 100 ms RTT
    python benchmarks/bench.py connections  # the Space's CPU per request: new vs kept-alive

The floor is what the Space's protocol costs at least: one ``POST queue/join`` and one
``GET queue/data`` event stream per question, read with one shared ``httpx.AsyncClient``, text
rebuilt from the diffs. Nothing else (no config re-read, no cancel, no history, no checks).
Figures are medians over rounds (and ours / raw SSE within each round); the three sides
alternate within each round. CPU is this
process's (the replica runs in its own); threads are counted at the moment every stream of the
burst is generating.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
from gradio_client import Client

from qvq_gradio import Session

_PROMPT = "[[replica tokens=100 delay=0.01]] floor"


def generate_endpoint(config: dict[str, Any]) -> tuple[str, int]:
    """From a Space's config: its API prefix and the function index of ``/generate``."""
    api = "/" + str(config.get("api_prefix", "/gradio_api")).strip("/")
    fn_index = 0
    for index, dep in enumerate(config["dependencies"]):
        if dep.get("api_name") == "generate":
            fn_index = dep.get("id", index)
    return api, fn_index


class RawSSE:
    """The floor: the Space's two requests per question, nothing else."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # Idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s),
        # so no request is sent on a connection the server is closing.
        limits = httpx.Limits(max_connections=None, keepalive_expiry=1.0)
        self.http = httpx.AsyncClient(timeout=60, limits=limits)
        self.fn_index = 0
        self.api = "/gradio_api"

    async def connect(self) -> None:
        config = (await self.http.get(f"{self.url}/config")).json()
        self.api, self.fn_index = generate_endpoint(config)

    async def ask(self, prompt: str) -> tuple[float, float | None]:
        start = time.perf_counter()
        first = None
        session = uuid.uuid4().hex
        body = {"data": [None, prompt], "fn_index": self.fn_index, "session_hash": session}
        (await self.http.post(f"{self.url}{self.api}/queue/join", json=body)).raise_for_status()
        text: str | None = None
        params = {"session_hash": session}
        async with self.http.stream(
            "GET", f"{self.url}{self.api}/queue/data", params=params
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                kind = message.get("msg")
                if kind == "process_generating":
                    data = message["output"]["data"][0]
                    if text is None:  # the first message carries the value, then diffs
                        text = data if isinstance(data, str) else ""
                    else:
                        for action, _path, value in data:
                            text = value if action == "replace" else text + value
                    if first is None and text:
                        first = time.perf_counter() - start
                elif kind == "process_completed":
                    break
        return time.perf_counter() - start, first


def raw_stream(client: Client, prompt: str) -> tuple[float, float | None]:
    """One question through gradio_client as documented: (wall, first output) seconds."""
    start = time.perf_counter()
    first = None
    job = client.submit(None, prompt, api_name="/generate")
    for output in job:
        if first is None and output:
            first = time.perf_counter() - start
    job.result()
    return time.perf_counter() - start, first


async def ours_stream(session: Session, prompt: str) -> tuple[float, float | None]:
    """One question through a Session: (wall, first text) seconds."""
    start = time.perf_counter()
    first = None
    async for _ in session.stream(prompt):
        if first is None:
            first = time.perf_counter() - start
    return time.perf_counter() - start, first


async def _quiet(most: float = 5.0) -> None:
    """Until this process spends (almost) no CPU, its garbage collected: the side measured
    before may leave work behind (gradio_client's helper threads wind down after their jobs,
    and its garbage makes every later collection longer), which would be counted against the
    side measured next."""
    gc.collect()
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        before = time.process_time()
        await asyncio.sleep(0.1)
        if time.process_time() - before < 0.002:
            return


async def _burst(side: str, n: int, asker: Any, pool: Any) -> dict[str, float]:
    """``n`` streams at once on one side: wall, CPU, median first token, threads at the peak."""
    await _quiet()
    baseline = threading.active_count()
    peak = 0
    firsts: list[float] = []

    async def counted(coro: Any) -> None:
        nonlocal peak
        _, first = await coro
        firsts.append(first or 0.0)

    async def watch_threads(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, threading.active_count() - baseline)
            await asyncio.sleep(0.02)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_threads(stop))
    cpu, wall = time.process_time(), time.perf_counter()
    if side == "raw SSE":
        coros = [asker.ask(_PROMPT) for _ in range(n)]
    elif side == "ours":
        coros = [ours_stream(asker, _PROMPT) for _ in range(n)]
    else:
        coros = [loop.run_in_executor(pool, raw_stream, asker, _PROMPT)
                 for _ in range(n)]
    await asyncio.gather(*(counted(c) for c in coros))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await watcher
    return {"wall_s": wall, "cpu_s": cpu, "ttft_ms": statistics.median(firsts) * 1000,
            "threads": float(peak)}


def bench_floor(url: str, rounds: int, sizes: tuple[int, ...] = (1, 32, 128)) -> dict[str, Any]:
    figures: dict[str, Any] = {}

    async def run() -> None:
        raw = RawSSE(url)
        await raw.connect()
        client = Client(url, verbose=False, max_workers=max(sizes))
        pool = concurrent.futures.ThreadPoolExecutor(max(sizes))
        async with Session(url, max_workers=max(sizes)) as session:
            sides = {"raw SSE": raw, "ours": session, "gradio_client": client}
            for n in sizes:
                samples: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
                for side, asker in sides.items():  # warm-up: connections, threads
                    await _burst(side, min(n, 8), asker, pool)
                for i in range(rounds):
                    order = list(sides) if i % 2 == 0 else list(reversed(sides))
                    for side in order:
                        samples[side].append(await _burst(side, n, sides[side], pool))
                figures[str(n)] = {
                    side: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
                    for side, runs in samples.items()
                }
                figures[str(n)]["paired"] = _paired(samples["ours"], samples["raw SSE"])
        await raw.http.aclose()
        client.close()
        pool.shutdown()

    asyncio.run(run())
    for n, sides in figures.items():
        paired = sides.pop("paired")
        floor = sides["raw SSE"]
        print(f"(f) {n} concurrent stream(s) x 100 tokens x 10 ms, median of {rounds} rounds")
        print(f"    {'':14} {'wall':>8} {'CPU':>7} {'CPU/stream':>11} {'TTFT':>9} {'threads':>8}")
        for side, f in sides.items():
            per = f["cpu_s"] / int(n) * 1000
            print(f"    {side:14} {f['wall_s']:7.3f}s {f['cpu_s']:6.2f}s {per:9.1f}ms "
                  f"{f['ttft_ms']:7.1f}ms {f['threads']:8.0f}")
        ours = sides["ours"]
        print(f"    ours / raw SSE: wall {ours['wall_s'] / floor['wall_s']:.3f}x, "
              f"CPU {ours['cpu_s'] / floor['cpu_s']:.3f}x, "
              f"TTFT {ours['ttft_ms'] - floor['ttft_ms']:+.1f} ms")
        rounds_line = ", ".join(
            f"{k} {v[0]:.3f}x [{v[1]:.3f}-{v[2]:.3f}]" for k, v in paired.items()
        )
        print(f"    ours / raw SSE, round by round (median [range]): {rounds_line}")
        sides["paired"] = paired
    return figures


def _paired(ours: list[dict[str, float]], raw: list[dict[str, float]]) -> dict[str, list[float]]:
    """Ours / raw SSE within each round (the two bursts measured next to each other): the
    median, lowest and highest. On a box whose speed drifts (a busy hypervisor), a ratio taken
    within one round is steadier than the ratio of two medians taken across rounds."""
    figures = {}
    for key in ("wall_s", "cpu_s"):
        ratios = [o[key] / r[key] for o, r in zip(ours, raw, strict=True) if r[key]]
        figures[key.removesuffix("_s")] = [statistics.median(ratios), min(ratios), max(ratios)]
    return figures


# -- what a connection costs the Space -----------------------------------------------------------


def bench_connections(url: str, pid: int, requests: int = 400) -> dict[str, float]:
    """The replica's CPU per request, each on a new connection vs all on one kept alive (a
    cheap route, so that what is left is the connection): why joins share connections."""
    import psutil  # a test dependency

    server = psutil.Process(pid)

    def cpu() -> float:
        times = server.cpu_times()
        return float(times.user + times.system)

    samples: dict[str, list[float]] = {"new": [], "kept": []}
    for _ in range(3):
        for way in samples:
            before = cpu()
            if way == "new":
                for _ in range(requests):
                    httpx.get(f"{url}/replica/hits").raise_for_status()
            else:
                with httpx.Client() as client:
                    for _ in range(requests):
                        client.get(f"{url}/replica/hits").raise_for_status()
            time.sleep(0.3)  # the server's last requests accounted
            samples[way].append((cpu() - before) / requests * 1000)
    figures = {f"{way}_ms": statistics.median(values) for way, values in samples.items()}
    print(f"(h) the replica's CPU per request, median of 3 x {requests}: a new connection each "
          f"{figures['new_ms']:.2f} ms, one kept-alive connection {figures['kept_ms']:.2f} ms")
    return figures


# -- a cold `qvq ask` -------------------------------------------------------------------------


class LatencyProxy:
    """A TCP proxy adding ``rtt / 2`` each way (so one request/response costs one RTT).

    ``handshake``: round trips a new connection costs before its first request can go out
    (TCP: 1; TCP and TLS 1.3: 2). Connecting to this proxy is instant, so the client's first
    bytes on each connection are held that much longer instead.
    """

    def __init__(self, target_port: int, rtt: float, handshake: int = 0) -> None:
        self.target_port = target_port
        self.delay = rtt / 2
        self.setup = handshake * rtt
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LatencyProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        ).result()
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *_: Any) -> None:
        assert self.server is not None
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ready = time.monotonic() + self.setup  # the handshakes done
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer, ready), self._pipe(up_reader, writer))

    async def _pipe(
        self, source: asyncio.StreamReader, target: asyncio.StreamWriter, ready: float = 0.0
    ) -> None:
        # Each chunk is delivered `delay` after it was read (or could be sent, once the
        # connection is set up), in order, without holding back the chunks behind it (a
        # link's latency, not its bandwidth).
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(due - time.monotonic(), 0))
                target.write(data)
                await target.drain()
            target.close()

        sender = asyncio.create_task(deliver())
        try:
            while data := await source.read(65536):
                queue.put_nowait((max(time.monotonic(), ready) + self.delay, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError, OSError):
            await sender


_FIRST_BYTE = r"""
import subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen([sys.executable, *sys.argv[1:]],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
first = proc.stdout.read(1)
first_byte = time.perf_counter() - start
rest, err = proc.communicate()
assert proc.returncode == 0, err.decode()
print(first_byte)
"""


# (httpx imports httpcore when its first client is made; httpcore imports trio if it is
# installed, which costs ~0.2 s: the test extra installs it.)
_ASK_IMPORTS = (
    "import qvq_gradio.cli.ask, qvq_gradio.pool, anyio._backends._asyncio, httpcore, certifi"
)
# The floor of a cold question: a bare httpx client that knows the function's index (as ours
# knows it from the description kept on disk), joins the queue and reads the event stream to
# the first text. No CA bundle is loaded (the URL is http).
_FLOOR_IMPORTS = "import json, sys, uuid, httpx, httpcore"
_FLOOR_ASK = _FLOOR_IMPORTS + r"""
url, api, fn_index, prompt = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3]), sys.argv[4]
session = uuid.uuid4().hex
with httpx.Client(timeout=60, verify=False) as http:
    body = {"data": [None, prompt], "fn_index": fn_index, "session_hash": session}
    http.post(f"{url}{api}/queue/join", json=body).raise_for_status()
    params = {"session_hash": session}
    with http.stream("GET", f"{url}{api}/queue/data", params=params) as response:
        for line in response.iter_lines():
            if line.startswith("data:") and "process_generating" in line:
                sys.stdout.write("x")
                sys.stdout.flush()
                break
"""
# A byte printed once the imports are done: their time, without the interpreter's exit (which
# takes ~0.1-0.2 s more after importing gradio_client and huggingface_hub, and is no part of
# reaching the first byte).
_PRINTED = "; sys.stdout.write('x'); sys.stdout.flush()"


def _median_seconds(python: str, args: list[str], env: dict[str, str]) -> float:
    """Seconds a fresh interpreter takes to run ``python ARGS`` to its exit (median of 5)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([python, *args], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _first_byte(python: str, command: list[str], env: dict[str, str]) -> float:
    out = subprocess.run([python, "-c", _FIRST_BYTE, *command], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def bench_cold(
    url: str, rounds: int, env: dict[str, str], python: str = sys.executable
) -> dict[str, Any]:
    """``python``: the interpreter of the environment measured (the one running this, or, say,
    a virtual environment with only ``pip install qvq-gradio`` in it: see --python).

    Each round runs, in an order that rotates from round to round: the imports a cold
    ``qvq ask`` needs and the floor's, each to a byte printed after them; a cold ``qvq ask``
    and the floor's cold question, each at 0 and at 100 ms RTT, and at 100 ms RTT with the
    handshakes of a new connection (2 RTT). What a round trip costs is
    taken within a round, so a drift in the machine's speed falls on every side alike.
    """
    port = int(url.rsplit(":", 1)[1])
    figures: dict[str, Any] = {
        "python_s": _median_seconds(python, ["-c", "pass"], env),
        "import_s": _median_seconds(python, ["-c", "import qvq_gradio"], env),
        "help_s": _median_seconds(python, ["-m", "qvq_gradio", "--help"], env),
        "version_s": _median_seconds(python, ["-m", "qvq_gradio", "--version"], env),
        "history_s": _median_seconds(
            python, ["-m", "qvq_gradio", "history", "list", "-n", "1"], env
        ),
    }
    api, fn_index = generate_endpoint(httpx.get(f"{url}/config", timeout=30).json())
    times: dict[str, list[float]] = {}
    # 101: 100 ms RTT, and a new connection costs 2 RTT before its first request (the TCP and
    # TLS 1.3 handshakes of an https Space; the replica speaks http, so the proxy adds them).
    with LatencyProxy(port, 0.0) as local, LatencyProxy(port, 0.1) as far, \
            LatencyProxy(port, 0.1, handshake=2) as handshaking:
        proxies = {0: local, 100: far, 101: handshaking}

        def ours(rtt: int, i: int) -> list[str]:
            return ["-m", "qvq_gradio", "ask", "--space", f"http://127.0.0.1:{proxies[rtt].port}",
                    f"[[replica tokens=3 delay=0]] cold {i}", "--no-history"]

        def floor(rtt: int, i: int) -> list[str]:
            return ["-c", _FLOOR_ASK, f"http://127.0.0.1:{proxies[rtt].port}", api,
                    str(fn_index), f"[[replica tokens=3 delay=0]] floor {i}"]

        sides = {
            "ours_imports": lambda i: ["-c", "import sys; " + _ASK_IMPORTS + _PRINTED],
            "floor_imports": lambda i: ["-c", _FLOOR_IMPORTS + _PRINTED],
            "ours_0": lambda i: ours(0, i),
            "ours_100": lambda i: ours(100, i),
            "floor_0": lambda i: floor(0, i),
            "floor_100": lambda i: floor(100, i),
            "ours_handshakes": lambda i: ours(101, i),
            "floor_handshakes": lambda i: floor(101, i),
        }
        for rtt in proxies:  # each address's description kept on disk
            _first_byte(python, ours(rtt, -1), env)
        names = list(sides)
        for i in range(rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:
                times.setdefault(name, []).append(_first_byte(python, sides[name](i), env))

    def median_ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    def within(a: str, b: str) -> float:
        return median_ms([x - y for x, y in zip(times[a], times[b], strict=True)])

    for name, values in times.items():
        figures[f"{name}_ms"] = median_ms(values)
    figures["rounds_ms"] = {name: [round(x * 1000) for x in v] for name, v in times.items()}
    for side in ("ours", "floor"):
        figures[f"{side}_rtt_cost_ms"] = within(f"{side}_100", f"{side}_0")
        figures[f"{side}_over_imports_handshakes_ms"] = within(
            f"{side}_handshakes", f"{side}_imports"
        )
        figures[f"{side}_over_imports_100_ms"] = within(f"{side}_100", f"{side}_imports")
        figures[f"{side}_over_imports_0_ms"] = within(f"{side}_0", f"{side}_imports")
    trio = subprocess.run([python, "-c", "import trio"], env=env, capture_output=True)
    f = figures
    print(f"(g) a cold `qvq ask`, median of {rounds} ({python}; trio "
          f"{'installed' if trio.returncode == 0 else 'not installed'})")
    print(f"    python -c pass {f['python_s'] * 1000:.0f} ms; import qvq_gradio "
          f"{f['import_s'] * 1000:.0f} ms; qvq --help {f['help_s'] * 1000:.0f} ms; "
          f"--version {f['version_s'] * 1000:.0f} ms; history list "
          f"{f['history_s'] * 1000:.0f} ms")
    for side, label in (("ours", "`qvq ask`"), ("floor", "the floor (bare httpx)")):
        print(f"    {label}: its imports {f[f'{side}_imports_ms']:.0f} ms (to a byte printed "
              f"after them); first byte at 0 ms RTT {f[f'{side}_0_ms']:.0f} ms, at 100 ms RTT "
              f"{f[f'{side}_100_ms']:.0f} ms")
        print(f"        round by round: the imports + {f[f'{side}_over_imports_0_ms']:.0f} ms "
              f"at 0 RTT, + {f[f'{side}_over_imports_100_ms']:.0f} ms at 100 ms RTT (target: "
              f"+ 2 RTT = 200 ms); 100 ms RTT adds {f[f'{side}_rtt_cost_ms']:.0f} ms")
        print(f"        with 2 RTT more per new connection (TCP and TLS handshakes): first "
              f"byte {f[f'{side}_handshakes_ms']:.0f} ms, the imports + "
              f"{f[f'{side}_over_imports_handshakes_ms']:.0f} ms (one connection: + 4 RTT)")
    return figures


if __name__ == "__main__":  # pragma: no cover
    print("run it through benchmarks/bench.py floor|cold", file=sys.stderr)
    os._exit(2)
