"""`chance.queue_quantile`: the queue M/M/c exceeds that rarely, checked against the
stationary distribution summed from the birth-death balance (not the closed form)."""

from __future__ import annotations

import math

import pytest

from heliostat.balance import chance


def _queue_tail(slots: int, rho: float, n: int) -> float:
    """P(more than n wait) from M/M/c's stationary distribution, summed from the birth-death
    balance (independent of the closed form `queue_quantile` solves)."""
    offered = slots * rho
    weights = [1.0]
    for k in range(1, slots + 2000):
        weights.append(weights[-1] * offered / min(k, slots))
    total = sum(weights)
    return sum(weights[slots + n + 1 :]) / total


@pytest.mark.parametrize(("slots", "rho"), [(4, 0.65), (4, 0.5), (12, 0.65), (8, 0.9)])
def test_queue_quantile_is_the_queue_exceeded_that_rarely(slots: int, rho: float) -> None:
    tail = 0.01
    n = chance.queue_quantile(slots, rho, tail)
    assert n > 0.0
    # The continuous n sits between the integer queues on either side of the tail.
    assert _queue_tail(slots, rho, math.floor(n)) >= tail * 0.999
    assert _queue_tail(slots, rho, math.ceil(n)) <= tail * 1.001


def test_queue_quantile_of_a_large_pool_and_of_saturation() -> None:
    # 256 slots at 65%: no arrival waits by chance, whatever the tail.
    assert chance.queue_quantile(256, 0.65, 0.01) == 0.0
    # Saturated: no queue is chance.
    assert chance.queue_quantile(4, 1.0, 0.01) == math.inf
    # A small pool holds more by chance than a large one at the same level.
    assert chance.queue_quantile(4, 0.65, 0.01) > chance.queue_quantile(16, 0.65, 0.01)
