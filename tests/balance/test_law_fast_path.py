"""The law's fast path (`endpoints.advance`, the `Steady` memos) against its specification,
the scalar `endpoints.step`: on random sequences of signals they give exactly the same
states (weights, health, reasons, views, and every remembered field), tick after tick."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliostat.balance import ControlState, Views, capacity, compute, endpoints, weights
from heliostat.balance.assemble import routable_weight
from heliostat.balance.endpoints import advance, region_peers, step
from heliostat.balance.state import (
    EndpointState,
    EndpointStates,
    ServiceRows,
    ServiceState,
    SteadyColumn,
)
from heliostat.balance.view import EndpointView, Health, endpoint_view, endpoint_views
from heliostat.policy import Model
from heliostat.signals.record import Signal
from tests.balance.helpers import MODEL, T0, policy_of

POLICY = policy_of({"us-east": 3, "eu-west": 2, "ap-southeast": 1})
FOUND = POLICY.model(MODEL)
assert FOUND is not None
LLAMA: Model = FOUND

# Few distinct values, so that readings repeat and endpoints reach (and leave) fixed points;
# with the edge cases the readers let through (absent, negative, not finite).
_waiting = st.sampled_from([None, 0.0, 1.0, 3.0, 9.0, -1.0, math.nan, math.inf])
_running = st.sampled_from([None, 0.0, 2.0, 6.0, 16.0])
_kv = st.sampled_from([None, 0.0, 0.3, 0.85, 0.95, 2.5])
_slots = st.sampled_from([None, 8, 16])
_failures = st.sampled_from([0, 0, 0, 1, 5])
_served = st.sampled_from([None, None, 100.0, 180.0, 400.0])
# When the sample was scraped: now, the last tick's (the same sample seen again), long ago
# (stale), or never.
_age = st.sampled_from(["now", "now", "now", "same", "stale", "never"])


@st.composite
def _reading(draw: st.DrawFn) -> tuple[object, ...] | None:
    if draw(st.integers(0, 9)) == 0:
        return None  # no signal for this endpoint
    return (
        draw(_waiting),
        draw(_running),
        draw(_kv),
        draw(_slots),
        draw(_failures),
        draw(_served),
        draw(_age),
    )


@st.composite
def _ticks(draw: st.DrawFn) -> list[tuple[float, list[tuple[object, ...] | None], set[int]]]:
    """Per tick: the time step, each endpoint's reading (often the last one again), the
    drained endpoints."""
    count = len(LLAMA.endpoints)
    ticks = []
    last: list[tuple[object, ...] | None] = [None] * count
    for _ in range(draw(st.integers(1, 14))):
        dt = draw(st.sampled_from([0.0, 0.5, 2.0, 2.0, 7.0]))
        readings = []
        for i in range(count):
            keep = last[i] is not None and draw(st.integers(0, 3)) > 0
            readings.append(last[i] if keep else draw(_reading()))
        last = readings
        drained = set(draw(st.sets(st.integers(0, count - 1), max_size=1)))
        ticks.append((dt, readings, drained))
    return ticks


def _signal(
    address: str, reading: tuple[object, ...] | None, now: float, last: float | None
) -> Signal | None:
    if reading is None:
        return None
    waiting, running, kv, slots, failures, served, age = reading
    scraped = {"now": now, "same": last if last is not None else now, "stale": now - 60.0}.get(
        str(age)
    )
    return Signal(
        model=MODEL,
        address=address,
        engine="vllm",
        waiting=waiting,  # type: ignore[arg-type]
        running=running,  # type: ignore[arg-type]
        kv_usage=kv,  # type: ignore[arg-type]
        max_num_seqs=slots,  # type: ignore[arg-type]
        served_total=served,  # type: ignore[arg-type]
        scraped_at=scraped,
        error="timeout" if failures else None,
        consecutive_failures=failures,  # type: ignore[arg-type]
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _ticks(),
    st.booleans(),
    st.sampled_from(
        [(1, 2), (1, endpoints.STEP_BLOCK), (endpoints.VECTOR_ROWS, endpoints.STEP_BLOCK)]
    ),
)
def test_fast_path_gives_exactly_the_scalar_steps_states(
    ticks: list[tuple[float, list[tuple[object, ...] | None], set[int]]],
    hashing: bool,
    columns: tuple[int, int],
) -> None:
    """... also with every moved row stepped over columns (`endpoints._step_rows`, which a
    fleet this small only takes with `VECTOR_ROWS` at 1), in one block or in blocks of two
    rows (`STEP_BLOCK`)."""
    kept = endpoints.VECTOR_ROWS, endpoints.STEP_BLOCK
    endpoints.VECTOR_ROWS, endpoints.STEP_BLOCK = columns
    try:
        _fast_path_against_step(ticks, hashing)
    finally:
        endpoints.VECTOR_ROWS, endpoints.STEP_BLOCK = kept


def _fast_path_against_step(
    ticks: list[tuple[float, list[tuple[object, ...] | None], set[int]]], hashing: bool
) -> None:
    keys = [(MODEL, e.address) for e in LLAMA.endpoints]
    states: dict[tuple[str, str], EndpointState] = {}
    service: dict[str, ServiceState] = {}
    column: SteadyColumn | None = None
    columns: SteadyColumn | None = None  # the same, fed the estimator's columns as the law is
    last_scrape: list[float | None] = [None] * len(keys)
    now = T0
    for dt, readings, drained_at in ticks:
        now += dt
        signals = [
            _signal(e.address, r, now, last_scrape[i])
            for i, (e, r) in enumerate(zip(LLAMA.endpoints, readings, strict=True))
        ]
        static = all(s is None for s in signals)
        gain = weights.alpha(dt)
        drained = frozenset(keys[i] for i in drained_at)
        peers = region_peers(LLAMA.endpoints, MODEL, states, service)
        observed_all: list[ServiceState | None] = []
        new_service: dict[str, ServiceState] = {}
        for endpoint, signal in zip(LLAMA.endpoints, signals, strict=True):
            slots = endpoint.slots or (signal.max_num_seqs if signal is not None else None)
            observed = capacity.observe(signal, slots, service.get(endpoint.address), dt)
            if observed is not None:
                new_service[endpoint.address] = observed
            observed_all.append(observed)
        column = advance(
            LLAMA,
            keys,
            signals,
            observed_all,
            [states.get(key) for key in keys],
            column,
            now,
            gain,
            drained,
            static,
            hashing,
            peers,
        )
        # As the law runs it: the service states as the estimator's columns (each row's
        # state composed when read) and each row's known capacity from them.
        held = capacity.service_columns(observed_all)
        ratio, is_known = capacity.known_columns(held)
        known = [r if k else None for r, k in zip(ratio.tolist(), is_known.tolist(), strict=True)]
        columns = advance(
            LLAMA,
            keys,
            signals,
            ServiceRows(held),
            [states.get(key) for key in keys],
            columns,
            now,
            gain,
            drained,
            static,
            hashing,
            peers,
            known,
            (ratio, is_known),
        )
        # the tier column advance carries (set only at moved rows) is every record's tier
        for made in (column, columns):
            assert made.tiers is not None
            assert made.tiers.tolist() == [record.tier for record in made.states]
        read = EndpointStates({MODEL: column})
        for endpoint, key, signal, observed, got, by_columns in zip(
            LLAMA.endpoints,
            keys,
            signals,
            observed_all,
            column.records(),
            columns.records(),
            strict=True,
        ):
            expected = step(
                endpoint,
                LLAMA,
                signal,
                states.get(key),
                now,
                gain,
                key in drained,
                static,
                hashing,
                peers.get(endpoint.region),
                observed,
            )
            # repr: exact to the bit for floats (a NaN equals itself, -0.0 is not 0.0)
            assert repr(got) == repr(expected)
            assert repr(by_columns) == repr(expected)
            assert repr(read[key]) == repr(expected)  # as ControlState.endpoints reads it
            if signal is not None and signal.scraped_at is not None:
                last_scrape[keys.index(key)] = signal.scraped_at
        states = dict(read)
        service = new_service


def _constant(now: float) -> dict[tuple[str, str], Signal]:
    return {
        (MODEL, e.address): Signal(
            model=MODEL,
            address=e.address,
            engine="vllm",
            waiting=1.0,
            running=6.0,
            kv_usage=0.3,
            max_num_seqs=16,
            scraped_at=now,
        )
        for e in LLAMA.endpoints
    }


def _without_memos(state: ControlState) -> ControlState:
    models = {n: dataclasses.replace(m, steady=None) for n, m in state.models.items()}
    return dataclasses.replace(state, models=models)


def test_endpoints_with_unmoved_readings_skip_their_arithmetic_and_keep_their_view() -> None:
    """Constant readings, a new scrape each tick: from the second tick on every endpoint is
    at a fixed point; its state is the last one with the new scrape time, its view the very
    same object (nothing to translate), and the law's output is what it is without memos."""
    _, state = compute(POLICY, _constant(T0), None, T0)
    for tick in range(1, 4):
        now = T0 + 2.0 * tick
        column = state.models[MODEL].steady
        assert column is not None and column.model is LLAMA
        assert all(readings is not None for readings in column.readings)
        fast_views, fast = compute(POLICY, _constant(now), state, now)
        slow_views, slow = compute(POLICY, _constant(now), _without_memos(state), now)
        assert fast_views == slow_views
        assert fast.endpoints == slow.endpoints
        for key, before in state.endpoints.items():
            assert fast.endpoints[key].view is before.view
            assert fast.endpoints[key].scraped_at == now
        state = fast


