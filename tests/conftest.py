"""Shared fixtures: an isolated environment, the replica Space, and a blocking-call guard."""

from __future__ import annotations

import inspect
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from qvq_gradio import Session
from qvq_gradio.pytest_plugin import replica_environment
from qvq_gradio.replica import ReplicaProcess
from qvq_gradio.replica.host import HostedReplica, ReplicaHost

#: The ``qvq_replicas`` fixture: ``qvq_replicas(n, *options, port=0)`` gives ``n`` replicas.
Factory = Callable[..., list[ReplicaProcess]]

# Variables that change what the package or gradio_client do; tests set what they need.
_ISOLATED = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "QVQ_SPACE",
    "QVQ_HISTORY",
    "GRADIO_ANALYTICS_ENABLED",
    "HF_HUB_DISABLE_TELEMETRY",  # the CLI sets it in its process: tests run it in theirs too
)


@pytest.fixture(scope="session", autouse=True)
def _private_tempdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Temporary files of this test process in a folder of its own: checks that nothing is
    left in the temp dir see only what this process made (several run at once with xdist),
    and the run leaves nothing in the machine's /tmp."""
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tmp"))
    try:
        yield
    finally:
        tempfile.tempdir = before


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for name in _ISOLATED:
        monkeypatch.delenv(name, raising=False)
    # Nothing may reach huggingface.co; a token file in the home directory must not leak in.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    # The CLI records answers by default: into the test run's own directory, never the user's.
    monkeypatch.setenv("QVQ_HOME", str(tmp_path_factory.getbasetemp() / "qvq-home"))
    # Child processes (the CLI, scripts) put their temporary files there too.
    monkeypatch.setenv("TMPDIR", tempfile.gettempdir())


def replica_env() -> dict[str, str]:
    return replica_environment()


@pytest.fixture(scope="session")
def replica(qvq_replica: ReplicaProcess) -> ReplicaProcess:
    """The replica Space in a child process, shared by the whole run (the plugin's fixture)."""
    return qvq_replica


@pytest.fixture
def start_replica(qvq_replica_host: ReplicaHost) -> Iterator[Callable[..., HostedReplica]]:
    """``start_replica(*options, port=0)``: a replica of the session's host, serving once this
    returns (a port given: that port, as a restarted or redeployed Space would come back on);
    stopped after the test. Blocking: from async code, call it in a worker thread."""
    from qvq_gradio.cli.replica import replica_config

    started: list[HostedReplica] = []

    def start(*options: str, port: int = 0) -> HostedReplica:
        replica = qvq_replica_host.start(replica_config(options), port=port)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


class Served:
    """``qvq serve`` in this process: the app the command builds from its options, served by
    uvicorn on a thread on a loopback port of its own (signal tests run the real command)."""

    def __init__(self, space: str | None, args: tuple[str, ...]) -> None:
        import socket
        import threading

        import uvicorn

        from qvq_gradio.cli.serve import build, serve

        given = ["--space", space] if space is not None else []
        with serve.make_context("serve", [*given, *args],
                                help_option_names=["-h", "--help"]) as ctx:
            application, _, _ = build(ctx.params)
        self._sock = socket.create_server(("127.0.0.1", 0))  # listening: clients queue at once
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.base_url = f"{self.url}/v1"
        config = uvicorn.Config(application, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]})
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True  # the lifespan's end closes the session
        self._thread.join(30)
        self._sock.close()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Served]]:
    """``served(space, *options, home=None)``: ``qvq serve`` in-process (see :class:`Served`;
    ``space`` None: no ``--space``); ``home``: its ``$QVQ_HOME`` (the history), else the
    run's."""
    started: list[Served] = []

    def make(space: str | None, *args: str, home: str | None = None) -> Served:
        if home is not None:
            monkeypatch.setenv("QVQ_HOME", home)
        server = Served(space, args)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


STANDIN_KEY = "sk-standin-key-9876543210"


@pytest.fixture
def standin(
    start_replica: Callable[..., HostedReplica], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[HostedReplica, str]]:
    """``standin(*options)``: the replica as an OpenAI-compatible endpoint (``--shape openai``)
    behind a key, and the spec naming it (blocking: from async code, call it in a worker
    thread). Its thinking comes in ``reasoning_content`` unless ``--think`` says otherwise."""
    monkeypatch.setenv("QVQ_STANDIN_KEY", STANDIN_KEY)

    def start(*options: str) -> tuple[HostedReplica, str]:
        replica = start_replica(
            "--shape", "openai", "--require-token", STANDIN_KEY, "--tokens", "3",
            "--delay", "0", "--think", "reasoning_content", *options,
        )
        return replica, f"openai+{replica.url}/v1#qvq-max&key=QVQ_STANDIN_KEY"

    return start


@pytest.fixture
def marker() -> str:
    """A unique string to put in a prompt, to find that request in the replica's log."""
    return f"m-{uuid.uuid4().hex[:12]}"


# The replica, its fixtures and the replica command's option parsing (how the plugin starts
# replicas) are what tests drive (start, kill, read the log), not the client under test: their
# blocking calls, made by a test's own code, are not ours.
_TEST_TOOLS = ["qvq_gradio.replica", "qvq_gradio.pytest_plugin", "qvq_gradio.cli.replica"]


@pytest.fixture
def no_blocking() -> Iterator[BlockBuster]:
    """Fail any blocking call that qvq_gradio makes on the event loop's thread.

    Scoped to the package: the guarantee is that our code never blocks the loop; a test's own
    setup (writing a fixture image, say) is not what is being tested.
    """
    with blockbuster_ctx(["qvq_gradio"], excluded_modules=_TEST_TOOLS) as bb:
        yield bb


@pytest.fixture(autouse=True)
def _guard_async_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every async test runs under the blocking-call guard, whether it asks for it or not."""
    function = getattr(request, "function", None)
    if function is None or not inspect.iscoroutinefunction(function):
        yield
        return
    if "no_blocking" in request.fixturenames:  # already guarded
        yield
        return
    with blockbuster_ctx(["qvq_gradio"], excluded_modules=_TEST_TOOLS):
        yield


@pytest.fixture
async def session(replica: ReplicaProcess, no_blocking: BlockBuster) -> AsyncIterator[Session]:
    """A session on the replica; every test using it runs under the blocking-call guard."""
    async with Session(replica.url, idle_timeout=30, total_timeout=60) as s:
        yield s


async def ended(replica: ReplicaProcess, marker: str) -> dict[str, Any]:
    """The replica's record of the request carrying ``marker``, once it ended (off the loop)."""
    return await anyio.to_thread.run_sync(replica.wait_ended, marker)


def pytest_report_header() -> str:
    return f"python {sys.version.split()[0]}; tests talk to a replica Space on 127.0.0.1 only"
