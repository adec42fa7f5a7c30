"""The fallback model: what share of a model's requests another model serves, and why.

When a model's GPUs within its network budget cannot carry a region's demand, up to
`fallback.max_share` of that region's requests go to the fallback model (usually a smaller
one) instead of queueing. Units are `overflow`'s: requests/s, or endpoint units without
service rates.
For model A with fallback B and the view of region r:

- **Demand before the fallback.** r's gateways bring T_r of A's requests and send F_r of
  them to B; A sees the rest, whose own demand `overflow` estimates (overflow shares taken
  out). Each tick measures T_r = measured_r / (1 - F_r) with the share in effect and smooths
  it like every demand (EWMA, `weights.TAU_S`), so the share does not erase the pressure that
  called for it (the trap `overflow` avoids the same way); it starts over when A's units
  change, and at a surge's onset takes the step A's own estimate took (`_demand`).
- **Exhausted.** What A cannot carry within r's budget once overflow has done what it can:
      X = max(0, T_r - P_r - SLACK_TRUST slack_r)
  with P_r the part of r's demand the allocation (`overflow`, `allocation`) placed within
  budget, and slack_r what A could still take from r: r's capacity left plus its in-budget
  neighbours' room below `overflow.RESCUE_CEILING`. r engages once X is ENGAGE_EXCESS (1%)
  of T_r and stays engaged while X > 0 (the share it carries counts: it is released only once A has
  room for it again). X = 0 means no fallback: overflow keeps requests on the model asked for.
  Once the plan left some of r's demand unplaced, or r is engaged, X is also at least
      T_r - lent_r - admitted_r - SLACK_TRUST away_r
  with lent_r what the plan lends to other regions, admitted_r what r's slots admit of its
  own users this tick (`refusal.admitted`: their goodput-best level, less a late queue's
  drain) and away_r the neighbours' part of slack_r: what refusal would refuse, the
  fallback takes first (the plan may keep more at home than the slots admit).
- **Fallback headroom.** B's requests from r land on B's view of r: r and B's in-budget
  regions. Their room, sum(RESCUE_CEILING C - L) over those with live capacity, may be
  negative (B past its ceiling); B may carry at most what it carries now plus that room. No
  live capacity of B within budget: no fallback.
- **Target** = min(max_share, X / T, (F T + room_B) / T), at least 0; 0 when not engaged.
  A region keeps at least `demand.MIN_KEPT` (20%) of its requests on the model whatever
  max_share says: with none left, its demand could no longer be measured.

Tenants and the neutral view have no gateways of their own to measure. For such a group of
regions (a tenant's pinned regions; every region) A is exhausted when every region of the
group with live capacity is (as `shedding` decides for batch), the target is the group's
excess 1 - PLAN sum C / sum T, and B's room counts inside the group only: a pinned
tenant's fallback never leaves its regions, and without B there it never happens.

The target then travels to Envoy as an overflow share does (`publish.hold`): feed-forward,
published as it is in thousandths, with a dead band and no quick reversal, so the fallback
takes its place within the tick that asks for it. That matters because refusal comes after
it: refusal only takes what the fallback, at its allowed share, cannot absorb (`refusal`,
`law._fallback_move`), and a fallback that ramped in 5% steps left the gap to refusals (a
surge lost 5% of its requests to 429s while the fallback had room). A fallback model past
its own thresholds gets the share back at once (urgent); otherwise the share falls only once
the need stayed lower for `publish.RELEASE_TICKS` ticks in a row (one tick's dip in the
excess sent the share to 0, and those requests to the GPUs that had just shed them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from heliostat.balance import demand as demand_module
from heliostat.balance import overflow, publish, weights
from heliostat.balance.priorities import within_budget
from heliostat.balance.state import FallbackState, FallbackStates, RegionState
from heliostat.balance.view import ReasonValue
from heliostat.policy import Model, Policy

ENGAGE = 1.0
RELEASE = 0.9
ENGAGE_EXCESS = 0.01  # a region engages once this share of its demand has no GPU in budget
SLACK_TRUST = 0.5
PLAN = overflow.RELEASE
CEILING = overflow.RESCUE_CEILING

IDLE = "idle"  # not saturated: the model carries its demand
ABSORBED = "absorbed"  # saturated, but overflow can take the excess
EXHAUSTED = "exhausted"  # saturated, overflow at its bound or its neighbours full
NO_ROOM = "no_fallback_room"  # exhausted, but the fallback model has no room either
RELEASING = "releasing"  # pressure gone, the share is on its way back to 0


@dataclass(frozen=True, slots=True)
class Decision:
    engaged: bool
    target: float
    state: str
    pressure: float | None
    room: float | None  # B's room in the scope; None: no live capacity of B there
    saturated: bool  # B past its thresholds in the scope: the share falls without waiting
    detail: str


@dataclass(frozen=True, slots=True)
class Room:
    spare: float  # sum of CEILING x capacity - load, endpoint units; may be negative
    saturated: bool  # load >= capacity: past the thresholds


def step(
    policy: Policy,
    model: Model,
    own: Mapping[str, RegionState],
    other: Mapping[str, RegionState],
    previous: FallbackStates | None,
    dt: float,
    now: float,
    admitted: Mapping[str, float] | None = None,
) -> FallbackStates:
    """Every scope's fallback share of `model` for this tick (`model.fallback` is set).

    `own` and `other` are this tick's overflow decisions of the model and of its fallback;
    `admitted` what each region's slots admit of its own users this tick, where known
    (`refusal.admitting_rates`).
    """
    assert model.fallback is not None
    target = policy.model(model.fallback.model)
    assert target is not None, "validated: the fallback is a model of the policy"
    max_share = max_fallback(model)
    trend = weights.alpha(dt)
    regions: dict[str, FallbackState] = {}
    demands: dict[str, float] = {}
    for r in sorted(policy.spec.regions):
        before = previous.regions.get(r) if previous else None
        demands[r] = _demand(own.get(r), before, trend, now)
        admits = admitted.get(r) if admitted is not None else None
        decision = _regional(policy, model, target, r, demands[r], own, other, before, admits)
        rates = r in own and own[r].rates
        regions[r] = _publish(before, decision, demands[r], max_share, now, rates)
    tenants: dict[str, FallbackState] = {}
    for tenant in policy.spec.tenants:
        before = previous.tenants.get(tenant.name) if previous else None
        label = f"tenant {tenant.name!r} ({', '.join(tenant.regions)})"
        decision = _group(
            model, target, tenant.regions, tenant.regions, demands, own, other, before, label
        )
        tenants[tenant.name] = _publish(before, decision, 0.0, max_share, now)
    everywhere = sorted(policy.spec.regions)
    before = previous.neutral if previous else None
    decision = _group(
        model, target, everywhere, everywhere, demands, own, other, before, "every region"
    )
    neutral = _publish(before, decision, 0.0, max_share, now)
    return FallbackStates(target.name, regions, tenants, neutral)


def max_fallback(model: Model) -> float:
    """The largest share the fallback may take: max_share, at most 1 - demand.MIN_KEPT."""
    configured = model.fallback.max_share if model.fallback else 0.0
    return min(configured, 1.0 - demand_module.MIN_KEPT)


def _demand(
    region: RegionState | None, before: FallbackState | None, trend: float, now: float
) -> float:
    """The region's gateways' demand for the model, the part sent to the fallback included.

    Smoothed, and started over when the model's units change (endpoint units until some
    replica's capacity is observed, then requests/s), as the model's own estimate is
    (`overflow`): smoothed across the switch, a surge's first second read in endpoint units
    held it near 2/s for seconds while the gateways measured 15-18/s
    (tests/e2e/test_e2e_fallback's 1.5x surge), the share stayed at 0 or fell back to it,
    and a queue of 20 built, whose drain then refused every request of the region for a
    second or two. Also except at a surge's onset (the fallback not engaged yet): a rise
    the model's own demand estimate took at once (`overflow`: a step its gateways
    measured, or a rise while its queue is late; its estimate is then this tick's
    measurement) this one takes too, as that measurement over the share in effect:
    smoothed over weights.TAU_S, it lags a step of the model's estimate by seconds.
    Only at the onset: a step is a one-second rate picked for standing above the window
    (by chance as well as by a surge), and taken while engaged it lifted the estimate past
    the demand (the same surge: one region's from 14.9 to 17.4/s at 13.5 s, after which
    the refusal sized on it refused 6 requests with the fallback at its largest share).
    While a rise of the share is still inside the measurement's window
    (`demand.WINDOW_S`), the rate mixes the share before and the one after, and divided by
    the one after it overstates the demand: then the rate itself, a lower bound.
    """
    if region is None or region.measured <= 0.0:
        return 0.0
    published = before.share.published if before else 0.0
    measured = region.measured / (1.0 - published)
    if before is None or before.demand <= 0.0 or before.rates != region.rates:
        return measured  # a first reading, or new units: it starts over, as the model's does
    smoothed = before.demand + trend * (measured - before.demand)
    if region.demand != region.measured or before.engaged:
        return smoothed  # not a step the model's estimate took, or not the onset
    rising = before.share.direction > 0 and now - before.share.moved_at < demand_module.WINDOW_S
    # The rate itself while a rise of the share is inside its window: what reached the
    # model is at most what its gateways brought, whatever share was in effect.
    return max(smoothed, region.measured if rising else measured)


def _regional(
    policy: Policy,
    model: Model,
    target: Model,
    r: str,
    demand: float,
    own: Mapping[str, RegionState],
    other: Mapping[str, RegionState],
    before: FallbackState | None,
    admitted: float | None = None,
) -> Decision:
    region = own.get(r)
    room = _room(other, [r, *within_budget(policy, target, r)])
    spare = room.spare if room else None
    if region is None or demand <= 0.0:
        return Decision(False, 0.0, IDLE, None, spare, False, f"no demand for {model.name} in {r}")
    reach = [r, *within_budget(policy, model, r)]
    served = _served(own)
    # What the model could still take from r within budget: r's own capacity left, and the
    # room of its in-budget neighbours below the rescue ceiling.
    away = sum(
        max(0.0, CEILING * own[q].capacity - served.get(q, 0.0))
        for q in reach[1:]
        if q in own and own[q].capacity > 0
    )
    slack = max(0.0, region.capacity - served.get(r, 0.0)) + away
    # What the model cannot carry: its demand before the fallback less what the allocation
    # placed within budget. Not `unplaced` plus the share carried: the model's own demand
    # estimate lags the share it just gave away, and that sum would count the same requests
    # twice for a few ticks (an overshoot the hold then keeps). Room the model shows only
    # counts at SLACK_TRUST: a capacity estimate that wobbles up must not hand the share back
    # and take it again (the share returns once room is clear).
    placed = sum(region.plan.values())
    excess = max(0.0, demand - placed - SLACK_TRUST * slack)
    if admitted is not None and (region.unplaced > 0.0 or (before is not None and before.engaged)):
        # Nor what r's slots do not admit (`refusal.admitted`: their goodput-best level, less
        # a late queue's drain), which refusal would take: the plan may keep more at home
        # than that (users it cannot refuse yet), and a share sized on the plan alone left
        # the rest to refusal. Once the plan found no GPU for some of r's demand, or the
        # fallback is engaged: a level the plan has not proved full sends nothing away.
        lent = sum(x for q, x in region.plan.items() if q != r)
        excess = max(excess, demand - lent - admitted - SLACK_TRUST * away)
    pressure = demand / region.capacity if region.capacity > 0 else None
    engaged = excess / demand >= ENGAGE_EXCESS or (
        before is not None and before.engaged and excess > 0.0
    )
    unit = "/s" if region.rates else " endpoints"
    where = f"{model.name} in {r}: demand {demand:.2f}{unit}"
    if not engaged:
        # Past its own capacity, but overflow places the rest within budget.
        state = ABSORBED if region.overflowing else IDLE
        return Decision(False, 0.0, state, pressure, spare, False, where)
    why = f"{where}; within budget the model has room for {slack:.2f}{unit} beyond what it serves"
    return _decide(target, demand, excess, before, room, pressure, why)


def _served(own: Mapping[str, RegionState]) -> dict[str, float]:
    """What the allocation planned onto each region's endpoints, from every origin."""
    served: dict[str, float] = {}
    for state in own.values():
        for q, amount in state.plan.items():
            served[q] = served.get(q, 0.0) + amount
    return served


