"""The fallback model keeps its place before refusal, in requests/s: it takes at once what a
surge brings beyond what the region's slots admit (their goodput-best level, less a late
queue's drain), and refusal only drains a late queue once the fallback cannot rise further.

One region's view, built by hand: llama (one replica of 4 slots, about 12 requests/s when
full) falls back to small, which has room. Its gateways bring 15 requests/s."""

from __future__ import annotations

import dataclasses

from heliostat.balance import demand, fallback, publish, refusal
from heliostat.balance.state import FallbackState, FallbackStates, RefusalState, RegionState
from heliostat.policy import Model
from tests.balance.test_balance_fallback import MAIN, SMALL, two_models

TTFT_S = 0.8
SLOTS, RAW = 4, 12.0
POLICY = two_models({"us-east": 1}, {"us-east": 2})
ADMITS = refusal.admits("us-east", SLOTS, RAW, TTFT_S, rates=True)
assert ADMITS is not None
LEVEL = ADMITS.rate  # about 9.6/s
SURGE = 15.0


def _model(name: str) -> Model:
    found = POLICY.model(name)
    assert found is not None
    return found


def surging(home: float, measured: float = SURGE, backlog: float = 0.0) -> RegionState:
    """us-east with its gateways measuring `measured`/s, taken at once by the model's own
    estimate (a step), `home` of it placed at home, the rest found no GPU within budget."""
    return RegionState(
        capacity=0.6 * RAW,
        load=min(measured, RAW),
        demand=measured,
        overflowing=True,
        measured=measured,
        endpoints=1,
        unplaced=max(0.0, measured - home),
        refusable=max(0.0, measured - home),
        full_since=0.0,
        plan={"us-east": home},
        source=demand.GATEWAYS,
        backlog=backlog,
        raw_capacity=RAW,
        rates=True,
        late=backlog > ADMITS.tolerated,
        utilisation=0.6,
    )


ROOMY = {"us-east": RegionState(capacity=40.0, load=2.0, demand=2.0, overflowing=False)}


def quiet(demand_rps: float, share: float = 0.0, engaged: bool = False) -> FallbackStates:
    """The last tick's fallback decisions: us-east's demand before the fallback, its share."""
    region = FallbackState(
        engaged=engaged,
        demand=demand_rps,
        share=publish.Held(published=share, target=share),
        state=fallback.EXHAUSTED if engaged else fallback.IDLE,
        rates=True,
    )
    idle = FallbackState(engaged=False, demand=0.0, share=publish.NOTHING)
    regions = {r: region if r == "us-east" else idle for r in POLICY.spec.regions}
    return FallbackStates(SMALL, regions, {}, idle)


def decide(
    region: RegionState,
    previous: FallbackStates,
    admitted: dict[str, float] | None,
) -> FallbackState:
    states = fallback.step(
        POLICY, _model(MAIN), {"us-east": region}, ROOMY, previous, 0.5, 100.0, admitted
    )
    return states.regions["us-east"]


def test_at_a_surges_onset_the_fallback_takes_the_step_the_models_estimate_took() -> None:
    """The gateways' rate steps from 1/s to 15/s and the model's estimate takes it at once:
    so does the fallback's, which engages this tick for what the plan cannot place. Smoothed
    alone (it was), it read 2.3/s, engaged seconds later, and a queue built meanwhile."""
    state = decide(surging(home=LEVEL), quiet(1.0), {"us-east": LEVEL})
    assert state.demand == SURGE
    assert state.engaged
    assert abs(state.share.published - (SURGE - LEVEL) / SURGE) < 0.01


def test_the_demand_starts_over_when_the_models_units_change() -> None:
    """Engaged in endpoint units (no replica's capacity observed yet: 1.7 endpoints at their
    thresholds) when the first capacity is observed and the gateways' 15/s is read in
    requests/s: the estimate starts over from it, as the model's own does, not smoothed
    from 1.7 (it read 2/s, then took seconds to reach what the model carries)."""
    units = dataclasses.replace(
        quiet(1.7, share=0.15, engaged=True),
        regions={
            r: dataclasses.replace(s, rates=False)
            for r, s in quiet(1.7, 0.15, True).regions.items()
        },
    )
    region = dataclasses.replace(surging(home=LEVEL, measured=0.85 * SURGE), demand=13.0)
    state = decide(region, units, {"us-east": LEVEL})
    assert abs(state.demand - SURGE) < 1e-9
    assert state.rates
    assert state.target > 0.3


