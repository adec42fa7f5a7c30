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


TTFT_S = 0.5


def supply(free: float, backlog: float = 0.0) -> overflow.Supply:
    """16 slots of 20/s in all, at a level of 0.8."""
    return overflow.Supply(
        endpoints=4,
        capacity=19.0,
        raw=20.0,
        load=10.0,
        rates=True,
        slots=16,
        free=free,
        backlog=backlog,
        level=0.8,
    )


def before(free: float) -> RegionState:
    return RegionState(capacity=19.0, load=10.0, demand=10.0, overflowing=False, free=free)


def rising(own: overflow.Supply, last: RegionState, measured: float, source: str) -> float:
    return overflow.rising(own, last, measured, source, 10.0, TTFT_S)


def test_rising_is_what_the_measured_rate_stands_beyond_the_smoothed_beyond_chance() -> None:
    # 12/s over the 3 s window deviates by 2/s by chance: 12 - 2 = 10, the smoothed level.
    assert rising(supply(4.0), before(4.0), 12.0, demand.GATEWAYS) == 0.0
    assert rising(supply(4.0), before(4.0), 16.0, demand.GATEWAYS) == pytest.approx(
        16.0 - math.sqrt(16.0 / demand.WINDOW_S) - 10.0
    )
    # Not measured at its gateways (inferred from engines): nothing read as a rise.
    assert rising(supply(4.0), before(4.0), 16.0, demand.ENGINES) == 0.0


def test_a_rescuer_full_twice_with_a_queue_beyond_chance_and_users_rising_is_going_full() -> None:
    """Its slots all in use at this tick and the last, a queue beyond what the SLO tolerates
    and beyond what its level holds by chance, and its users measured above the smoothed
    level at all: its queue grows, the room the plan sees is none."""
    queue = 2.0 * max(overflow.tolerated(supply(0.0), TTFT_S), overflow.chance_queue(supply(0.0)))
    assert overflow.beyond_chance(supply(0.0, queue), TTFT_S)
    assert rising(supply(0.0, queue), before(0.0), 11.0, demand.GATEWAYS) == math.inf
    # Its users steady (a neighbour's surge): its room stands.
    assert rising(supply(0.0, queue), before(0.0), 9.5, demand.GATEWAYS) == 0.0
    # Full at this tick only: not yet.
    assert rising(supply(0.0, queue), before(3.0), 11.0, demand.GATEWAYS) == 0.0
    # Full twice with a queue its level holds by chance (a pool at 80% fills now and then,
    # a share lent into it or not): its room stands. Taken on that alone, a forced 30% share
    # into a 12-slot rescuer at 65% placed 8 of ap-southeast's requests there instead of 12
    # (tests/planet/test_prefix_lending.py).
    assert rising(supply(0.0, 1.0), before(0.0), 11.0, demand.GATEWAYS) == 0.0
