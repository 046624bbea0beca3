"""A pytest plugin (registered by installing qvq-gradio): the replica Space as fixtures.

* ``qvq_replica`` — one replica on a free loopback port, for the whole test session:
  ``qvq_replica.url``, ``.requests()``, ``.wait_ended(marker)``, ``.wait_started``.
* ``qvq_replicas`` — a factory for more: ``qvq_replicas(3, "--concurrency", "4")`` starts three
  (each with those command-line options of ``qvq replica``) and stops them after the test;
  ``.kill()`` ends one as a crash would (its port refuses, its connections are cut).
* ``qvq_replica_host`` — the one child process that serves them all (Gradio is imported once;
  a replica starts in milliseconds), with ``.start(ReplicaConfig(...), port=0)``. One per test
  process by default; with ``qvq_replica_host = shared`` in the pytest configuration, one for
  the whole run, shared by pytest-xdist's workers (started when the run starts).
* ``qvq_server`` — a factory: ``qvq_server(replica.url, "--api-key", "k")`` runs ``qvq serve``
  over that Space in a child process (the ``serve`` extra) and stops it after the test;
  ``.base_url`` is what an OpenAI client takes (``http://127.0.0.1:PORT/v1``).

The replica needs the ``replica`` extra; without it the fixtures fail with the install command,
and nothing else in your test run is affected (this module imports no Gradio).

    def test_my_code(qvq_replica):
        assert "Final Answer" in qvq_gradio.ask("hi", space=qvq_replica.url)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from .endpoints import is_endpoint, parse_endpoint
from .spaces import parse_named

if TYPE_CHECKING:
    from .replica.host import HostedReplica, ReplicaHost

__all__ = [
    "ServeProcess",
    "qvq_replica",
    "qvq_replica_host",
    "qvq_replicas",
    "qvq_server",
    "replica_environment",
]

_SHARED: pytest.StashKey[tuple[ReplicaHost, str]] = pytest.StashKey()

# Variables that would make the replica (or gradio_client in it) reach the network or a token.
_DROPPED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "QVQ_SPACE")


def replica_environment() -> dict[str, str]:
    """The environment a replica child process gets: offline, no telemetry, no tokens."""
    env = {name: value for name, value in os.environ.items() if name not in _DROPPED}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


#: Set for the test processes of a run whose replica host is shared: the host's socket.
_SHARED_ENV = "QVQ_REPLICA_HOST_SOCKET"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "qvq_replica_host",
        "'process': a replica host per test process (default); 'shared': one for the run, "
        "shared by pytest-xdist's workers",
        default="process",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getini("qvq_replica_host") != "shared" or hasattr(config, "workerinput"):
        return
    from .replica.host import ReplicaHost  # needs the replica extra; ImportError says which

    directory = tempfile.mkdtemp(prefix="qvq-replica-host-")
    path = os.path.join(directory, "host.sock")
    host = ReplicaHost(env=replica_environment(), share=path)
    config.stash[_SHARED] = (host, directory)
    os.environ[_SHARED_ENV] = path  # the workers, started after this, inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    shared = config.stash.get(_SHARED, None)
    if shared is not None:
        host, directory = shared
        os.environ.pop(_SHARED_ENV, None)
        host.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def qvq_replica_host() -> Iterator[ReplicaHost]:
    """The child process that serves every replica of the test session (Gradio imported
    once): ``qvq_replica_host.start(config, port=0)`` gives a replica of its own."""
    from .replica.host import ReplicaHost  # needs the replica extra; ImportError says which

    shared = os.environ.get(_SHARED_ENV)
    host = ReplicaHost.connect(shared) if shared else ReplicaHost(env=replica_environment())
    try:
        yield host
    finally:
        host.close()


def _start(host: ReplicaHost, args: tuple[str, ...], port: int = 0) -> HostedReplica:
    from .cli.replica import replica_config

    return host.start(replica_config(args), port=port)


@pytest.fixture(scope="session")
def qvq_replica(qvq_replica_host: ReplicaHost) -> Iterator[HostedReplica]:
    """The replica Space, shared by the whole test session."""
    server = _start(qvq_replica_host, ())
    try:
        yield server
    finally:
        server.stop()


#: Options that give a replica state of its own (a quota budget being spent): such replicas
#: are never handed to another test.
_STATEFUL = ("--quota-budget",)


class _Shelf:
    """Idle replicas a test has given back, by their options, for the next test to take:
    starting one costs seconds (it imports Gradio), so a suite reuses them."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, ...], list[HostedReplica]] = {}

    def take(self, args: tuple[str, ...]) -> HostedReplica | None:
        idle = self._idle.get(args, [])
        while idle:
            server = idle.pop()
            if server.pid is not None and server.alive():
                return server
            server.stop()
        return None

    def give_back(self, server: HostedReplica, args: tuple[str, ...]) -> None:
        """Keep ``server`` for another test if it is alive, stateless and idle; else stop it."""
        reusable = not any(a in _STATEFUL for a in args) and server.alive()
        try:
            reusable = reusable and all(r["state"] != "running" for r in server.requests())
        except Exception:  # it went away meanwhile
            reusable = False
        if reusable:
            self._idle.setdefault(args, []).append(server)
        else:
            server.stop()

    def close(self) -> None:
        for servers in self._idle.values():
            for server in servers:
                server.stop()
        self._idle.clear()