def _group(
    model: Model,
    target: Model,
    regions: Sequence[str],
    fallback_regions: Sequence[str],
    demands: Mapping[str, float],
    own: Mapping[str, RegionState],
    other: Mapping[str, RegionState],
    before: FallbackState | None,
    label: str,
) -> Decision:
    room = _room(other, fallback_regions)
    spare = room.spare if room else None
    members = [q for q in regions if q in own and own[q].capacity > 0 and demands[q] > 0.0]
    if not members:
        return Decision(
            False, 0.0, IDLE, None, spare, False, f"no live endpoint of {model.name} in {label}"
        )
    pressures = [demands[q] / own[q].capacity for q in members]
    engaged = all(p >= ENGAGE for p in pressures) or (
        before is not None and before.engaged and all(p > RELEASE for p in pressures)
    )
    demand = sum(demands[q] for q in members)
    capacity = sum(own[q].capacity for q in members)
    pressure = demand / capacity
    where = f"{model.name} in {label} at {pressure:.0%} of its thresholds"
    if not engaged:
        return Decision(False, 0.0, IDLE, pressure, spare, False, where)
    excess = max(0.0, demand - PLAN * capacity)
    return _decide(target, demand, excess, before, room, pressure, where)


def _decide(
    target: Model,
    demand: float,
    excess: float,
    before: FallbackState | None,
    room: Room | None,
    pressure: float | None,
    why: str,
) -> Decision:
    """The target share of an engaged scope, from its excess and the fallback's room."""
    if excess <= 0.0:
        return Decision(True, 0.0, ABSORBED, pressure, room.spare if room else None, False, why)
    if room is None:
        detail = f"{why}; no live endpoint of {target.name} within budget"
        return Decision(True, 0.0, NO_ROOM, pressure, None, False, detail)
    carried = (before.share.published if before else 0.0) * demand
    allowed = max(0.0, carried + room.spare) / demand
    share = min(excess / demand, allowed)
    state = EXHAUSTED if share > 0.0 else NO_ROOM
    detail = (
        f"{why}; {excess / demand:.0%} of its demand has no GPU within budget; "
        f"{target.name} has room for {room.spare:.1f} endpoints"
    )
    return Decision(True, share, state, pressure, room.spare, room.saturated, detail)


