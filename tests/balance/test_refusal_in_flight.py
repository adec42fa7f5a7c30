"""While a region refuses, what each of its gateways has in flight is capped at its slots
and the backlog the SLO tolerates (`refusal.in_flight`): past the cap Envoy answers at once,
so an admitted request never waits behind a queue the random drop fraction lets build. Not
refusing, with no room left in its reach, the loose guard (`refusal.loose_in_flight`: slots
and what they complete within the TTFT). Split over its gateways; no cap while it lends,
while its gateways report batch demand (batch first is the drop fractions' order), while a
fallback model carries or may still take part of its users, or when its slots are
unknown."""

from __future__ import annotations

import dataclasses

from heliostat.balance import demand, publish, refusal
from heliostat.balance.state import Held, RefusalState, RegionState

TTFT_S = 0.5
SLOTS, RAW = 16, 21.8  # four replicas of 4 slots
ADMITS = refusal.admits("us-east", SLOTS, RAW, TTFT_S, rates=True)
assert ADMITS is not None
# Its slots and the backlog its users wait behind within the SLO: 21.8/s x 0.25 x 0.5 s.
CAP = SLOTS + 2
# Not refusing: its slots and what they complete within the TTFT, 21.8/s x 0.5 s.
LOOSE = SLOTS + 10


def crowded(measured: float, gateways: int = 1, batch: float | None = None) -> RegionState:
    """us-east with no room anywhere: the plan keeps its level at home and refuses the rest."""
    level = ADMITS.rate
    return RegionState(
        capacity=0.69 * RAW,
        load=level,
        demand=measured,
        overflowing=True,
        measured=measured,
        endpoints=4,
        unplaced=measured - level,
        refusable=measured - level,
        plan={"us-east": level},
        source=demand.GATEWAYS,
        raw_capacity=RAW,
        rates=True,
        batch=batch,
        gateways=gateways,
    )


def step(region: RegionState, previous: RefusalState | None = None) -> RefusalState:
    return refusal.step(previous, region, 0.0, 0.0, 0.0, 0.0, ADMITS, room=0.0)


def test_a_refusing_region_caps_each_gateway_at_its_slots_and_tolerated_queue() -> None:
    assert refusal.capacity_in_flight(ADMITS) == CAP
    state = step(crowded(1.3 * RAW))
    assert state.interactive.published > 0.0
    assert state.in_flight == CAP
    assert step(crowded(1.3 * RAW, gateways=3)).in_flight == 6  # 18 over 3
    assert step(crowded(1.3 * RAW, gateways=4)).in_flight == 5  # 18 over 4: rounded up


def test_a_region_whose_fallback_carries_or_may_take_its_users_is_not_capped() -> None:
    """A request past the cap is answered by the model's cluster after the fallback's
    choice: it could not degrade to the fallback, which keeps its place before refusal."""
    region = crowded(1.3 * RAW)
    total = region.demand / (1.0 - 0.3)
    carrying = refusal.step(None, region, 0.3, 0.3, total, 0.0, ADMITS, room=0.0)
    assert carrying.active and carrying.in_flight is None
    rising = refusal.step(None, region, 0.0, 0.0, region.demand, 0.0, ADMITS, 0.0, 0.4)
    assert rising.in_flight is None
    assert step(region).in_flight == CAP  # the same region with no fallback


def test_not_refusing_the_loose_guard_caps_where_the_mean_wait_is_the_whole_ttft() -> None:
    """Refusing nothing, a region's gateways still cap what they hold in flight where the
    next request would wait the whole TTFT for a slot on average (slots + raw x TTFT): the
    seconds a ramp is measured behind the crowd are not left uncapped."""
    calm = dataclasses.replace(
        crowded(0.5 * RAW), unplaced=0.0, refusable=0.0, overflowing=False, load=0.5 * RAW
    )
    assert refusal.loose_in_flight(ADMITS) == LOOSE
    state = step(calm)
    assert not state.active
    assert state.in_flight == LOOSE
    assert step(dataclasses.replace(calm, gateways=2)).in_flight == LOOSE // 2


def test_capacity_still_the_prior_is_not_guarded() -> None:
    """A cap sized on the prior could bite a pool that has room."""
    calm = dataclasses.replace(
        crowded(0.5 * RAW), unplaced=0.0, refusable=0.0, overflowing=False, load=0.5 * RAW
    )
    for free in (3.0, 0.0):
        guess = refusal.admits("us-east", SLOTS, RAW, TTFT_S, rates=True, free=free, estimated=True)
        assert guess is not None
        state = refusal.step(None, calm, 0.0, 0.0, 0.0, 0.0, guess, room=0.0)
        assert state.in_flight is None