def test_a_moved_reading_or_a_new_policy_leaves_the_fixed_point() -> None:
    _, state = compute(POLICY, _constant(T0), None, T0)
    _, state = compute(POLICY, _constant(T0 + 2), state, T0 + 2)
    signals = _constant(T0 + 4)
    moved = (MODEL, LLAMA.endpoints[0].address)
    signals[moved] = dataclasses.replace(signals[moved], kv_usage=0.95)
    _, after = compute(POLICY, signals, state, T0 + 4)
    assert after.endpoints[moved].level != state.endpoints[moved].level
    column = after.models[MODEL].steady
    assert column is not None and column.readings[0] is None  # moving: the EWMA is under way
    # A policy equal in content but a new object: the memos are not trusted across it.
    again = policy_of({"us-east": 3, "eu-west": 2, "ap-southeast": 1})
    _, fresh = compute(again, signals, after, T0 + 6)
    renewed = fresh.models[MODEL].steady
    assert renewed is not None and renewed.model is not LLAMA


@given(
    st.text(max_size=12),
    st.text(max_size=12),
    st.none() | st.text(max_size=4),
    st.integers(0, 1 << 40),
    st.sampled_from(list(Health)),
    st.dictionaries(st.text(max_size=4), st.none() | st.integers() | st.text(max_size=4)),
)
def test_endpoint_view_builds_what_the_constructor_builds(
    address: str,
    region: str,
    version: str | None,
    weight: int,
    health: Health,
    reason: dict[str, str | int | None],
) -> None:
    built = endpoint_view(address, region, version, weight, health, reason)
    expected = EndpointView(address, region, version, weight, health, reason)
    assert type(built) is EndpointView
    assert built == expected
    assert repr(built) == repr(expected)
    assert built.reason is reason  # the very mapping, as the constructor keeps it
    assert dataclasses.astuple(built) == dataclasses.astuple(expected)
    columns = endpoint_views(
        [address, region], [region, address], [version, None], [weight, 1], [health] * 2,
        [reason, {}], 2,
    )  # fmt: skip
    assert [type(v) for v in columns] == [EndpointView, EndpointView]
    assert columns == [expected, EndpointView(region, address, None, 1, health, {})]
    assert columns[0].reason is reason


