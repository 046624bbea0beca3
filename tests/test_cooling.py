"""A Space's health in a pool, on a clock the test moves: cooling, backoff, probes, no sleep."""

from __future__ import annotations

import math

import pytest

from qvq_gradio.cooling import Health
from qvq_gradio.errors import (
    AppError,
    AuthenticationError,
    QuotaExceededError,
    SpaceConnectionError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _down() -> SpaceConnectionError:
    return SpaceConnectionError("Could not reach it", space="s")


def test_a_failure_cools_it_down_with_a_backoff_that_doubles(clock: Clock) -> None:
    health = Health(clock=clock, first=1.0, cap=120.0)
    pauses = []
    for _ in range(8):
        pauses.append(health.failure(_down(), health.outage))
        assert health.state() == "cooling"
        clock.now = health.until  # its cooling ends
        assert health.state() == "ok"
    for n, pause in enumerate(pauses, start=1):
        ceiling = min(120.0, 2.0 ** (n - 1))
        assert pause is not None and ceiling / 2 <= pause <= ceiling  # jitter: [0.5, 1] x
    health.success(0.4)
    assert health.failures_in_row == 0 and list(health.ttft) == [0.4]
    assert health.failure(_down(), health.outage) <= 1.0  # the backoff starts again


def test_the_questions_of_one_outage_are_one_failure(clock: Clock) -> None:
    health = Health(clock=clock)
    sent_during = health.outage
    assert health.failure(_down(), sent_during) is not None
    # The other questions in flight when it struck fail too: no longer cooling, no new count.
    assert health.failure(_down(), sent_during) is None
    assert health.failure(_down(), sent_during) is None
    assert (health.failed, health.failures_in_row, health.outage) == (3, 1, 1)


def test_quota_cools_for_the_wait_it_names_and_is_never_probed(clock: Clock) -> None:
    health = Health(clock=clock)
    error = QuotaExceededError("out of quota", retry_after=588.0, space="s")
    assert health.failure(error, health.outage) == 588.0
    assert health.probe_at == math.inf
    clock.now += 587.0
    assert health.state() == "cooling" and not health.take_probe()
    assert health.left() == pytest.approx(1.0)
    clock.now += 1.0
    assert health.state() == "ok"
    no_wait = QuotaExceededError("out of quota", retry_after=None, space="s")
    assert health.failure(no_wait, health.outage) == health.quota_default


def test_a_cooling_space_is_probed_and_used_again_once_back(clock: Clock) -> None:
    health = Health(clock=clock, first=600.0, cap=600.0, probe_every=2.0)
    health.failure(_down(), health.outage)
    assert not health.take_probe()  # not due yet
    clock.now += 2.0
    assert health.take_probe()
    assert not health.take_probe()  # one at a time
    assert not health.probed(back=False, outage=health.outage)
    assert health.state() == "cooling" and not health.take_probe()
    clock.now += 2.0
    assert health.take_probe()
    assert health.probed(back=True, outage=health.outage)
    assert health.state() == "ok"


def test_a_probe_from_an_earlier_outage_does_not_end_a_new_one(clock: Clock) -> None:
    health = Health(clock=clock, first=600.0, cap=600.0)
    health.failure(_down(), health.outage)
    clock.now += 2.0
    assert health.take_probe()
    taken_in = health.outage
    clock.now = health.until
    health.failure(_down(), health.outage)  # a new outage while the probe was out
    assert not health.probed(back=True, outage=taken_in)
    assert health.state() == "cooling"


def test_an_auth_failure_disables_it_and_an_app_error_does_not_cool(clock: Clock) -> None:
    health = Health(clock=clock)
    assert health.failure(AppError("the app raised", space="s"), health.outage) is None
    assert health.state() == "ok" and health.failed == 1
    health.failure(AuthenticationError("refused", space="s"), health.outage)
    assert health.state() == "disabled" and not health.take_probe()