def test_the_loose_guard_does_not_hold_as_a_tight_cap_on_a_chance_excursion() -> None:
    """Only the tight cap holds through a lull: a region under the loose guard whose measured
    rate passes its level by chance, with nothing refused, keeps the loose guard (read as a
    cap to hold, it set the tight one at 65%: the planet's chat fleet lost 0.7 points)."""
    calm = dataclasses.replace(
        crowded(0.5 * RAW), unplaced=0.0, refusable=0.0, overflowing=False, load=0.5 * RAW
    )
    guarded = step(calm)
    assert guarded.in_flight == LOOSE
    excursion = dataclasses.replace(
        crowded(1.05 * ADMITS.rate), unplaced=0.0, refusable=0.0, plan={"us-east": ADMITS.rate}
    )
    assert step(excursion, guarded).in_flight == LOOSE
    assert step(excursion, step(crowded(1.3 * RAW))).in_flight == CAP  # the tight one holds


def test_a_region_that_lends_is_not_capped() -> None:
    """What its users hold elsewhere moves with the plan (sized over the share it kept, a
    cap refused more at start-up in a fleet of mixed speeds)."""
    lending = dataclasses.replace(
        crowded(1.3 * RAW),
        lending={"eu-west": Held(published=0.1, target=0.1)},
    )
    state = step(lending)
    assert state.active
    assert state.in_flight is None


def test_no_loose_guard_while_a_region_in_reach_has_room() -> None:
    """Where a rescuer has room, the request the guard would refuse is the plan's to lend:
    armed whatever the room, it kept a small region's queue short in a surge and so what it
    lent (tests/planet/test_share_stability.py)."""
    calm = dataclasses.replace(
        crowded(0.5 * RAW), unplaced=0.0, refusable=0.0, overflowing=False, load=0.5 * RAW
    )
    roomy = refusal.step(None, calm, 0.0, 0.0, 0.0, 0.0, ADMITS, room=3.0)
    assert roomy.in_flight is None
    assert refusal.step(None, calm, 0.0, 0.0, 0.0, 0.0, ADMITS, room=0.0).in_flight == LOOSE


def test_unknown_slots_are_not_capped() -> None:
    unknown = refusal.admits("us-east", None, RAW, TTFT_S, rates=True)
    assert unknown is not None
    state = refusal.step(None, crowded(1.3 * RAW), 0.0, 0.0, 0.0, 0.0, unknown, room=0.0)
    assert state.active
    assert state.in_flight is None


def test_a_region_with_batch_demand_is_not_capped() -> None:
    """Batch first is the drop fractions' order: a cap per class would split the pool, and
    an interactive burst would overflow its part while batch slots idle."""
    measured = 1.3 * RAW
    state = step(crowded(measured, batch=0.25 * measured))
    assert state.batch.published > state.interactive.published
    assert state.in_flight is None


def test_a_cap_moves_only_by_more_than_one_request() -> None:
    """A cluster's new thresholds make Envoy rebuild it: a cap within one request of the
    last holds."""
    before = dataclasses.replace(step(crowded(1.3 * RAW)), in_flight=CAP - 1)
    assert step(crowded(1.3 * RAW), before).in_flight == CAP - 1
    far = dataclasses.replace(before, in_flight=CAP - 3)
    assert step(crowded(1.3 * RAW), far).in_flight == CAP


def test_the_cap_holds_through_a_lull_while_demand_stays_beyond_the_level() -> None:
    """Envoy rebuilds a cluster whose thresholds change: a refusal that lapses for a tick
    while the demand still stands beyond the level keeps the tight cap; below it, the loose
    guard."""
    capped = step(crowded(1.3 * RAW))
    lull = dataclasses.replace(
        crowded(1.05 * ADMITS.rate), unplaced=0.0, refusable=0.0, plan={"us-east": ADMITS.rate}
    )
    held = step(lull, capped)
    assert not held.active and held.in_flight == CAP
    fresh = step(lull)  # never capped: a lull alone does not start the tight cap
    assert not fresh.active and fresh.in_flight == LOOSE
    calm = dataclasses.replace(
        crowded(0.5 * RAW), unplaced=0.0, refusable=0.0, plan={"us-east": 0.5 * RAW}
    )
    released = step(calm, capped)
    assert released.in_flight == LOOSE


def test_a_refusal_within_the_publish_band_does_not_cap_tight() -> None:
    """A fraction within the publish band is not worth a refused request (`publish`): no
    drop fraction goes out, and no tight cap either (one did, and refused 6 of a steady chat
    run's requests at 65% of capacity): the loose guard only."""
    slight = crowded(ADMITS.rate * 1.01)
    state = step(slight)
    assert 0.0 < state.interactive.target < publish.REFUSAL_BAND
    assert not state.active
    assert state.in_flight == LOOSE
    # Beyond the band the same region refuses and caps.
    assert step(crowded(1.3 * RAW)).in_flight == CAP
