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
from typing import TYPE_CHECKING, Any

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


@pytest.fixture
def qvq_replicas() -> Iterator[Callable[..., list[ReplicaProcess]]]:
    """A factory: ``qvq_replicas(n, *options)`` starts ``n`` replicas; all stop after the test."""
    started: list[ReplicaProcess] = []

    def make(count: int = 1, *args: str, **kwargs: Any) -> list[ReplicaProcess]:
        servers = [_start(tuple(args), **kwargs) for _ in range(count)]
        started.extend(servers)
        return servers

    try:
        yield make
    finally:
        for server in started:
            server.stop()
