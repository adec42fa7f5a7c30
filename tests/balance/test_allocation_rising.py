"""A rescuer whose own users are measured rising offers others less room (`Origin.rising`,
`overflow.rising`): the plan reads a smoothed demand that lags a ramp by seconds, and when
every region ramps (a full planet) the room each had on its lagging level was lent into
neighbours ramping too, then taken by its own users within seconds."""

from __future__ import annotations

import dataclasses
import math

import pytest

from heliostat.balance import allocation, demand, overflow
from heliostat.balance.allocation import Origin
from heliostat.balance.state import RegionState

CEILING = 0.9


def planet(rising: float) -> dict[str, Origin]:
    """An origin 4/s beyond its capacity; its one neighbour at half its capacity."""
    return {
        "a": Origin(demand=14.0, capacity=10.0, reach={"b": 80.0}),
        "b": Origin(demand=10.0, capacity=20.0, reach={"a": 80.0}, rising=rising),
    }


def test_a_steady_rescuer_lends_its_room() -> None:
    plan = allocation.allocate(planet(0.0), CEILING)
    assert plan.placed["a"]["b"] == pytest.approx(4.0)
    assert plan.room["b"] == pytest.approx(8.0)  # 0.9 x 20 - 10


def test_a_rising_rescuer_offers_only_the_room_its_own_rise_leaves() -> None:
    plan = allocation.allocate(planet(6.0), CEILING)
    assert plan.room["b"] == pytest.approx(2.0)
    assert plan.placed["a"].get("b", 0.0) == pytest.approx(2.0)
    # What it cannot lend is served home, strained, then refused: never into b's rise.
    assert plan.placed["a"]["a"] + plan.unplaced["a"] == pytest.approx(12.0)


def test_a_rescuer_going_full_lends_nothing_not_even_its_strain() -> None:
    origins = planet(math.inf)
    origins["b"] = dataclasses.replace(origins["b"], strain=5.0)
    plan = allocation.allocate(origins, CEILING)
    assert plan.room["b"] == 0.0
    assert "b" not in plan.placed["a"]
    assert plan.placed["b"] == {"b": pytest.approx(10.0)}  # its own users still at home


def supply(free: float) -> overflow.Supply:
    return overflow.Supply(
        endpoints=4, capacity=19.0, raw=20.0, load=10.0, rates=True, slots=16, free=free
    )


def before(free: float) -> RegionState:
    return RegionState(capacity=19.0, load=10.0, demand=10.0, overflowing=False, free=free)


def test_rising_is_what_the_measured_rate_stands_beyond_the_smoothed_beyond_chance() -> None:
    # 12/s over the 3 s window deviates by 2/s by chance: 12 - 2 = 10, the smoothed level.
    assert overflow.rising(supply(4.0), before(4.0), 12.0, demand.GATEWAYS, 10.0) == 0.0
    assert overflow.rising(supply(4.0), before(4.0), 16.0, demand.GATEWAYS, 10.0) == pytest.approx(
        16.0 - math.sqrt(16.0 / demand.WINDOW_S) - 10.0
    )
    # Not measured at its gateways (inferred from engines): nothing read as a rise.
    assert overflow.rising(supply(4.0), before(4.0), 16.0, demand.ENGINES, 10.0) == 0.0


def test_a_rescuer_with_its_slots_full_twice_and_demand_rising_is_going_full() -> None:
    """Its slots all in use at this tick and the last, and its users measured above the
    smoothed level at all: its queue grows, the room the plan sees is none."""
    assert overflow.rising(supply(0.0), before(0.0), 11.0, demand.GATEWAYS, 10.0) == math.inf
    # Full by chance with its users steady (a neighbour's surge): its room stands.
    assert overflow.rising(supply(0.0), before(0.0), 9.5, demand.GATEWAYS, 10.0) == 0.0
    # Full at this tick only: not yet.
    assert overflow.rising(supply(0.0), before(3.0), 11.0, demand.GATEWAYS, 10.0) == 0.0
