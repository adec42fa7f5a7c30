"""A full region's refusal drains a late queue within the TTFT: batch first, then
interactive, then back to the plan's level once it drained; it holds while the plan's proof
of a full planet lapses because the refusal emptied the slots."""

from __future__ import annotations

import dataclasses

from heliostat.balance import demand, queueing, refusal
from heliostat.balance.state import RegionState

TTFT_S = 0.5
SLOTS, RAW = 16, 21.8  # four replicas of 4 slots, 0.73 s per request


def full(backlog: float = 0.0, batch: float | None = None, demand_rps: float = 28.0) -> RegionState:
    """us-east at 130% of its capacity, nowhere to lend: the plan keeps its goodput-best
    level at home and leaves the rest unplaced."""
    best = queueing.admission(SLOTS, RAW, TTFT_S, 0.95) * RAW
    return RegionState(
        capacity=0.69 * RAW,
        load=best,
        demand=demand_rps,
        overflowing=True,
        measured=demand_rps,
        endpoints=4,
        unplaced=demand_rps - best,
        refusable=demand_rps - best,
        full_since=0.0,
        plan={"us-east": best},
        source=demand.GATEWAYS,
        backlog=backlog,
        raw_capacity=RAW,
        batch=batch,
        rates=True,
        late=backlog > RAW * 0.25 * TTFT_S,
        utilisation=0.69,
    )


ADMITS = refusal.admits("us-east", SLOTS, RAW, TTFT_S, rates=True)


def test_a_full_region_with_no_late_queue_refuses_what_the_plan_leaves_unplaced() -> None:
    assert ADMITS is not None
    assert ADMITS.rate == queueing.admission(SLOTS, RAW, TTFT_S, 0.95) * RAW
    plan_only = refusal.step(None, full(), 0.0, 0.0, 0.0, 0.0)
    steady = refusal.step(None, full(), 0.0, 0.0, 0.0, 0.0, ADMITS)
    assert steady.interactive.published == plan_only.interactive.published
    assert abs((1.0 - steady.interactive.published) * 28.0 - ADMITS.rate) < 0.05  # thousandths


def test_a_late_queue_is_drained_batch_first_then_interactive_then_released() -> None:
    steady = refusal.step(None, full(batch=4.0), 0.0, 0.0, 0.0, 0.0, ADMITS)
    draining = refusal.step(steady, full(backlog=12.0, batch=4.0), 0.0, 0.0, 0.0, 0.5, ADMITS)
    assert draining.batch.published == 1.0
    assert draining.interactive.published > steady.interactive.published + 0.1
    # Refused beyond the steady level: the late part of the queue within the TTFT, less
    # what the level's slack drains by itself.
    assert ADMITS is not None
    late = 12.0 - RAW * 0.25 * TTFT_S
    extra = late / TTFT_S - (RAW - ADMITS.rate)
    refused = draining.batch.published * 4.0 + draining.interactive.published * 24.0
    assert abs(refused - (28.0 - ADMITS.rate + extra)) < 0.1
    # Drained: back to the steady level at once.
    drained = refusal.step(draining, full(batch=4.0), 0.0, 0.0, 0.0, 1.0, ADMITS)
    assert drained.interactive.published == steady.interactive.published


def test_a_region_whose_users_are_all_placed_is_not_refused_for_a_late_queue() -> None:
    """Its users all placed (the plan found room), yet its queue is late, twice running: a
    small pool queues past its tolerance by chance now and then, and a surge the plan is
    moving away drains by the shares. Refusing is for a planet the plan proved full."""
    placed = {"us-east": 24.0}
    calm = dataclasses.replace(full(), refusable=0.0, unplaced=0.0, plan=placed, demand=24.0)
    late = dataclasses.replace(calm, backlog=12.0, late=True)
    idle = refusal.step(None, calm, 0.0, 0.0, 0.0, 0.0, ADMITS)
    once = refusal.step(idle, late, 0.0, 0.0, 0.0, 0.5, ADMITS)
    twice = refusal.step(once, late, 0.0, 0.0, 0.0, 1.0, ADMITS)
    assert once.interactive.published == twice.interactive.published == 0.0


def test_once_refusing_it_holds_while_the_plan_places_nowhere() -> None:
    """Refusing empties the region's slots, which can fail the plan's proof of a full planet
    (busy regions): demand the plan still cannot place keeps the tail-sized refusal."""
    steady = refusal.step(None, full(), 0.0, 0.0, 0.0, 0.0, ADMITS)
    unproven = dataclasses.replace(full(), refusable=0.0)
    held = refusal.step(steady, unproven, 0.0, 0.0, 0.0, 0.5, ADMITS)
    assert held.interactive.published == steady.interactive.published
    placed = dataclasses.replace(full(), refusable=0.0, unplaced=0.0)
    assert refusal.step(None, placed, 0.0, 0.0, 0.0, 0.5, ADMITS).interactive.published == 0.0


def test_users_an_operators_cap_keeps_home_are_not_refused_for_a_late_queue() -> None:
    """Users an operator's cap keeps from a rescuer with room are unplaced, yet the planet is
    not full (the plan never proved it, `refusable` 0): a late queue there is not refused
    for. The headless demo's 1.3x surge under `max_share: 0.3` is this case; refusing there
    failed 11 of its 70 surge requests with 429 while eu-west had room."""
    capped = dataclasses.replace(full(), refusable=0.0)
    late = dataclasses.replace(capped, backlog=12.0, late=True)
    once = refusal.step(None, late, 0.0, 0.0, 0.0, 0.0, ADMITS)
    twice = refusal.step(once, late, 0.0, 0.0, 0.0, 0.5, ADMITS)
    assert once.interactive.published == twice.interactive.published == 0.0