def test_a_rate_read_while_the_share_just_rose_is_taken_as_a_lower_bound() -> None:
    """The share rose this second: the window's rate mixes the shares before and after, and
    divided by the one after it overstates the demand: the rate itself is taken, a lower
    bound (what reached the model, whatever the share)."""
    rose = dataclasses.replace(
        quiet(1.0),
        regions={
            r: dataclasses.replace(
                s, share=publish.Held(published=0.2, target=0.2, direction=1, moved_at=99.5)
            )
            if r == "us-east"
            else s
            for r, s in quiet(1.0).regions.items()
        },
    )
    state = decide(surging(home=LEVEL, measured=12.0), rose, {"us-east": LEVEL})
    assert state.demand == 12.0


def test_the_share_covers_what_the_slots_do_not_admit_not_only_what_the_plan_left() -> None:
    """Engaged at 15/s with a fifth sent to the fallback, the plan keeps 11.5/s at home,
    more than the slots admit at their goodput-best level (9.6/s): the share is sized on
    what they admit, and refusal, which refuses down to that level, finds nothing left.
    Sized on the plan alone, the rest went to refusal."""
    region = surging(home=11.5, measured=(1 - 0.2) * SURGE)
    engaged = quiet(SURGE, share=0.2, engaged=True)
    plan_only = decide(region, engaged, None)
    assert abs(plan_only.target - (SURGE - 11.5) / SURGE) < 0.01
    state = decide(region, engaged, {"us-east": LEVEL})
    assert abs(state.target - (SURGE - LEVEL) / SURGE) < 0.01
    refusing = dataclasses.replace(refusal.IDLE, excess=1.0)  # the plan proved it full
    for decided, refused in ((plan_only, True), (state, False)):
        after = refusal.step(
            refusing, region, 0.2, decided.target, decided.demand, 100.0, ADMITS, room=0.0,
            fallback_reach=0.5,
        )  # fmt: skip
        assert (after.interactive.published > 0.1) == refused


def test_nothing_is_sent_away_for_the_slots_level_before_the_plan_proved_anything() -> None:
    """All of the region's demand placed and the fallback not engaged: the level is not
    proof of a full region (the plan's room is), so no share for it."""
    calm = dataclasses.replace(surging(home=11.0, measured=11.0), unplaced=0.0, refusable=0.0)
    state = decide(calm, quiet(11.0), {"us-east": LEVEL})
    assert state.share.published == 0.0 and not state.engaged


def late_queue() -> tuple[RegionState, RefusalState]:
    """us-east engaged at 15/s with a queue late twice running (the last tick refused)."""
    region = surging(home=LEVEL, backlog=12.0)
    assert region.late
    before = refusal.step(None, region, 0.0, 0.3, SURGE, 99.5, ADMITS, fallback_reach=0.3)
    assert before.active
    return region, before


def test_the_fallback_takes_a_late_queues_drain_before_refusal() -> None:
    region, before = late_queue()
    admitted = refusal.admitting_rates(
        {"us-east": region}, {"us-east": ADMITS}, {"us-east": before}
    )
    assert admitted["us-east"] < LEVEL - 1.0  # the drain lowers what the slots admit
    state = decide(region, quiet(SURGE, share=0.3, engaged=True), admitted)
    assert state.target > (SURGE - LEVEL) / SURGE + 0.05


def test_a_late_queue_is_drained_by_refusing_only_once_the_fallback_cannot_rise() -> None:
    """The fallback at 0.36 of 0.5 with room: the drain waits for it (it is fed forward and
    takes the drain itself); at its largest share, what it leaves is drained by refusing."""
    region, before = late_queue()
    rising = refusal.step(before, region, 0.36, 0.36, SURGE, 100.0, ADMITS, fallback_reach=0.5)
    at_most = refusal.step(before, region, 0.36, 0.36, SURGE, 100.0, ADMITS, fallback_reach=0.36)
    steady = max(0.0, (1 - 0.36) * SURGE - LEVEL) / ((1 - 0.36) * SURGE)
    assert rising.interactive.published <= steady + publish.REFUSAL_BAND
    assert at_most.interactive.published > steady + 0.1


def test_a_region_whose_capacity_is_a_guess_with_a_slot_free_admits_unknown() -> None:
    region, _ = late_queue()
    guessed = dataclasses.replace(ADMITS, estimated=True, free=2.0)
    assert refusal.admitting_rates({"us-east": region}, {"us-east": guessed}, {}) == {}
