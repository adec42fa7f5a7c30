"""A region whose gateways measure demand beyond its goodput-best level, with nowhere in
reach to lend it, refuses the excess at once (`refusal.early`), before the plan's smoothed
demand and its proof of a full planet catch up; not for a chance excursion, not while a
region in reach has room, not on demand inferred from engines."""

from __future__ import annotations

import dataclasses
import math

from heliostat.balance import demand, overflow, queueing, refusal
from heliostat.balance.state import RegionState
from tests.balance.helpers import MODEL, policy_of

TTFT_S = 0.5
SLOTS, RAW = 16, 21.8  # four replicas of 4 slots, 0.73 s per request
ADMITS = refusal.admits("us-east", SLOTS, RAW, TTFT_S, rates=True)
assert ADMITS is not None
LEVEL = ADMITS.rate


def ramping(measured: float, batch: float | None = None) -> RegionState:
    """us-east on a ramp: its gateways measure `measured`/s, the plan's smoothed demand is
    still below the goodput-best level, so the plan places it all at home and proves
    nothing (nothing unplaced, nothing refusable)."""
    smoothed = 0.9 * LEVEL
    region = _state(smoothed, measured, {"us-east": smoothed})
    return dataclasses.replace(region, batch=batch, utilisation=0.69)


def sighted(measured: float) -> float:
    """What `early` should refuse of `measured`: beyond a deviation and the level."""
    return measured - math.sqrt(measured / demand.WINDOW_S) - LEVEL


def test_measured_beyond_the_level_with_no_room_is_refused_at_once() -> None:
    measured = 1.3 * RAW
    plan_only = refusal.step(None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS)
    assert plan_only.interactive.published == 0.0  # the plan alone: not yet
    at_once = refusal.step(None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, room=0.0)
    # Of what arrives now (the measured rate: the smoothed demand lags the ramp).
    expected = sighted(measured) / measured
    assert abs(at_once.interactive.published - expected) < 0.002  # thousandths
    assert at_once.excess > 0.0  # carried: the refusal holds while demand stays unplaced


def test_a_chance_excursion_above_the_level_is_not_refused() -> None:
    """Within a deviation above the level: a Poisson rate reads so by chance."""
    measured = LEVEL + 0.9 * math.sqrt(LEVEL / demand.WINDOW_S)
    state = refusal.step(None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, room=0.0)
    assert state.interactive.published == 0.0
    assert not state.active


def test_room_in_reach_is_lent_not_refused() -> None:
    measured = 1.3 * RAW
    room = sighted(measured) + 1.0
    state = refusal.step(None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, room=room)
    assert state.interactive.published == 0.0
    partial = refusal.step(
        None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, room=sighted(measured) / 2
    )
    assert 0.0 < partial.interactive.published < 1.0


def test_demand_inferred_from_engines_is_not_refused_on_sight() -> None:
    inferred = dataclasses.replace(ramping(1.3 * RAW), source=demand.ENGINES)
    state = refusal.step(None, inferred, 0.0, 0.0, 0.0, 0.0, ADMITS, room=0.0)
    assert state.interactive.published == 0.0


def test_batch_first_and_the_fallback_moves_first() -> None:
    measured = 1.3 * RAW
    split = refusal.step(None, ramping(measured, batch=4.0), 0.0, 0.0, 0.0, 0.0, ADMITS, 0.0)
    assert split.batch.published == 1.0
    refused = split.batch.published * 4.0 + split.interactive.published * (measured - 4.0)
    assert abs(refused - sighted(measured)) < 0.1
    # The fallback model takes a quarter of the users this tick: only the rest is refused.
    with_fallback = refusal.step(None, ramping(measured), 0.0, 0.25, 0.0, 0.0, ADMITS, 0.0)
    alone = refusal.step(None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, 0.0)
    refused_with = with_fallback.interactive.published * 0.75 * measured
    refused_alone = alone.interactive.published * measured
    assert refused_with < refused_alone - 1.0


def test_nothing_is_refused_on_sight_while_the_fallback_may_still_rise() -> None:
    """The fallback engages on the smoothed demand, which lags the measured rate: while it
    may still rise (`fallback_reach` above the share it goes to), the fallback keeps its
    place before refusal and nothing is refused on sight; once it is at its reach (at its
    largest share, or out of room), what is beyond the level is."""
    measured = 1.3 * RAW
    waiting = refusal.step(
        None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, 0.0, fallback_reach=0.5
    )
    assert waiting.interactive.published == 0.0
    at_reach = refusal.step(
        None, ramping(measured), 0.0, 0.1, 0.0, 0.0, ADMITS, 0.0, fallback_reach=0.1
    )
    assert at_reach.interactive.published > 0.0
    alone = refusal.step(None, ramping(measured), 0.0, 0.0, 0.0, 0.0, ADMITS, 0.0)
    assert at_reach.interactive.published < alone.interactive.published


def _state(demand_rps: float, measured: float, plan: dict[str, float]) -> RegionState:
    return RegionState(
        capacity=0.69 * RAW,
        load=demand_rps,
        demand=demand_rps,
        overflowing=False,
        measured=measured,
        endpoints=4,
        plan=plan,
        source=demand.GATEWAYS,
        raw_capacity=RAW,
        rates=True,
    )


def test_rooms_count_what_the_regions_in_reach_have_left() -> None:
    """us-east and eu-west 80 ms apart (a 150 ms budget), ap-southeast beyond it: each has
    the other's room below its rescue ceiling, less what is planned on it and its own
    users' measured rise; ap-southeast has none."""
    policy = policy_of(budget=150.0)
    model = next(m for m in policy.spec.models if m.name == MODEL)
    admitting = {
        r: refusal.admits(r, SLOTS, RAW, TTFT_S, rates=True)
        for r in ("us-east", "eu-west", "ap-southeast")
    }
    calm = 0.5 * LEVEL
    regions = {
        "us-east": _state(calm, calm, {"us-east": calm}),
        "eu-west": _state(calm, calm, {"eu-west": calm}),
        "ap-southeast": _state(calm, calm, {"ap-southeast": calm}),
    }
    room = refusal.rooms(policy, model, regions, admitting)
    ceiling = overflow.RESCUE_CEILING * LEVEL
    assert abs(room["us-east"] - (ceiling - calm)) < 1e-9
    assert abs(room["eu-west"] - (ceiling - calm)) < 1e-9
    assert room["ap-southeast"] == 0.0
    # eu-west's own users rise (measured well above its smoothed demand): its room goes.
    regions["eu-west"] = _state(calm, 1.3 * RAW, {"eu-west": calm})
    assert refusal.rooms(policy, model, regions, admitting)["us-east"] == 0.0


def test_the_deviation_is_read_over_the_window_the_gateway_rates_are_averaged_over() -> None:
    """`refusal.surge` takes the rate's deviation over demand.WINDOW_S: both producers of
    gateway rates (serve's LRS server, the planet's) must average over that window."""
    from heliostat.planet.law import LRS_WINDOW_S
    from heliostat.xds.grpc.load_reports import WINDOW_S

    assert demand.WINDOW_S == WINDOW_S == LRS_WINDOW_S
    assert queueing.admission(SLOTS, RAW, TTFT_S, overflow.UTILISATION) * RAW == LEVEL