def test_a_held_endpoint_whose_capacity_falls_behind_its_peers_changes_tier() -> None:
    """Readings that never move (a fixed point) while the success counters show one replica
    serving a third of its region's best: its service estimate firms up tick after tick,
    and once the evidence allows, its capacity tier drops under the held record (`_moving`
    finds it among the steady rows); every tick the law's output is what it is without
    memos."""
    slow = next(e.address for e in LLAMA.endpoints if e.region == "us-east")  # of three

    def signals(now: float) -> dict[tuple[str, str], Signal]:
        found = _constant(now)
        for (model, address), signal in found.items():
            rate = 10.0 if address == slow else 30.0
            found[model, address] = dataclasses.replace(
                signal, served_rate=rate, served_total=rate * (now - T0)
            )
        return found

    _, state = compute(POLICY, signals(T0), None, T0)
    moved_while_held = False
    for tick in range(1, 120):
        now = T0 + 2.0 * tick
        column = state.models[MODEL].steady
        assert column is not None
        row = column.keys.index((MODEL, slow))
        held = column.readings[row] is not None
        fast_views, fast = compute(POLICY, signals(now), state, now)
        slow_views, reference = compute(POLICY, signals(now), _without_memos(state), now)
        assert fast_views == slow_views
        assert repr(dict(fast.endpoints)) == repr(dict(reference.endpoints))
        tier_before, tier_after = (
            state.endpoints[MODEL, slow].tier,
            fast.endpoints[MODEL, slow].tier,
        )
        moved_while_held = moved_while_held or (held and tier_after != tier_before)
        kept = fast.models[MODEL].steady
        assert kept is not None and kept.tiers is not None
        assert kept.tiers.tolist() == [record.tier for record in kept.states]
        state = fast
    assert moved_while_held
    assert state.endpoints[MODEL, slow].tier > 0


def test_neutral_locality_weights_are_kept_per_region_and_redone_where_endpoints_moved() -> None:
    """The neutral view's locality weight is the routable weight of its endpoints; the law
    keeps it per region with the region's tuple of views, so a tick where nothing moved
    reuses them all, and one where an endpoint moved redoes its region's alone."""

    def derived_of(state: ControlState) -> Any:
        column = state.models[MODEL].steady
        assert column is not None
        return column.derived

    def check(views: Views) -> None:
        for cluster in views.neutral.clusters:
            for locality in cluster.localities:
                assert locality.weight == max(1, routable_weight(locality.endpoints))

    views, state = compute(POLICY, _constant(T0), None, T0)
    check(views)
    views, state = compute(POLICY, _constant(T0 + 2), state, T0 + 2)
    check(views)
    before = derived_of(state)
    views, state = compute(POLICY, _constant(T0 + 4), state, T0 + 4)
    check(views)
    assert derived_of(state).routable is before.routable  # nothing moved: all kept
    signals = _constant(T0 + 6)
    moved = LLAMA.endpoints[0]
    signals[MODEL, moved.address] = dataclasses.replace(
        signals[MODEL, moved.address], consecutive_failures=LLAMA.thresholds.failures
    )
    views, after = compute(POLICY, signals, state, T0 + 6)
    check(views)
    kept, redone = derived_of(state).routable, derived_of(after).routable
    assert redone[moved.region] < kept[moved.region]  # unhealthy: out of the routable sum
    assert {r: w for r, w in redone.items() if r != moved.region} == {
        r: w for r, w in kept.items() if r != moved.region
    }
