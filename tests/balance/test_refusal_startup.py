"""A region whose slots are not all in use is not drained by refusing, nor refuses on sight
on a capacity it has not observed.

At start-up in a fleet of speeds 1 and 3 (bench/scenarios/mixed_gpus.yaml) a replica not yet
observed carries the prior, the model's median capacity per slot: a slow replica's. The
region's capacity then reads half its true one, the slow replicas queue while the weights
are still equal, and their queues read as a late region: refusals at 65% load. A queue on
one replica while a peer has a slot free is a balancing problem inside the region
(`refusal.Admits.busy`), and a level sized on a prior proves nothing full that has room
(`refusal.early`)."""

from __future__ import annotations

import dataclasses

from heliostat.balance import overflow, refusal
from heliostat.balance.state import RefusalState, RegionState

TTFT_S = 0.5
SLOTS, RAW = 8, 14.5  # ap-southeast: one replica of speed 1 and one of speed 3, 4 slots each


def _region(measured: float, raw: float, backlog: float = 0.0) -> RegionState:
    tolerated = raw * overflow.QUEUE_SHARE * TTFT_S
    return RegionState(
        capacity=0.9 * raw,
        load=measured,
        demand=measured,
        overflowing=False,
        measured=measured,
        endpoints=2,
        plan={"ap-southeast": measured},
        source="gateways",
        backlog=backlog,
        raw_capacity=raw,
        rates=True,
        late=backlog > tolerated,
    )


def _admits(raw: float, free: float, estimated: bool = False) -> refusal.Admits:
    admits = refusal.admits("ap-southeast", SLOTS, raw, TTFT_S, True, free, estimated)
    assert admits is not None
    return admits


def test_a_queue_beside_a_free_slot_is_not_drained_by_refusing() -> None:
    """Its users at 65%, six requests queued on the slow replica, late at this tick and the
    last: with every slot in use the queue is drained by refusing; with the fast replica's
    slots free, nothing is refused."""
    measured, queued = 0.65 * RAW, 6.0
    region = _region(measured, RAW, queued)
    assert region.late
    before = dataclasses.replace(refusal.IDLE, late=True)
    full = refusal.step(before, region, 0.0, 0.0, 0.0, 1.0, _admits(RAW, 0.0), room=0.0)
    assert full.interactive.published > 0.1
    free = refusal.step(before, region, 0.0, 0.0, 0.0, 1.0, _admits(RAW, 3.0), room=0.0)
    assert free.interactive.published == 0.0
    assert not free.active


def test_a_prior_capacity_with_a_free_slot_refuses_nothing_on_sight() -> None:
    """At start-up its capacity reads 7.3/s (the slow replica's prior for both), its users
    bring 65% of the true 14.5/s: beyond the level of the prior, not of the slots."""
    raw, measured = 7.3, 0.65 * RAW
    region = _region(measured, raw)
    estimated = _admits(raw, 2.0, estimated=True)
    assert refusal.early(region, dataclasses.replace(estimated, free=0.0), 1.0, 0.0, False) > 0.0
    assert (
        refusal.early(region, dataclasses.replace(estimated, estimated=False), 1.0, 0.0, False)
        > 0.0
    )
    assert refusal.early(region, estimated, 1.0, 0.0, False) == 0.0
    state = refusal.step(None, region, 0.0, 0.0, 0.0, 0.0, estimated, room=0.0)
    assert not state.active
    assert isinstance(state, RefusalState)
