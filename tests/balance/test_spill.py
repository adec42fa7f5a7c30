"""The paying share (`spill`): a small region above its planning level sends away only what
saves its users time net of the round trip, and keeps a share it lends while it costs little.

The bench's chat fleet: one 4-slot replica in ap-southeast (5.35 requests/s when full),
eu-west 3 of them (12 slots, 16 requests/s), 160 ms apart, a 500 ms TTFT objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from heliostat.balance import overflow, queueing, spill
from heliostat.balance.demand import GatewayLoad, OriginLoad
from heliostat.balance.state import Held, RegionState
from tests.balance.helpers import policy_of

TTFT_S = 0.5
RTT_S = 0.16
SMALL = spill.Pool(4, 5.35, 0.0)
RESCUER = spill.Pool(12, 16.05, 0.0)


def at(pool: spill.Pool, load: float) -> spill.Pool:
    return dataclasses.replace(pool, demand=load * pool.capacity)


def test_mean_wait_is_zero_when_idle_and_grows_without_bound_at_saturation() -> None:
    assert queueing.mean_wait(4, 5.35, 0.0) == 0.0
    waits = [queueing.mean_wait(4, 5.35, rho) for rho in (0.4, 0.55, 0.65, 0.75, 0.95)]
    assert waits == sorted(waits)
    # Measured on the simulated engine (ShareGPT-like chats): 0.026, 0.069, 0.127, 0.241 s.
    assert waits[2] == pytest.approx(0.13, abs=0.02)
    assert queueing.mean_wait(4, 5.35, 1.0) == float("inf")
    assert queueing.mean_wait(None, 5.35, 0.5) == 0.0


def test_a_small_region_well_inside_its_slots_sends_nothing() -> None:
    share = spill.paying_share(at(SMALL, 0.45), {"eu-west": (at(RESCUER, 0.65), RTT_S)}, TTFT_S, {})
    assert share == spill.NONE


def test_at_65_percent_it_sends_a_seventh_not_all_above_its_planning_level() -> None:
    """Everything above its planning level (0.38 of 4 slots) would be 42% of its users."""
    planned = queueing.utilisation(4, 5.35, overflow.QUEUE_SHARE * TTFT_S, overflow.UTILISATION)
    assert 1.0 - planned / 0.65 > 0.4
    share = spill.paying_share(at(SMALL, 0.65), {"eu-west": (at(RESCUER, 0.65), RTT_S)}, TTFT_S, {})
    assert share.rescuer == "eu-west"
    assert 0.05 <= share.share <= 0.25
    assert share.saved_s > spill.START * TTFT_S


def test_a_rescuer_too_far_away_is_not_worth_it() -> None:
    share = spill.paying_share(at(SMALL, 0.65), {"eu-west": (at(RESCUER, 0.65), 0.45)}, TTFT_S, {})
    assert share == spill.NONE


def test_a_share_lent_is_kept_while_it_costs_less_than_the_start_threshold() -> None:
    """At 58% the best share is none, and starting one does not pay; one lent already is
    kept as it is (the demand's noise moves the load between these two readings)."""
    rescuers = {"eu-west": (at(RESCUER, 0.65), RTT_S)}
    assert spill.paying_share(at(SMALL, 0.58), rescuers, TTFT_S, {}) == spill.NONE
    kept = spill.paying_share(at(SMALL, 0.58), rescuers, TTFT_S, {"eu-west": 0.14})
    assert kept.rescuer == "eu-west" and kept.share == pytest.approx(0.14)
    # Far below, the share costs more than the threshold: it goes.
    assert spill.paying_share(at(SMALL, 0.2), rescuers, TTFT_S, {"eu-west": 0.14}) == spill.NONE


def test_a_share_starts_only_when_it_pays_by_more_than_the_demands_noise() -> None:
    """3.5 requests/s read over a few seconds wanders by about 0.9 (Poisson): at 65% a
    share pays at the reading, not one deviation below it; at 85% it pays at both."""
    rescuers = {"eu-west": (at(RESCUER, 0.5), RTT_S)}
    noise = 0.93
    assert spill.paying_share(at(SMALL, 0.65), rescuers, TTFT_S, {}).share > 0.0
    assert spill.paying_share(at(SMALL, 0.65), rescuers, TTFT_S, {}, noise) == spill.NONE
    assert spill.paying_share(at(SMALL, 0.85), rescuers, TTFT_S, {}, noise).share > 0.1
    # Once lent, it stays while it pays at a reading one deviation higher.
    kept = spill.paying_share(at(SMALL, 0.55), rescuers, TTFT_S, {"eu-west": 0.25}, noise)
    assert kept.share == pytest.approx(0.25)


def test_a_share_too_large_for_the_demand_follows_the_best_one_down_while_one_pays() -> None:
    """A share set on a burst (60%) costs at 55% even a deviation higher; a smaller one still
    pays there, so the share follows it down rather than ending and starting again on the
    next high reading (two turns each time: the planet chat fleet's small region turned
    its share 3-6 times in three minutes, now 1-5). Nothing starts at that reading, and
    far below, it ends."""
    rescuers = {"eu-west": (at(RESCUER, 0.65), RTT_S)}
    noise = 0.93
    assert spill.paying_share(at(SMALL, 0.55), rescuers, TTFT_S, {}, noise) == spill.NONE
    followed = spill.paying_share(at(SMALL, 0.55), rescuers, TTFT_S, {"eu-west": 0.6}, noise)
    assert followed.rescuer == "eu-west"
    assert 0.0 < followed.share < 0.3
    assert spill.paying_share(at(SMALL, 0.2), rescuers, TTFT_S, {"eu-west": 0.6}, noise) == (
        spill.NONE
    )


def supply(endpoints: int, load: float, backlog: float = 0.0) -> overflow.Supply:
    raw = 5.35 * endpoints
    slots = 4 * endpoints
    planned = queueing.utilisation(slots, raw, overflow.QUEUE_SHARE * TTFT_S, overflow.UTILISATION)
    admits = queueing.admission(slots, raw, TTFT_S, overflow.UTILISATION)
    return overflow.Supply(
        endpoints,
        overflow.planning_capacity(raw, backlog, TTFT_S, overflow.DRAIN_S, planned),
        raw,
        load * raw,
        backlog,
        occupancy=1.0 if backlog else 0.9,  # peak-holding: a 4-slot pool fills at 65%
        rates=True,
        utilisation=planned,
        strain=max(0.0, admits - planned) * raw,
        level=load,
        slots=slots,
    )


def last_tick(
    s: overflow.Supply,
    demand_rps: float,
    lending: Mapping[str, Held],
    backlog: float,
    *,
    overflowing: bool,
) -> RegionState:
    """A region's state as the last tick left it: its supply `s`, its gateways' demand
    (smoothed and measured alike), the shares it lent and the queue it held then."""
    return RegionState(
        capacity=s.capacity,
        load=s.load,
        demand=demand_rps,
        overflowing=overflowing,
        lending=lending,
        measured=demand_rps,
        endpoints=s.endpoints,
        source="gateways",
        backlog=backlog,
        raw_capacity=s.raw,
        rates=True,
        utilisation=s.utilisation,
    )


def step(
    loads: dict[str, float], backlog: float, prefills: Mapping[str, float | None] | None = None
) -> dict[str, dict[str, float]]:
    """One tick of `overflow.step` from a cold start, every region's users at `loads` of
    its capacity as its gateways measure them, ap-southeast's queue holding `backlog`
    requests, each region's engines' mean prefill `prefills` (seconds); the shares each
    region lends."""
    counts = {"us-east": 4, "eu-west": 3, "ap-southeast": 1}
    policy = policy_of(counts, budget=170, max_share=None)
    model = policy.spec.models[0]
    model = model.model_copy(update={"slo": model.slo.model_copy(update={"ttft_ms": 500.0})})
    now = 100.0
    gateways = GatewayLoad(
        {
            (model.name, r): OriginLoad(interactive=loads[r] * 5.35 * n, at=now)
            for r, n in counts.items()
        }
    )
    regions = {
        r: dataclasses.replace(
            supply(n, loads[r], backlog if r == "ap-southeast" else 0.0),
            prefill=(prefills or {}).get(r),
        )
        for r, n in counts.items()
    }
    plan = overflow.step(policy, model, regions, True, gateways, {}, {}, 0.5, now)
    return {r: {q: h.published for q, h in s.lending.items()} for r, s in plan.items()}


@pytest.mark.parametrize("backlog", [0.0, 2.0])
def test_at_65_percent_everywhere_nobody_lends(backlog: float) -> None:
    """Before: ap-southeast lent 23% of its users to eu-west (what its planning level, 0.38
    of 4 slots, and its strain left over), with or without a queue of two requests ("late"
    for a pool whose SLO tolerates 0.7), and eu-west, left no room below its own planning
    level, passed 7.7% of its users on to us-east (80 ms). Now nothing pays by more than
    the demand's noise: a share would save ap-southeast's users 28 ms at the demand read
    (0.14 of them, `spill`), and nothing at a demand one chance deviation lower."""
    lent = step({"us-east": 0.65, "eu-west": 0.65, "ap-southeast": 0.65}, backlog)
    assert lent == {"us-east": {}, "eu-west": {}, "ap-southeast": {}}


@pytest.mark.parametrize("backlog", [0.0, 2.0])
def test_a_region_at_85_percent_lends_the_paying_share_and_its_rescuer_keeps_its_users(
    backlog: float,
) -> None:
    """Before: 56% of ap-southeast's users (all above its planning level), and eu-west
    passed 4.7% of its own on to us-east to make room. Now the share that saves them most
    time, and it lands at eu-west's own slots, whose added waits `spill` weighed already."""
    lent = step({"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.85}, backlog)
    assert 0.15 <= lent["ap-southeast"].get("eu-west", 0.0) <= 0.4
    assert lent["eu-west"] == {} and lent["us-east"] == {}


# Prefill (shared_prefix's fleet, measured in the eighth full run): a cold 864-token prompt on
# one replica ~170 ms, a cached one ~35 ms.
COLD_S, WARM_S = 0.17, 0.035


def paid(
    load: float, prefill_o: float, prefill_q: float, rtt: float, rescuer_load: float = 0.65
) -> spill.Spill:
    origin = dataclasses.replace(at(SMALL, load), prefill=prefill_o)
    rescuer = dataclasses.replace(at(RESCUER, rescuer_load), prefill=prefill_q)
    return spill.paying_share(origin, {"eu-west": (rescuer, rtt)}, TTFT_S, {})


def test_a_rescuer_whose_cache_holds_the_prompts_takes_a_larger_share() -> None:
    """shared_prefix's small region at 65%, 160 ms from its rescuer: the waits alone send
    some of its users; a rescuer that prefills them 135 ms faster is worth more of them, and
    saves each origin user more."""
    plain = paid(0.65, 0.0, 0.0, RTT_S)
    warm = paid(0.65, COLD_S, WARM_S, RTT_S)
    assert warm.rescuer == "eu-west"
    assert warm.share >= plain.share + 0.04
    assert warm.saved_s >= plain.saved_s + 0.015


def test_a_prefill_saving_pays_with_no_queue_at_home_but_not_past_its_round_trip() -> None:
    """At 45% of its slots the waits alone keep every user home; a lightly loaded rescuer
    80 ms away that prefills them 135 ms faster saves most of them time; 200 ms away, the
    round trip takes more than the prefill and the shorter waits at home give back."""
    assert paid(0.45, 0.0, 0.0, 0.08, rescuer_load=0.4) == spill.NONE
    near = paid(0.45, COLD_S, WARM_S, 0.08, rescuer_load=0.4)
    assert near.rescuer == "eu-west"
    assert near.share >= 0.3
    assert near.saved_s >= spill.START * TTFT_S
    # The rescuer's own users wait longer for each user it takes: it stays well within what
    # its slots complete.
    assert (0.4 * RESCUER.capacity + near.share * 0.45 * SMALL.capacity) < 0.7 * RESCUER.capacity
    assert paid(0.45, COLD_S, WARM_S, 0.2, rescuer_load=0.4) == spill.NONE


def test_a_rescuer_with_the_colder_cache_takes_a_smaller_share() -> None:
    plain = paid(0.65, 0.0, 0.0, RTT_S)
    cold = paid(0.65, WARM_S, COLD_S, RTT_S)
    assert cold.share < plain.share
    assert cold.saved_s < plain.saved_s


def test_equal_prefills_change_nothing() -> None:
    plain = paid(0.65, 0.0, 0.0, RTT_S)
    same = paid(0.65, 0.1, 0.1, RTT_S)
    assert (same.share, same.rescuer) == (plain.share, plain.rescuer)
    assert same.saved_s == pytest.approx(plain.saved_s)


def test_a_cold_cache_lends_below_its_planning_level_when_the_prefill_beats_the_trip() -> None:
    """ap-southeast at 30% of its slots (waits alone: nothing leaves), its prompts prefilled
    in 400 ms on average against eu-west's 40 ms, 160 ms away: most of its users leave, and
    eu-west is planned below its ceiling. With eu-west's prefill unknown nothing is weighed
    and nothing leaves; nor when the saving is smaller than the round trip."""
    loads = {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.3}
    assert step(loads, 0.0)["ap-southeast"] == {}
    lent = step(loads, 0.0, {"us-east": 0.04, "eu-west": 0.04, "ap-southeast": 0.4})
    share = lent["ap-southeast"].get("eu-west", 0.0)
    assert share >= 0.5
    added = share * 0.3 * 5.35
    assert 0.5 * 3 * 5.35 + added <= overflow.RESCUE_CEILING * 3 * 5.35
    assert lent["eu-west"] == {} and lent["us-east"] == {}
    unknown = step(loads, 0.0, {"us-east": 0.04, "eu-west": None, "ap-southeast": 0.4})
    assert unknown["ap-southeast"] == {}
    near = step(loads, 0.0, {"us-east": 0.04, "eu-west": 0.04, "ap-southeast": 0.15})
    assert near["ap-southeast"] == {}
