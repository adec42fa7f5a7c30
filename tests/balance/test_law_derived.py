"""The law's carried derivation (`law._derive`): each row's view and pressure, each region's
tuple of views and its live rows, redone only where rows moved, are what reading every
record gives (`law._derive_all`), tick after tick; a region none of whose views changed
keeps its very tuple, which translation then finds by identity."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliostat.balance import ControlState, compute, law
from heliostat.balance.assemble import routable_weight
from heliostat.balance.state import SteadyColumn
from tests.balance.helpers import MODEL, T0
from tests.balance.test_law_fast_path import LLAMA, POLICY, _constant, _signal, _ticks


def _assert_derived(column: SteadyColumn) -> None:
    carried, fresh = column.derived, law._derive_all(column)
    assert isinstance(carried, law._Derived)
    assert len(carried.views) == len(fresh.views)
    assert all(a is b for a, b in zip(carried.views, fresh.views, strict=True))
    assert carried.pressures == fresh.pressures
    assert carried.members.keys() == fresh.members.keys()
    for region, members in fresh.members.items():
        assert all(a is b for a, b in zip(carried.members[region], members, strict=True))
        assert len(carried.members[region]) == len(members)
    assert carried.live == fresh.live
    assert carried.at.keys() == fresh.live.keys()
    for region, rows in fresh.live.items():
        assert carried.at[region].tolist() == rows
    # each region's routable weight, carried by the moved rows' differences, is its sum
    assert carried.routable == fresh.routable
    assert fresh.routable == {r: routable_weight(m) for r, m in fresh.members.items()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ticks(), st.booleans())
def test_the_carried_derivation_is_every_records(
    ticks: list[tuple[float, list[tuple[object, ...] | None], set[int]]], patch_all: bool
) -> None:
    """(`patch_all`: the moved rows are patched in however many they are, else beyond one
    in `law._MOST` every record is read.)"""
    most = law._MOST
    law._MOST = 0 if patch_all else most
    try:
        _tick_through(ticks)
    finally:
        law._MOST = most


def _tick_through(ticks: list[tuple[float, list[tuple[object, ...] | None], set[int]]]) -> None:
    keys = [(MODEL, e.address) for e in LLAMA.endpoints]
    last_scrape: list[float | None] = [None] * len(keys)
    state: ControlState | None = None
    now = T0
    for dt, readings, drained_at in ticks:
        now += dt
        signals = {}
        for i, (e, r) in enumerate(zip(LLAMA.endpoints, readings, strict=True)):
            signal = _signal(e.address, r, now, last_scrape[i])
            if signal is not None:
                signals[keys[i]] = signal
                last_scrape[i] = signal.scraped_at
        drained = frozenset(keys[i] for i in drained_at)
        _, state = compute(POLICY, signals, state, now, drained)
        column = state.models[MODEL].steady
        assert column is not None
        _assert_derived(column)


def test_a_region_whose_views_held_keeps_its_tuple() -> None:
    """One endpoint moves: its region's tuple is new, every other region's is the last
    tick's very object (and so is the live rows' list)."""
    _, state = compute(POLICY, _constant(T0), None, T0)
    _, state = compute(POLICY, _constant(T0 + 2), state, T0 + 2)
    before = state.models[MODEL].steady
    assert before is not None and isinstance(before.derived, law._Derived)
    signals = _constant(T0 + 4)
    moved = LLAMA.endpoints[0]
    signals[MODEL, moved.address] = dataclasses.replace(
        signals[MODEL, moved.address], kv_usage=0.99, waiting=50.0
    )
    _, after = compute(POLICY, signals, state, T0 + 4)
    column = after.models[MODEL].steady
    assert column is not None and column.moved == (0,)
    _assert_derived(column)
    carried = column.derived
    assert isinstance(carried, law._Derived)
    for region, members in carried.members.items():
        if region == moved.region:
            assert members is not before.derived.members[region]
        else:
            assert members is before.derived.members[region]
            assert carried.live[region] is before.derived.live[region]
