"""Queue growth reads the previous sample as the law read it: a reading the law did not
trust (not finite, negative) must not turn the next sample's growth into NaN or inflate it."""

from __future__ import annotations

import math

from heliostat.balance import compute
from heliostat.balance.saturation import NO_GROWTH, Growth, queue_growth
from tests.balance.helpers import MODEL, T0, addresses, policy_of, signal


def test_a_previous_reading_that_was_not_finite_gives_no_growth() -> None:
    assert queue_growth(5.0, math.nan, NO_GROWTH) == NO_GROWTH
    assert queue_growth(5.0, math.inf, NO_GROWTH) == NO_GROWTH


def test_a_negative_previous_reading_counts_as_an_empty_queue() -> None:
    assert queue_growth(5.0, -3.0, Growth(2.0, 0.0)) == Growth(5.0, 2.0)


def test_the_growth_the_law_remembers_after_a_nan_queue_is_a_number() -> None:
    policy = policy_of()
    address = addresses(policy)[0]
    key = (MODEL, address)
    state = None
    for tick, waiting in enumerate([2.0, math.nan, 6.0, 9.0]):
        now = T0 + tick * 2.0
        _, state = compute(policy, {key: signal(address, waiting=waiting, at=now)}, state, now)
        assert state is not None
        growth = state.endpoints[key].growth
        assert not math.isnan(growth.rise) and not math.isnan(growth.trend), (tick, growth)
    assert state is not None
    assert state.endpoints[key].growth == Growth(3.0, 0.0)  # one rise after the gap: a blip
