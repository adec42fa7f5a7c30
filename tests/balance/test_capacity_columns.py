"""`capacity.observe_all`, the estimator over a model's columns, against its specification,
the scalar `capacity.observe`: on random sequences of samples (counters that grow, reset,
repeat, go missing; rates given or not; queues; slots) they give exactly the same states,
tick after tick."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.balance import ControlState, capacity, compute, weights
from heliostat.balance.state import ServiceState
from heliostat.signals.record import Signal
from tests.balance.helpers import MODEL, T0, policy_of

ROWS = 4
_total = st.sampled_from([None, 0.0, 5.0, 120.0, 121.0, 400.0, math.nan])
_rate = st.sampled_from([None, None, 0.0, 2.5, -1.0, math.inf, math.nan])
_waiting = st.sampled_from([None, 0.0, 2.0, -1.0, math.nan])
_running = st.sampled_from([None, 0.0, -0.0, 3.0, 8.0, 20.0, math.inf, -2.0, math.nan])
_slots = st.sampled_from([None, 0, 8])
_age = st.sampled_from(["now", "now", "same", "older", "never", "absent"])


@st.composite
def _sample(draw: st.DrawFn, now: float, last: float | None) -> Signal | None:
    age = draw(_age)
    if age == "absent":
        return None
    scraped = {"now": now, "same": last, "older": now - 30.0, "never": None}[age]
    return Signal(
        model="m",
        address="a",
        engine="vllm",
        waiting=draw(_waiting),
        running=draw(_running),
        max_num_seqs=draw(_slots),
        scraped_at=scraped,
        served_total=draw(_total),
        served_rate=draw(_rate),
    )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_observe_all_gives_exactly_the_states_observe_gives(data: st.DataObject) -> None:
    now = 1_000.0
    spec: list[ServiceState | None] = [None] * ROWS
    fast: list[ServiceState | None] = [None] * ROWS
    last: list[float | None] = [None] * ROWS
    for _ in range(data.draw(st.integers(1, 12))):
        dt = data.draw(st.sampled_from([0.0, 0.5, 2.0, 7.0]))
        now += dt
        signals = [data.draw(_sample(now, last[row])) for row in range(ROWS)]
        slots = [data.draw(_slots) for _ in range(ROWS)]
        spec = [
            capacity.observe(signal, room, before, dt)
            for signal, room, before in zip(signals, slots, spec, strict=True)
        ]
        fast = capacity.observe_all(signals, slots, fast, dt)
        assert repr(fast) == repr(spec)  # to the bit, nan included
        assert all(type(s) is ServiceState for s in fast if s is not None)
        last = [s.scraped_at if s is not None else None for s in signals]


@settings(max_examples=2000, deadline=None)
@given(
    st.floats(min_value=-1.0, max_value=4.0, allow_nan=False),
    st.integers(0, len(weights.CAPACITY_TIERS) - 1),
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
    st.sampled_from([-1, 0, 1]),
)
def test_a_tier_said_to_hold_is_the_tier_capacity_tier_keeps(
    relative: float, current: int, uncertainty: float, lean: int
) -> None:
    """Whatever the error and whatever the load leans to (`endpoints._lean`)."""
    if weights.tier_holds(relative, current):
        assert weights.capacity_tier(relative, current, uncertainty, lean) == current


@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True)
            | st.sampled_from([edge for pair in weights._HOLDS for edge in pair]),
            st.integers(0, len(weights.CAPACITY_TIERS) - 1),
        ),
        max_size=40,
    )
)
def test_tiers_hold_is_tier_holds_row_by_row(rows: list[tuple[float, int]]) -> None:
    relative = np.array([r for r, _ in rows], dtype=np.float64)
    current = np.array([c for _, c in rows], dtype=np.intp)
    expected = [weights.tier_holds(r, c) for r, c in rows]
    assert weights.tiers_hold(relative, current).tolist() == expected


@pytest.mark.parametrize("current", range(len(weights.CAPACITY_TIERS)))
def test_the_band_a_tier_holds_in_reaches_to_near_its_edges(current: int) -> None:
    """The shortcut covers what it should: the held tier's own capacity, and ratios within
    the hysteresis of it (just inside the edges `capacity_tier` moves at with no error)."""
    held = weights.CAPACITY_TIERS[current]
    assert weights.tier_holds(held, current)
    inside = 2.0 ** (-(weights.TIER_HYSTERESIS + 0.5) / 2) * (1 + 1e-6)
    assert weights.tier_holds(held * inside, current)
    for uncertainty in (0.0, 0.05, 0.3, 1.0, 10.0):  # at the band's edges, whatever the error
        for edge in (held * inside, held / inside):
            if weights.tier_holds(edge, current):
                assert weights.capacity_tier(edge, current, uncertainty) == current
    below = held * inside / (1 + 2e-6) ** 2
    if current < len(weights.CAPACITY_TIERS) - 1:  # the last tier has none below to go to
        assert weights.capacity_tier(below, current) != current
        assert not weights.tier_holds(below, current)
    else:
        assert weights.tier_holds(below, current) and weights.tier_holds(0.0, current)


POLICY = policy_of({"us-east": 3, "eu-west": 2, "ap-southeast": 1})
_ENDPOINTS = [(e.address, e.slots) for m in POLICY.spec.models for e in m.endpoints]


@st.composite
def _fleet_ticks(draw: st.DrawFn) -> list[tuple[float, list[tuple[float, float, float, bool]]]]:
    """Per tick: its time step and each endpoint's (running, waiting, completions added,
    scraped now or not); counters grow at rates that differ between endpoints and ticks."""
    ticks = []
    for _ in range(draw(st.integers(2, 10))):
        dt = draw(st.sampled_from([0.5, 2.0, 2.0, 5.0]))
        rows = [
            (
                draw(st.sampled_from([2.0, 6.0, 8.0, 16.0])),
                draw(st.sampled_from([0.0, 0.0, 1.0, 4.0])),
                draw(st.sampled_from([0.0, 3.0, 9.0, 30.0])),
                draw(st.integers(0, 5)) > 0,
            )
            for _ in _ENDPOINTS
        ]
        ticks.append((dt, rows))
    return ticks


def _stripped(state: ControlState) -> ControlState:
    """The state without the law's columns: the next tick takes its row-by-row path (peers
    from the service records, every endpoint stepped), its specification."""
    models = {n: dataclasses.replace(m, steady=None, known=None) for n, m in state.models.items()}
    return dataclasses.replace(state, models=models)


@settings(max_examples=60, deadline=None)
@given(_fleet_ticks())
def test_the_laws_capacity_columns_give_what_its_row_by_row_path_gives(
    ticks: list[tuple[float, list[tuple[float, float, float, bool]]]],
) -> None:
    """With success counters on every endpoint: the law with its kept columns (known
    capacities, tiers tested on held rows, peers' best) publishes the same views and keeps
    the same states as without them."""
    now = T0
    totals = dict.fromkeys(_ENDPOINTS, 0.0)
    scraped = dict.fromkeys(_ENDPOINTS, T0)
    state: ControlState | None = None
    for dt, rows in ticks:
        now += dt
        signals = {}
        for (address, slots), (running, waiting, done, fresh) in zip(_ENDPOINTS, rows, strict=True):
            if fresh:
                totals[address, slots] += done
                scraped[address, slots] = now
            signals[MODEL, address] = Signal(
                model=MODEL,
                address=address,
                engine="vllm",
                waiting=waiting,
                running=running,
                max_num_seqs=16,
                scraped_at=scraped[address, slots],
                served_total=totals[address, slots],
            )
        fast_views, fast = compute(POLICY, signals, state, now)
        if state is not None:
            slow_views, slow = compute(POLICY, signals, _stripped(state), now)
            assert fast_views == slow_views
            assert dict(fast.endpoints) == dict(slow.endpoints)
            assert _stripped(fast).models == _stripped(slow).models
        state = fast


_reading = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0]))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), _reading), _reading)
def test_arrivals_written_out_is_the_clamped_sum(served: float | None, growth: float) -> None:
    state = capacity.UNOBSERVED._replace(served=served, growth=growth)
    expected = None if served is None else max(0.0, served + growth)
    assert repr(capacity.arrivals(state)) == repr(expected)  # to the bit, nan and -0.0 too
