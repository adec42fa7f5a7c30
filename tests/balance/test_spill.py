"""The paying share (`spill`): a small region above its planning level sends away only what
saves its users time net of the round trip, and keeps a share it lends while it costs little.

The bench's chat fleet: one 4-slot replica in ap-southeast (5.35 requests/s when full),
eu-west 3 of them (12 slots, 16 requests/s), 160 ms apart, a 500 ms TTFT objective.
"""

from __future__ import annotations

import dataclasses

import pytest

from heliostat.balance import overflow, queueing, spill
from heliostat.balance.demand import GatewayLoad, OriginLoad
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


@pytest.mark.parametrize("backlog", [0.0, 2.0])
def test_the_law_lends_the_paying_share_even_with_a_request_or_two_queued(backlog: float) -> None:
    """One tick of `overflow.step` with every region at 65%, measured by its gateways.
    Before: ap-southeast lent 23% of its users (what its planning level and strain left
    over), and eu-west, with no room left below its own planning level, passed 7.7% of its
    users on to us-east (80 ms) to make room. Now the paying share, about a seventh, lands
    at eu-west's own slots, whose added waits `spill` weighed already."""
    policy = policy_of({"us-east": 4, "eu-west": 3, "ap-southeast": 1}, budget=170, max_share=None)
    model = policy.spec.models[0]
    model = model.model_copy(update={"slo": model.slo.model_copy(update={"ttft_ms": 500.0})})
    counts = {"us-east": 4, "eu-west": 3, "ap-southeast": 1}
    now = 100.0
    loads = GatewayLoad(
        {
            (model.name, r): OriginLoad(interactive=0.65 * 5.35 * n, at=now)
            for r, n in counts.items()
        }
    )
    regions = {
        r: supply(n, 0.65, backlog if r == "ap-southeast" else 0.0) for r, n in counts.items()
    }
    plan = overflow.step(policy, model, regions, True, loads, {}, {}, 0.5, now)
    lent = plan["ap-southeast"].lending
    share = sum(h.published for h in lent.values())
    assert 0.05 <= share <= 0.2, {q: h.published for q, h in lent.items()}
    # The rescuer does not pass its own users on to make room for them.
    assert sum(h.published for h in plan["eu-west"].lending.values()) == 0.0
