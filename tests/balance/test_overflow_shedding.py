"""Bounded overflow and batch shedding, open loop and against a stylised fleet (`Plant`)."""

from __future__ import annotations

import itertools

import pytest

from heliostat.balance import ControlState, TrafficClass, Views, compute, describe
from tests.balance.helpers import (
    INTERVAL,
    MODEL,
    T0,
    Plant,
    cluster,
    locality,
    policy_of,
    pressure_signals,
    shares_in,
)

UNEVEN = {"us-east": 4, "eu-west": 2, "ap-southeast": 1}


def _batch(views: Views, region: str | None) -> float:
    return cluster(views, region, f"{MODEL}.batch").drop_overload_percent


def test_a_region_at_twice_capacity_overflows_to_its_nearest_in_budget_neighbour() -> None:
    policy = policy_of(UNEVEN)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    history = []
    for views, _ in plant.run(15):
        history.append((shares_in(views, "eu-west").get("us-east", 0.0), plant.pressures()))
    sent = [share for share, _ in history]
    assert max(sent) <= 0.3 + 1e-9  # overflow.max_share
    assert all(later - earlier <= 0.1 + 1e-9 for earlier, later in itertools.pairwise(sent))
    assert sent[-1] == pytest.approx(0.3)
    # The rescuer never goes past its threshold, before or after the overflow.
    assert all(pressures["us-east"] < 1.0 for _, pressures in history)
    final = plant.views
    assert final is not None
    eu = cluster(final, "eu-west")
    assert [(loc.region, loc.priority, loc.weight) for loc in eu.localities] == [
        ("eu-west", 0, 700),
        ("us-east", 0, 300),
        ("ap-southeast", 1, 1000),  # 160 ms: beyond the 150 ms budget, never a rescuer
    ]
    assert all(
        e.reason["overflow"] == "sends 30% to us-east" for e in locality(eu, "eu-west").endpoints
    )
    assert all(
        e.reason["overflow"] == "receives 30% of eu-west" for e in locality(eu, "us-east").endpoints
    )
    # Only eu-west's gateways send: every other view is untouched.
    us = cluster(final, "us-east")
    assert [(loc.region, loc.priority, loc.weight) for loc in us.localities] == [
        ("us-east", 0, 1000),
        ("eu-west", 1, 1000),
        ("ap-southeast", 2, 1000),
    ]
    assert all("overflow" not in e.reason for e in us.endpoints())
    assert all("overflow" not in e.reason for e in cluster(final, None).endpoints())


def test_after_convergence_the_closed_loop_publishes_identical_views() -> None:
    policy = policy_of(UNEVEN)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    ticks = plant.run(25)
    last = ticks[-1][0]
    assert all(views == last for views, _ in ticks[-8:])
    state = ticks[-1][1].models[MODEL].regions
    # The demand estimate sees through the overflow in effect: 4.0 and 1.2, not 2.8 and 2.4.
    assert state["eu-west"].demand == pytest.approx(4.0)
    assert state["us-east"].demand == pytest.approx(1.2)


def test_the_rescuers_own_demand_is_reserved_first() -> None:
    policy = policy_of(UNEVEN)
    # us-east runs at 0.8 of its 4 endpoints: 0.9 * 4 - 3.2 = 0.4 spare = 10% of eu-west's 4.0.
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 3.2, "ap-southeast": 0.5})
    for views, _ in plant.run(15):
        assert shares_in(views, "eu-west").get("us-east", 0.0) <= 0.1 + 1e-9
        assert plant.pressures()["us-east"] <= 0.9 + 1e-9
    assert shares_in(views, "eu-west") == pytest.approx({"eu-west": 0.9, "us-east": 0.1})


def test_several_rescuers_nearest_first_within_max_share() -> None:
    policy = policy_of(UNEVEN, budget=200.0, max_share=0.5)
    # eu-west at 2.0: excess 1 - 0.9/2 = 55%, capped at 50%. us-east (80 ms) has room for
    # 0.4 / 4.0 = 10%, ap-southeast (160 ms) for 0.8 / 4.0 = 20%.
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 3.2, "ap-southeast": 0.1})
    views, _ = plant.run(20)[-1]
    assert shares_in(views, "eu-west") == pytest.approx(
        {"eu-west": 0.7, "us-east": 0.1, "ap-southeast": 0.2}
    )
    eu = cluster(views, "eu-west")
    assert [(loc.region, loc.priority, loc.weight) for loc in eu.localities] == [
        ("eu-west", 0, 700),
        ("us-east", 0, 100),
        ("ap-southeast", 0, 200),
    ]
    assert locality(eu, "eu-west").endpoints[0].reason["overflow"] == (
        "sends 10% to us-east, 20% to ap-southeast"
    )
    assert max(plant.pressures()[r] for r in ("us-east", "ap-southeast")) <= 0.9 + 1e-9


def test_no_overflow_when_the_neighbours_are_saturated_too() -> None:
    policy = policy_of(UNEVEN)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 4.4, "ap-southeast": 0.5})
    for views, _ in plant.run(10):
        for region in ("eu-west", "us-east"):
            assert shares_in(views, region) == {region: 1.0}


def test_overflow_backs_off_when_the_rescuer_fills_up() -> None:
    policy = policy_of(UNEVEN)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    plant.run(12)
    views = plant.views
    assert views is not None
    assert shares_in(views, "eu-west")["us-east"] == pytest.approx(0.3)
    plant.demand["us-east"] = 4.4  # us-east now needs more than it has
    ticks = plant.run(6)
    assert shares_in(ticks[0][0], "eu-west") == {"eu-west": 1.0}  # cut within one tick


