"""`endpoints._all_fresh`, the whole column's freshness from its oldest scrape, says what
the row-by-row test says (hypothesis, with nan and infinities among the times); a tick at
rest hands back its columns' very records."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.balance import compute
from heliostat.balance.endpoints import _all_fresh
from heliostat.balance.state import ControlState, EndpointStates
from tests.balance.helpers import MODEL, T0, addresses, policy_of, signal

TIMES = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=500, deadline=None)
@given(st.lists(TIMES, max_size=12), TIMES, st.floats(0.0, 1e6))
def test_the_oldest_scrape_says_whether_every_one_is_fresh(
    scraped: list[float], now: float, stale_after: float
) -> None:
    assert _all_fresh(scraped, now, stale_after) == all(now - t <= stale_after for t in scraped)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(1e9, 2e9), min_size=1, max_size=12), st.floats(0.0, 30.0))
def test_near_the_limit_one_ulp_decides(scraped: list[float], stale_after: float) -> None:
    now = min(scraped) + stale_after  # the oldest right at the limit, then one ulp past it
    assert _all_fresh(scraped, now, stale_after) == all(now - t <= stale_after for t in scraped)
    later = math.nextafter(now, math.inf)
    assert _all_fresh(scraped, later, stale_after) == all(later - t <= stale_after for t in scraped)


def test_a_tick_at_rest_keeps_every_record() -> None:
    policy = policy_of({"us-east": 3, "eu-west": 2})
    found = addresses(policy)

    def tick(now: float, state: ControlState | None) -> ControlState:
        signals = {(MODEL, a): signal(a, waiting=1.0, kv=0.3, at=now) for a in found}
        return compute(policy, signals, state, now)[1]

    state = tick(T0, None)
    for step in range(1, 4):
        state = tick(T0 + 2 * step, state)
    before = state.endpoints
    after = tick(T0 + 10, state).endpoints
    assert isinstance(before, EndpointStates) and isinstance(after, EndpointStates)
    held, now = before.column(MODEL), after.column(MODEL)
    assert held is not None and now is not None
    assert now is not held and now.states is held.states  # the very records, no copy
    assert now.scraped == (T0 + 10,) * len(found)  # only the new samples' times
    assert dict(after.items()) == {
        key: value._replace(scraped_at=T0 + 10) for key, value in before.items()
    }
