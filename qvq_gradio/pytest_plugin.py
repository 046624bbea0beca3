"""A pytest plugin (registered by installing qvq-gradio): the replica Space as fixtures.

* ``qvq_replica`` — one replica in a child process on a free loopback port, for the whole test
  session: ``qvq_replica.url``, ``.requests()``, ``.wait_ended(marker)``, ``.wait_started``.
* ``qvq_replicas`` — a factory for more: ``qvq_replicas(3, "--concurrency", "4")`` starts three
  (each with those command-line options of ``qvq replica``) and stops them after the test.

The replica needs the ``replica`` extra; without it the fixtures fail with the install command,
and nothing else in your test run is affected (this module imports no Gradio).

    def test_my_code(qvq_replica):
        assert "Final Answer" in qvq_gradio.ask("hi", space=qvq_replica.url)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .replica import ReplicaProcess

__all__ = ["qvq_replica", "qvq_replicas", "replica_environment"]

# Variables that would make the replica (or gradio_client in it) reach the network or a token.
_DROPPED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "QVQ_SPACE")


def replica_environment() -> dict[str, str]:
    """The environment a replica child process gets: offline, no telemetry, no tokens."""
    env = {name: value for name, value in os.environ.items() if name not in _DROPPED}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def _start(args: tuple[str, ...], port: int = 0) -> ReplicaProcess:
    from .replica import ReplicaProcess  # needs the replica extra; ImportError says which

    return ReplicaProcess(list(args), env=replica_environment(), port=port).start()


@pytest.fixture(scope="session")
def qvq_replica() -> Iterator[ReplicaProcess]:
    """The replica Space in a child process, shared by the whole test session."""
    server = _start(())
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
        self._idle: dict[tuple[str, ...], list[ReplicaProcess]] = {}

    def take(self, args: tuple[str, ...]) -> ReplicaProcess | None:
        idle = self._idle.get(args, [])
        while idle:
            server = idle.pop()
            if server.pid is not None and server.alive():
                return server
            server.stop()
        return None

    def give_back(self, server: ReplicaProcess, args: tuple[str, ...]) -> None:
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
def qvq_replicas(_qvq_replica_shelf: _Shelf) -> Iterator[Callable[..., list[ReplicaProcess]]]:
    """A factory: ``qvq_replicas(n, *options)`` gives ``n`` replicas of their own to this test
    (``port=`` for a fixed port). They are free of other tests' running requests (filter their
    logs by a marker of your own); after the test they are kept for the next one, unless they
    died, hold state (a quota budget), were started on a fixed port or still run a request.
    """
    lent: list[tuple[ReplicaProcess, tuple[str, ...], bool]] = []

    def make(count: int = 1, *args: str, port: int = 0) -> list[ReplicaProcess]:
        servers = []
        for _ in range(count):
            server = None if port else _qvq_replica_shelf.take(tuple(args))
            server = server or _start(tuple(args), port=port)
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