def _room(states: Mapping[str, RegionState], regions: Iterable[str]) -> Room | None:
    """The fallback model's room in these regions, or None without live capacity there."""
    live = [states[q] for q in regions if q in states and states[q].capacity > 0]
    if not live:
        return None
    capacity = sum(s.capacity for s in live)
    load = sum(s.load for s in live)
    # Past its thresholds: what arrives exceeds what it serves when full (the observed
    # capacity with rates), not the planning capacity, which a backlog's drain lowers.
    full = sum(s.raw_capacity if s.rates else s.capacity for s in live)
    return Room(CEILING * capacity - load, load >= full)


def _publish(
    before: FallbackState | None,
    decision: Decision,
    demand: float,
    max_share: float,
    now: float,
    rates: bool = False,
) -> FallbackState:
    """The decision's target, held (`publish.hold`), to what Envoy gets."""
    goal = min(decision.target, max_share)
    previous = before.share if before else None
    falling = previous is not None and goal < previous.published
    share = publish.hold(
        previous,
        goal,
        now,
        band=publish.SHARE_BAND,
        urgent=decision.saturated and falling,
        release_ticks=publish.RELEASE_TICKS,
    )
    published = share.published
    held = previous.published if previous else 0.0
    state = decision.state
    if not decision.engaged and published > 0.0:
        state = RELEASING
    reason: Mapping[str, ReasonValue]
    if before is not None and published == held and (published > 0.0 or before.state == state):
        reason = before.reason  # held: the routes that carry it do not change
    else:
        reason = _explain(decision, state, published)
    return FallbackState(
        engaged=decision.engaged,
        demand=demand,
        share=share,
        reason=reason,
        state=state,
        target=goal,
        pressure=decision.pressure,
        room=decision.room,
        rates=rates,
    )


def _explain(decision: Decision, state: str, published: float) -> dict[str, ReasonValue]:
    return {
        "state": state,
        "share": published,
        "pressure": None if decision.pressure is None else round(decision.pressure, 2),
        "detail": decision.detail,
    }