@pytest.fixture(scope="session")
def _qvq_replica_shelf() -> Iterator[_Shelf]:
    shelf = _Shelf()
    try:
        yield shelf
    finally:
        shelf.close()


@pytest.fixture
def qvq_replicas(
    qvq_replica_host: ReplicaHost, _qvq_replica_shelf: _Shelf
) -> Iterator[Callable[..., list[HostedReplica]]]:
    """A factory: ``qvq_replicas(n, *options)`` gives ``n`` replicas of their own to this test
    (``port=`` for a fixed port). They are free of other tests' running requests (filter their
    logs by a marker of your own); after the test they are kept for the next one, unless they
    died, hold state (a quota budget), were started on a fixed port or still run a request.
    """
    lent: list[tuple[HostedReplica, tuple[str, ...], bool]] = []

    def make(count: int = 1, *args: str, port: int = 0) -> list[HostedReplica]:
        servers = []
        for _ in range(count):
            server = None if port else _qvq_replica_shelf.take(tuple(args))
            server = server or _start(qvq_replica_host, tuple(args), port=port)
            lent.append((server, tuple(args), bool(port)))
            servers.append(server)
        return servers

    try:
        yield make
    finally:
        for server, args, fixed in lent:
            if fixed:
                server.stop()
            else:
                _qvq_replica_shelf.give_back(server, args)


class ServeProcess:
    """``qvq serve`` in a child process, on a free loopback port."""

    def __init__(self, space: str, args: tuple[str, ...], env: dict[str, str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        command = [sys.executable, "-m", "qvq_gradio", "serve", "--space", space,
                   "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while True:  # ready once it accepts connections
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise RuntimeError(f"qvq serve exited {self.process.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("qvq serve did not start within 60 s") from None
                time.sleep(0.05)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit; its code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def qvq_server() -> Iterator[Callable[..., ServeProcess]]:
    """A factory: ``qvq_server(space, *options)`` runs ``qvq serve`` over that Space (or any
    spec ``--space`` takes: an ``openai+...`` endpoint's key variable is passed on to it)."""
    started: list[ServeProcess] = []

    def make(space: str, *args: str, env: dict[str, str] | None = None) -> ServeProcess:
        environment = env or replica_environment()
        for _, spec in parse_named(space):
            variable = parse_endpoint(spec).key_var if is_endpoint(spec) else None
            if variable and variable in os.environ and variable not in environment:
                environment[variable] = os.environ[variable]
        server = ServeProcess(space, args, environment)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
