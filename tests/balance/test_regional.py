"""The regional law end to end: allocation, shares, onward lending, refusal, edge regions.

Most tests run against the stylised fleet (`Plant`, endpoint units: no completion counters);
the ones about gateway-measured demand hand `compute` a `GatewayLoad` as the LRS server
would build it.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from heliostat.balance import ControlState, Views, compute, describe
from heliostat.balance.demand import GatewayLoad, OriginLoad
from tests.balance.helpers import (
    INTERVAL,
    MODEL,
    REGIONS,
    T0,
    Plant,
    Signals,
    addresses,
    cluster,
    locality,
    policy_of,
    pressure_signals,
    shares_in,
    signal,
)

UNEVEN = {"us-east": 4, "eu-west": 2, "ap-southeast": 1}


def _refused(views: Views, region: str | None, batch: bool = False) -> float:
    name = f"{MODEL}.batch" if batch else MODEL
    return cluster(views, region, name).drop_overload_percent / 100.0


def test_a_region_at_twice_capacity_overflows_at_once_within_an_explicit_cap() -> None:
    policy = policy_of(UNEVEN, max_share=0.3)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    history = []
    for views, _ in plant.run(12):
        history.append((shares_in(views, "eu-west").get("us-east", 0.0), plant.pressures()))
    sent = [share for share, _ in history]
    assert max(sent) <= 0.3 + 1e-9  # the operator's cap is honoured
    assert sent[1] == pytest.approx(0.3)  # feed-forward: the target, not a ramp
    assert all(pressures["us-east"] < 0.9 + 1e-9 for _, pressures in history)
    final = plant.views
    assert final is not None
    eu = cluster(final, "eu-west")
    assert [(loc.region, loc.priority, loc.weight) for loc in eu.localities] == [
        ("eu-west", 0, 700),
        ("us-east", 0, 300),
        ("ap-southeast", 1, 1000),  # 160 ms: beyond the 150 ms budget, never a rescuer
    ]
    assert locality(eu, "eu-west").reason["overflow"] == "sends 30.0% to us-east"
    assert locality(eu, "us-east").reason["overflow"] == "receives 30.0% of eu-west"
    assert "eu-west's users served in us-east" in str(locality(eu, "us-east").reason["why"])
    # The cap keeps eu-west's users out of room us-east still has (30% of 4.0 = 1.2 sent,
    # 2.0 served at home, 0.8 unplaced): the planet is not full, so that stays home.
    assert _refused(final, "eu-west") == 0.0
    us = cluster(final, "us-east")
    assert [(loc.region, loc.priority, loc.weight) for loc in us.localities] == [
        ("us-east", 0, 1000),
        ("eu-west", 1, 1000),
        ("ap-southeast", 2, 1000),
    ]
    assert _refused(final, "us-east") == 0.0


def test_without_a_cap_the_allocation_places_the_whole_excess_where_there_is_room() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    views, state = plant.run(10)[-1]
    # eu-west serves 2.0 itself; us-east has room for 0.9 x 4 - 1.2 = 2.4 > 2.0.
    assert shares_in(views, "eu-west") == pytest.approx({"eu-west": 0.5, "us-east": 0.5})
    assert _refused(views, "eu-west") == 0.0
    assert plant.pressures()["us-east"] <= 0.9 + 1e-9
    regions = state.models[MODEL].regions
    assert regions["eu-west"].demand == pytest.approx(4.0)  # seen through the overflow
    assert regions["us-east"].demand == pytest.approx(1.2)
    assert regions["eu-west"].plan == pytest.approx({"eu-west": 2.0, "us-east": 2.0})


def test_after_convergence_the_closed_loop_publishes_identical_views() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    plant = Plant(policy, {"eu-west": 3.0, "us-east": 2.0, "ap-southeast": 0.5})
    ticks = plant.run(25)
    last = ticks[-1][0]
    assert all(views == last for views, _ in ticks[-10:])


def test_the_rescuers_own_demand_is_reserved_first_and_the_rest_refused() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    # us-east runs at 0.8 of its 4 endpoints: 0.9 * 4 - 3.2 = 0.4 room for eu-west's 2.0.
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 3.2, "ap-southeast": 0.5})
    for _ in plant.run(12):  # shares in thousandths: within a rounding of the ceiling
        assert plant.pressures()["us-east"] <= 0.9 + 1e-3
    views = plant.views
    assert views is not None
    # Admitted 2.4 of 4.0: 2.0 at home, 0.4 in us-east; 1.6 refused (40%).
    assert shares_in(views, "eu-west") == pytest.approx(
        {"eu-west": 2.0 / 2.4, "us-east": 0.4 / 2.4}, abs=1e-3
    )
    assert _refused(views, "eu-west") == pytest.approx(0.4, abs=0.011)
    assert _refused(views, "eu-west", batch=True) == pytest.approx(0.4, abs=0.011)
    assert _refused(views, "us-east") == 0.0


def test_onward_lending_passes_a_rescuers_users_on_to_make_room() -> None:
    """ap-southeast (one endpoint) at 2x; only eu-west is within its 170 ms budget, and
    eu-west is nearly full with its own users. eu-west passes some of them on to us-east
    (80 ms, inside eu-west's budget), which makes room for ap-southeast's excess."""
    policy = policy_of(UNEVEN, budget=170.0, max_share=None)
    plant = Plant(policy, {"ap-southeast": 2.0, "eu-west": 1.7, "us-east": 1.0})
    views, state = plant.run(12)[-1]
    ap = shares_in(views, "ap-southeast")
    eu = shares_in(views, "eu-west")
    assert ap == pytest.approx({"ap-southeast": 0.5, "eu-west": 0.5}, abs=1e-3)
    assert "us-east" not in ap  # 210 ms: beyond ap-southeast's budget
    assert eu.get("us-east", 0.0) == pytest.approx(0.9 / 1.7, abs=2e-3)
    pressures = plant.pressures()
    assert pressures["eu-west"] <= 0.9 + 1e-3 and pressures["us-east"] <= 0.9 + 1e-3
    assert all(_refused(views, r) == 0.0 for r in REGIONS)
    plan = state.models[MODEL].regions
    assert plan["eu-west"].plan == pytest.approx({"eu-west": 0.8, "us-east": 0.9})


def test_no_overflow_when_the_neighbours_are_saturated_too_and_both_refuse() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 4.4, "ap-southeast": 0.5})
    for views, _ in plant.run(10):
        for region in ("eu-west", "us-east"):
            assert shares_in(views, region) == {region: 1.0}
    assert _refused(views, "eu-west") == pytest.approx(0.5, abs=0.011)
    assert _refused(views, "us-east") == pytest.approx(0.4 / 4.4, abs=0.011)
    assert _refused(views, "ap-southeast") == 0.0


def test_overflow_backs_off_at_once_when_the_rescuer_fills_up() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    plant = Plant(policy, {"eu-west": 3.0, "us-east": 1.2, "ap-southeast": 0.5})
    plant.run(8)
    assert plant.views is not None
    assert shares_in(plant.views, "eu-west")["us-east"] == pytest.approx(1 / 3, abs=1e-3)
    plant.demand["us-east"] = 4.4  # us-east now needs more than it has
    ticks = plant.run(6)
    assert shares_in(ticks[1][0], "eu-west") == {"eu-west": 1.0}  # cut at the next tick


def test_under_constant_noisy_load_shares_reverse_at_most_twice_a_minute() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    noise = [0.0, 0.12, -0.08, 0.05, -0.1, 0.09, -0.02, 0.11, -0.12, 0.03]
    plant = Plant(policy, {"eu-west": 3.0, "us-east": 1.2, "ap-southeast": 0.5})
    seen = []
    for tick in range(60):  # two minutes at 2 s ticks
        plant.demand["eu-west"] = 3.0 + noise[tick % len(noise)]
        seen.append(shares_in(plant.run(1)[0][0], "eu-west").get("us-east", 0.0))
    turns = direction = 0
    for a, b in itertools.pairwise(seen[3:]):
        step = (b > a) - (b < a)
        if step and direction and step != direction:
            turns += 1
        direction = step or direction
    assert turns <= 4
    assert len(set(seen[3:])) <= 6


def test_refusal_is_released_when_the_load_falls() -> None:
    policy = policy_of(UNEVEN, max_share=None)
    plant = Plant(policy, {r: 1.6 * n for r, n in UNEVEN.items()})
    plant.run(8)
    assert plant.views is not None and _refused(plant.views, "eu-west") > 0.3
    plant.demand = {r: 0.5 * n for r, n in UNEVEN.items()}
    after = [_refused(views, "eu-west") for views, _ in plant.run(10)]
    assert after == sorted(after, reverse=True)
    assert after[-1] == 0.0


def _open_loop(
    policy_pressures: dict[str, float], ticks: int, gateways: GatewayLoad
) -> list[tuple[Views, ControlState]]:
    """Signals that ignore the law; every region stays at its given pressure."""
    policy = policy_of(UNEVEN, max_share=None)
    state = None
    out = []
    for tick in range(ticks):
        now = T0 + tick * INTERVAL
        views, state = compute(
            policy,
            pressure_signals(policy, policy_pressures, at=now),
            state,
            now,
            gateways=gateways,
        )
        out.append((views, state))
    return out


def test_in_pressure_units_gateway_rates_are_not_mixed_in() -> None:
    """Without service rates the law cannot compare requests/s with endpoint units: it
    keeps inferring demand from the engines."""
    reports = GatewayLoad({(MODEL, "eu-west"): OriginLoad(interactive=50.0, at=T0 + 100)})
    _, state = _open_loop({"eu-west": 0.5, "us-east": 0.5, "ap-southeast": 0.5}, 3, reports)[-1]
    assert state.models[MODEL].regions["eu-west"].source == "engines"


def test_describe_shows_the_allocation_shares_and_refusals() -> None:
    policy = policy_of(UNEVEN, max_share=0.3)
    plant = Plant(policy, {"eu-west": 4.0, "us-east": 1.2, "ap-southeast": 0.5})
    _, state = plant.run(8)[-1]
    regions = describe(state)["models"][MODEL]["regions"]
    eu = regions["eu-west"]
    assert eu["sends"] == {"us-east": 0.3}
    assert eu["lending"]["us-east"]["published"] == 0.3
    assert "us-east had room" in eu["lending"]["us-east"]["reason"]
    assert regions["us-east"]["receives"] == {"eu-west": 0.3}
    assert eu["overflowing"] is True
    assert eu["demand"] == pytest.approx(4.0, abs=0.05)
    assert eu["allocation"]["eu-west"] == pytest.approx(2.0, abs=0.05)
    assert eu["unplaced"] == pytest.approx(0.8, abs=0.05)
    assert eu["refusal"]["active"] is False  # us-east has room: the cap, not the planet
    assert eu["refusal"]["in_flight"] is None  # not refusing, and lending: no cap in flight
    assert eu["demand_source"] == "engines"


def _serving(
    policy_region_rates: dict[str, float], policy: object, now: float, tick: int
) -> Signals:
    """Endpoints that complete `rate` requests/s each with half their 8 slots busy (rates
    mode: capacity 2 x rate); an endpoint of a region missing here has failed 3 scrapes."""
    result: Signals = {}
    for region in REGIONS:
        for address in addresses(policy, region):  # type: ignore[arg-type]
            rate = policy_region_rates.get(region)
            if rate is None:
                result[(MODEL, address)] = signal(address, at=now - 10, failures=3)
                continue
            base = signal(address, waiting=0.0, kv=0.1, running=4.0, max_num_seqs=8, at=now)
            result[(MODEL, address)] = dataclasses.replace(base, served_total=rate * tick * 2.0)
    return result


def test_a_region_whose_replicas_are_all_down_is_served_like_an_edge() -> None:
    """us-east's replicas all fail; its gateways still report 6 requests/s. Its users go to
    eu-west (80 ms), the only region within its 150 ms budget, at locality weight 1000 in
    priority 0; its own dead hosts come after every region within budget (not beside its
    rescuers, where they would lower priority 0's health and make Envoy spill), and before
    ap-southeast, which is beyond the budget and stays last in every view."""
    policy = policy_of(UNEVEN, max_share=None)
    state = None
    for tick in range(12):
        now = T0 + tick * INTERVAL
        rates = {"eu-west": 3.0, "ap-southeast": 3.0}
        if tick < 4:
            rates["us-east"] = 3.0
        reports = GatewayLoad(
            {(MODEL, "us-east"): OriginLoad(interactive=6.0, at=now)}, stale_after=5.0
        )
        views, state = compute(
            policy, _serving(rates, policy, now, tick), state, now, gateways=reports
        )
    us = cluster(views, "us-east")
    assert [(loc.region, loc.priority, loc.weight) for loc in us.localities] == [
        ("eu-west", 0, 1000),
        ("us-east", 1, 1000),
        ("ap-southeast", 2, 1000),
    ]
    regions = state.models[MODEL].regions
    assert regions["us-east"].source == "gateways" and regions["us-east"].endpoints == 0
    assert regions["us-east"].plan == pytest.approx({"eu-west": 6.0})
    assert _refused(views, "us-east") == 0.0


def test_a_step_in_demand_its_gateways_measure_is_taken_at_once() -> None:
    """us-east's gateways report 6/s for a while; then the newest second holds 30/s while
    the 3 s window says 14/s: far beyond the window's Poisson spread, so the law plans for
    30/s at once instead of smoothing towards the window's 14/s over seconds. A newest second
    within the spread moves the demand only by the smoothing."""

    def run(recent: float) -> float:
        policy = policy_of(UNEVEN, max_share=None)
        state = None
        for tick in range(10):
            now = T0 + tick * INTERVAL
            last = tick == 9
            origin = OriginLoad(
                interactive=14.0 if last else 6.0,
                at=now,
                recent=recent if last else 6.0,
                recent_s=1.0,
            )
            _, state = compute(
                policy,
                _serving({r: 3.0 for r in REGIONS}, policy, now, tick),
                state,
                now,
                gateways=GatewayLoad({(MODEL, "us-east"): origin}, stale_after=5.0),
            )
        assert state is not None
        return state.models[MODEL].regions["us-east"].demand

    assert run(30.0) == pytest.approx(30.0)
    assert 6.0 < run(15.0) < 14.0
