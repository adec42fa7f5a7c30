"""The estimator's states as columns (`state.ServiceColumns`) and the supply read from them
(`law._column_totals`), against their row-by-row specifications: `capacity.observe` (see
test_capacity_columns), `law.rate_totals` and `capacity.per_slot_prior`, to the bit (NaN,
infinities and -0.0 included); and the columns read as the mapping by address they stand for."""

from __future__ import annotations

import math
from random import Random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.balance import capacity, compute, law
from heliostat.balance.state import ServiceColumns, ServiceRows, ServiceState
from heliostat.signals.record import Signal
from tests.balance.helpers import MODEL, T0, policy_of

_odd = st.sampled_from([0.0, -0.0, 0.5, 1.0, 3.0, 1e300, math.inf, -math.inf, math.nan])
_value = st.one_of(st.floats(min_value=-10.0, max_value=50.0), _odd)
_optional = st.one_of(st.none(), _value)
_sums = st.one_of(st.floats(min_value=0.0, max_value=500.0), _odd)


@st.composite
def _state(draw: st.DrawFn) -> ServiceState | None:
    if draw(st.integers(0, 4)) == 0:
        return None
    return ServiceState(
        draw(_sums),
        draw(_sums),
        draw(_sums),
        draw(_optional),
        draw(_optional),
        draw(_optional),
        draw(_optional),
        draw(_value),
        draw(_optional),
        draw(st.integers(0, 8)),
        draw(_optional),
        draw(_optional),
    )


@st.composite
def _signal(draw: st.DrawFn) -> Signal | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    return Signal(
        model="m",
        address="a",
        engine="vllm",
        waiting=draw(st.sampled_from([None, 0.0, -0.0, 2.0, 7.5, math.nan])),
        running=1.0,
        scraped_at=T0,
    )


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_supplys_column_sums_are_its_row_by_row_sums(data: st.DataObject) -> None:
    rows = data.draw(st.integers(1, 12))
    states = [data.draw(_state()) for _ in range(rows)]
    signals = [data.draw(_signal()) for _ in range(rows)]
    slots = [data.draw(st.sampled_from([None, 0, 8, 16])) for _ in range(rows)]
    pressures = [data.draw(_value) for _ in range(rows)]
    members = sorted(data.draw(st.sets(st.integers(0, rows - 1), min_size=1)))
    mean = data.draw(_value)
    known = [capacity.known(state) for state in states]
    prior = capacity.per_slot_prior(known, slots)

    service = capacity.service_columns(states)
    ratio, is_known = capacity.known_columns(service)
    assert repr(law._known_list(ratio, is_known)) == repr(known)
    room = capacity.rooms(slots)
    assert repr(law._per_slot_prior(ratio, is_known, room)) == repr(prior)
    columns = law._Rows(service, capacity.read_samples(signals), slots, ratio, is_known, room)
    # as the law reads it: None where a row is not live (not a member)
    pressure = law._pressure_column([pressures[r] if r in members else None for r in range(rows)])
    terms = law._terms(columns, pressure, room, prior, mean)
    at = np.array(members, dtype=np.intp)
    fast = law._column_totals(members, at, terms, slots)
    spec = law.rate_totals(members, pressures, states, slots, signals, known, prior, mean)
    assert repr(fast) == repr(spec)


@settings(max_examples=300, deadline=None)
@given(st.lists(_state(), min_size=1, max_size=10), st.randoms())
def test_the_columns_read_as_the_states_they_hold(
    states: list[ServiceState | None], random: Random
) -> None:
    addresses = tuple(f"10.0.0.{row}:8000" for row in range(len(states)))
    keys = tuple((MODEL, address) for address in addresses)
    columns = capacity.aligned({}, keys)
    assert not columns and len(columns) == 0
    columns = capacity.service_columns(states, addresses, None, keys)
    held = {a: s for a, s in zip(addresses, states, strict=True) if s is not None}
    assert repr(dict(columns)) == repr(held)  # to the bit, in row order
    assert len(columns) == len(held) and bool(columns) == bool(held)
    assert all((a in columns) == (a in held) for a in addresses)
    rows = ServiceRows(columns)
    assert repr(list(rows)) == repr(states)
    assert rows.count(None) == states.count(None)
    picked = sorted(set(range(len(states))))[::2]
    assert repr(rows.at(picked)) == repr([states[row] for row in picked])
    # The same keys: the very columns; a new policy's endpoints, by address.
    assert capacity.aligned(columns, keys) is columns
    shuffled = [*addresses, "10.0.1.1:8000"]
    random.shuffle(shuffled)
    moved = capacity.aligned(columns, tuple((MODEL, a) for a in shuffled))
    assert moved.addresses == tuple(shuffled)
    assert repr(dict(moved)) == repr({a: held[a] for a in shuffled if a in held})
    assert repr(dict(capacity.aligned(held, keys))) == repr(held)  # from a plain mapping


def test_the_laws_service_state_is_columns_read_by_address() -> None:
    """After ticks with success counters, `ModelState.service` holds every endpoint's state
    as columns, each what `capacity.observe` made of its samples."""
    policy = policy_of({"us-east": 2, "eu-west": 1})
    model = policy.spec.models[0]
    state = None
    expected: dict[str, ServiceState | None] = {}
    for tick in range(4):
        now = T0 + 2.0 * tick
        signals = {
            (MODEL, e.address): Signal(
                model=MODEL,
                address=e.address,
                engine="vllm",
                waiting=float(row % 2),
                running=4.0 + row,
                max_num_seqs=16,
                scraped_at=now,
                served_total=3.0 * (row + 1) * tick,
            )
            for row, e in enumerate(model.endpoints)
        }
        for e in model.endpoints:
            slots = e.slots or 16
            expected[e.address] = capacity.observe(
                signals[MODEL, e.address], slots, expected.get(e.address), 2.0
            )
        _, state = compute(policy, signals, state, now)
        service = state.models[MODEL].service
        assert isinstance(service, ServiceColumns)
        assert repr(dict(service)) == repr(expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_value, st.floats(allow_nan=True, allow_infinity=True)), max_size=16))
def test_the_decay_is_math_exp_of_every_row(values: list[float]) -> None:
    """`capacity._exp` (math.exp once per distinct value) is math.exp row by row, to the
    bit, repeated values, nan, -0.0 and -inf included (the law's decays are -interval /
    TAU_S: never positive)."""
    decays = [-abs(v) for v in values] + [-abs(v) for v in values[:3]]  # some repeated
    expected = np.array([math.exp(v) for v in decays], dtype=np.float64)
    got = capacity._exp(np.array(decays, dtype=np.float64))
    # To the bit where a number; a nan stays a nan (np.unique makes nans of different
    # payloads one, and no term reads a payload).
    numbers = ~np.isnan(expected)
    assert (np.isnan(got) == ~numbers).all()
    assert got[numbers].tobytes() == expected[numbers].tobytes()