def test_overflow_has_hysteresis_around_the_threshold() -> None:
    policy = policy_of(UNEVEN)
    # eu-west's demand oscillates around its capacity: 0.975, 1.025, 0.975, ...
    demands = [1.95, 2.05]
    plant = Plant(policy, {"eu-west": 2.05, "us-east": 1.2, "ap-southeast": 0.5})
    seen = []
    for tick in range(30):
        plant.demand["eu-west"] = demands[tick % 2]
        seen.append(plant.run(1)[0][0])
    shares = [shares_in(v, "eu-west").get("us-east", 0.0) for v in seen]
    # Once on it stays on (pressure never falls to the 0.9 release), and settles.
    first_on = next(i for i, share in enumerate(shares) if share > 0)
    assert all(share > 0 for share in shares[first_on:])
    assert all(v == seen[-1] for v in seen[-6:])


def _open_loop(pressures: dict[str, float], ticks: int) -> list[tuple[Views, ControlState]]:
    """Signals that ignore the law: every region stays at its given pressure."""
    policy = policy_of(UNEVEN)
    state = None
    out = []
    for tick in range(ticks):
        now = T0 + tick * INTERVAL
        views, state = compute(policy, pressure_signals(policy, pressures, at=now), state, now)
        out.append((views, state))
    return out


def test_shedding_only_when_every_in_budget_region_is_saturated() -> None:
    # eu-west overloaded but us-east (in budget) has room: overflow, no shedding anywhere.
    for views, _ in _open_loop({"eu-west": 2.0, "us-east": 0.3, "ap-southeast": 0.5}, 8):
        for region in (*UNEVEN, None):
            assert _batch(views, region) == 0.0
    # eu-west and us-east both saturated: their views shed batch; ap-southeast (beyond the
    # budget of both, and idle) does not, nor does the neutral view, which spans it.
    ticks = _open_loop({"eu-west": 2.0, "us-east": 1.5, "ap-southeast": 0.5}, 8)
    for views, _ in ticks:
        assert _batch(views, "ap-southeast") == 0.0
        assert _batch(views, None) == 0.0
        for region in (*UNEVEN, None):
            assert cluster(views, region).drop_overload_percent == 0.0  # never interactive
            assert cluster(views, region).traffic_class is TrafficClass.INTERACTIVE
    drops = [_batch(views, "eu-west") for views, _ in ticks]
    assert drops[0] > 0
    assert drops == sorted(drops)
    assert all(d == int(d) and 0 <= d <= 100 for d in drops)
    assert all(b - a <= 20 for a, b in itertools.pairwise([0.0, *drops]))  # bounded: 10 points/s
    assert _batch(ticks[-1][0], "us-east") == drops[-1]  # same group, same decision


def test_a_lone_region_sheds_when_it_alone_is_saturated() -> None:
    ticks = _open_loop({"eu-west": 0.2, "us-east": 0.2, "ap-southeast": 1.6}, 3)
    views, state = ticks[-1]
    assert _batch(views, "ap-southeast") > 0  # nobody within its budget
    assert _batch(views, "eu-west") == 0.0
    shed = describe(state)["models"][MODEL]["regions"]["ap-southeast"]["shed"]
    assert shed["group"] == ["ap-southeast"] and shed["active"] is True


def test_shedding_is_released_gradually_when_the_load_falls() -> None:
    policy = policy_of(UNEVEN)
    state = None
    drops = []
    for tick in range(40):
        now = T0 + tick * INTERVAL
        pressure = 1.6 if tick < 10 else 0.5
        signals = pressure_signals(policy, {r: pressure for r in UNEVEN}, at=now)
        views, state = compute(policy, signals, state, now)
        drops.append(_batch(views, None))
    peak = max(drops)
    assert peak > 0
    falling = drops[10:]
    assert falling == sorted(falling, reverse=True)
    assert all(a - b <= 5 for a, b in itertools.pairwise(falling))  # 2.5 points/s
    assert drops[-1] == 0.0


def test_fast_ticks_reach_the_same_overflow_in_about_the_same_time() -> None:
    policy = policy_of(UNEVEN)
    demand = {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5}
    slow = Plant(policy, demand, interval=2.0)
    fast = Plant(policy, demand, interval=0.5)
    slow_shares = [shares_in(v, "eu-west").get("us-east", 0.0) for v, _ in slow.run(10)]
    fast_shares = [shares_in(v, "eu-west").get("us-east", 0.0) for v, _ in fast.run(40)]
    assert slow_shares[-1] == fast_shares[-1] == pytest.approx(0.3)
    # Same wall-clock ramp: at 8 s (tick 4 of 2 s, tick 16 of 0.5 s) both are on their way.
    assert fast_shares[16] > 0 and slow_shares[4] > 0
    assert abs(fast_shares[16] - slow_shares[4]) <= 0.1 + 1e-9
    # Every tick moves at most by the per-second bounds, so small ticks take small steps.
    assert all(b - a <= 0.05 * 0.5 + 0.05 + 1e-9 for a, b in itertools.pairwise(fast_shares))


def test_describe_shows_each_share_from_target_to_published() -> None:
    policy = policy_of(UNEVEN)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    _, state = plant.run(12)[-1]
    regions = describe(state)["models"][MODEL]["regions"]
    assert regions["eu-west"]["sends"] == {"us-east": 0.3}
    assert regions["eu-west"]["lending"]["us-east"]["published"] == 0.3
    assert regions["us-east"]["receives"] == {"eu-west": 0.3}
    assert regions["eu-west"]["overflowing"] is True
    assert regions["eu-west"]["pressure"] == pytest.approx(2.0)
