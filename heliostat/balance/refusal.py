"""Degrading on purpose: what the gateways refuse when the planet is full.

When the demand within a region's budget exceeds the capacity within it, queues would grow
without bound and every request would miss its SLO. Instead the allocation leaves the excess
unplaced, the fallback model takes what it can (it keeps its place before refusal), and the
gateways refuse the rest at once (Envoy `drop_overloads`, answered 429 with `retry-after`,
see `heliostat.xds.translate.refusal`), so the requests admitted meet the SLO.

For the view of region r with demand D (after the fallback's share in effect) and unplaced
demand U from the allocation, when the fallback share moves from F to F' this tick:

    U' = max(0, U - (F' - F) T)        with T = D / (1 - F) the demand before any fallback
    D' = (1 - F') T                    what reaches the model's clusters next
    refused fraction f = U' / D'

Sized for the admitted requests' tail (`beyond_tail`). Once r refuses (or its queue is late
at two ticks running), what r's users bring beyond what the plan lends and what r's slots
admit at `queueing.tail_admission`'s level is refused too: the allocation admits up to the
goodput-best level (`queueing.admission`), where 6-18% of the admitted wait past the TTFT on
pools of 4-16 slots, which made the admitted p99 seconds. While r's queue is late, that
level is lowered further for as long as it takes to drain the late part of the queue within
the TTFT (beyond what the level's slack drains by itself), then returns: on a ramp the
demand estimate lags the crowd by seconds and the queue it builds makes every request
admitted behind it late. The rescuers' room (`overflow`) still comes from the goodput-best
level: the cap is on a region's own users, once it refuses them.

Batch first: when r's gateways report the batch part D_b of the demand (LRS on the batch
cluster), the batch cluster refuses min(1, f D' / D_b') and the interactive cluster only what
is left (a backlog's drain included: batch first, then interactive); without that split both
refuse f. The neutral view (nodes of unknown regions)
refuses the planet's unplaced share, the same way. A refusal sized from demand inferred from
engines (no gateway reports) is at most `demand.MAX_INFERRED_REFUSAL`. Fractions are
published in thousandths with the hysteresis of `publish` (a 2-point band: refusing less
than that is not worth a refused request, the backlog term absorbs it; no quick reversal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from heliostat.balance import demand, overflow, publish, queueing
from heliostat.balance.state import Held, RefusalState, RegionState

IDLE = RefusalState(interactive=publish.NOTHING, batch=publish.NOTHING)
MIN_RAISE = 0.02
# Of the TTFT objective, what an admitted request at the tail may spend waiting for a slot
# (`queueing.tail_admission`): the rest is its own prefill and the network, and the tail's
# requests are the ones with long prompts. Half, not the plan's QUEUE_SHARE (a quarter, for
# the typical request's wait): the planet's chat mix at 40% load already has a p99 of
# 0.2-0.46 s against a 0.5 s objective, with no wait at all.
TAIL_WAIT_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Admits:
    """What a region's slots admit of its own users when it refuses (see `beyond_tail`)."""

    region: str
    slots: int | None  # every live endpoint's slots added up (None: unknown)
    raw: float  # their observed capacity, requests/s
    ttft_s: float

    def rate(self, lent: float) -> float:
        """Requests/s of its own users its slots admit at the tail-sized level
        (`queueing.tail_admission`), `lent` more of them being served elsewhere."""
        level = queueing.tail_admission(
            self.slots,
            self.raw,
            TAIL_WAIT_SHARE * self.ttft_s,
            self.ttft_s,
            overflow.UTILISATION,
            beside=lent,
        )
        return level * self.raw

    @property
    def tolerated(self) -> float:
        """The backlog its users can wait behind within the SLO (`overflow.tolerated`)."""
        return self.raw * overflow.QUEUE_SHARE * self.ttft_s


def admits(region: str, slots: int | None, raw: float, ttft_s: float, rates: bool) -> Admits | None:
    """The region's `Admits` from its slots and observed capacity (requests/s), None in
    endpoint units (no rates: no queueing model to size a tail with)."""
    if not rates or raw <= 0.0:
        return None
    return Admits(region, slots, raw, ttft_s)


def beyond_tail(region: RegionState, own: Admits, reaching: float, overdue: bool) -> float:
    """What of the region's users (`reaching` its gateways' model clusters) its slots do not
    admit within the SLO's tail, once it refuses: what the plan does not lend, less what its
    slots take at `queueing.tail_admission`'s level (its users lent count among the
    admitted, served in time), and less again, while its queue is late (`overdue`, see
    `step`), what drains the late part of it within the TTFT beyond what that level's slack
    drains.

    Sized for the admitted requests' tail, not for goodput alone: the allocation admits up
    to the goodput-best level (`queueing.admission`), where 6-18% of the admitted wait past
    the TTFT on pools of 4-16 slots. And a late queue is drained by refusing, not only
    through slack: a ramp builds a queue in the seconds its demand estimate lags, and every
    request admitted behind it is late until it drains."""
    lent = sum(x for q, x in region.plan.items() if q != own.region)
    rate = own.rate(lent)
    late = max(0.0, region.backlog - own.tolerated) if overdue else 0.0
    slack = max(0.0, own.raw - rate)
    allowed = max(0.0, rate - max(0.0, late / own.ttft_s - slack))
    return max(0.0, reaching - lent - allowed)


def step(
    previous: RefusalState | None,
    region: RegionState | None,
    fallback_before: float,
    fallback_after: float,
    before_fallback: float,
    now: float,
    admits: Admits | None = None,
) -> RefusalState:
    """The refusal of one region's view for this tick.

    `fallback_before` and `fallback_after` are the fallback's share of the region's users in
    effect and the one it is going to, `before_fallback` the fallback's own estimate of
    their demand before it (0.0 without a fallback). Refusal only takes what the fallback at
    its share cannot absorb: the demand that reaches the model, T x (1 - fallback_after),
    less what the allocation placed, and never more than the allocation found unplaced. Not
    `refusable` less the fallback's last move: the model's own demand estimate lags the
    share just given to the fallback, and for a few ticks it would refuse what the fallback
    already carries.
    """
    if region is None or region.demand <= 0.0:
        return _publish(previous, 0.0, None, 0.0, 0.0, now, "no demand")
    # A late queue is drained by refusing (`beyond_tail`): late at this tick and the last
    # (not one noisy scrape), or at this tick once refusing (the planet is known full).
    # What drains a backlog follows the drain down at once, as overflow shares do.
    overdue = region.late and previous is not None and (previous.late or previous.active)
    draining = overdue or overflow.drains_now(region) or (previous is not None and previous.late)
    total = region.demand / max(1e-9, 1.0 - fallback_before)
    excess = max(0.0, region.refusable - (fallback_after - fallback_before) * total)
    if before_fallback > 0.0:
        total = before_fallback
        unabsorbed = total * (1.0 - fallback_after) - sum(region.plan.values())
        excess = max(0.0, min(region.refusable, unabsorbed))
    reaching = (1.0 - fallback_after) * total
    inferred = region.source != demand.GATEWAYS
    # Once refusing, the region's own slots are less busy because it refuses: the plan's
    # proof of a full planet (`overflow._refusable`: busy regions) can fail on that alone.
    # Demand the plan still cannot place anywhere keeps the tail-sized refusal on, as long
    # as the plan once proved the planet full (`RefusalState.excess`, carried): not a
    # region whose users an operator's cap keeps from a rescuer with room.
    holding = previous is not None and previous.excess > 0.0 and region.unplaced > 0.0
    proven = excess if excess > 0.0 or not holding or previous is None else previous.excess
    if admits is not None and not inferred and (proven > 0.0 or overdue):
        excess = min(reaching, max(excess, beyond_tail(region, admits, reaching, overdue)))
    fraction = excess / reaching if reaching > 0 else 0.0
    if inferred:  # nothing measures what it refuses: bounded
        fraction = min(fraction, demand.MAX_INFERRED_REFUSAL)
    batch = None
    if region.batch is not None and region.measured > 0:
        batch = region.batch / region.measured * reaching
    unit = "/s" if region.rates else " endpoints"
    detail = (
        f"demand {reaching:.2f}{unit}, {excess:.2f}{unit} has no GPU within budget"
        if excess > 0
        else "every user placed within budget"
    )
    return _publish(
        previous,
        fraction,
        batch,
        reaching,
        proven,
        now,
        detail,
        inferred=inferred,
        draining=draining,
        late=region.late,
    )


def neutral(
    previous: RefusalState | None, regions: Mapping[str, RegionState], now: float
) -> RefusalState:
    """The neutral view's refusal: the planet's unplaced share of its demand."""
    total = sum(r.demand for r in regions.values())
    excess = sum(r.refusable for r in regions.values())
    fraction = excess / total if total > 0 else 0.0
    inferred = any(r.source != demand.GATEWAYS for r in regions.values() if r.demand > 0)
    if inferred:
        fraction = min(fraction, demand.MAX_INFERRED_REFUSAL)
    unit = "/s" if any(r.rates for r in regions.values()) else " endpoints"
    detail = f"planet demand {total:.2f}{unit}, {excess:.2f}{unit} unplaced"
    return _publish(previous, fraction, None, total, excess, now, detail, inferred=inferred)


def _publish(
    previous: RefusalState | None,
    fraction: float,
    batch: float | None,
    amount: float,
    excess: float,
    now: float,
    detail: str,
    *,
    inferred: bool = False,
    draining: bool = False,
    late: bool = False,
) -> RefusalState:
    before = previous or IDLE
    if batch is None:
        batch_target = interactive_target = fraction
    else:
        refused = fraction * amount
        interactive = amount - batch
        batch_target = min(1.0, refused / batch) if batch > 0 else 0.0
        # Batch first: interactive requests only for what the batch ones do not cover.
        left = max(0.0, refused - batch)
        interactive_target = min(1.0, left / interactive) if interactive > 0 else 0.0
    return RefusalState(
        interactive=_held(
            before.interactive, interactive_target, now, "interactive", detail, inferred, draining
        ),
        batch=_held(before.batch, batch_target, now, "batch", detail, inferred, draining),
        excess=excess,
        demand=amount,
        detail=detail,
        late=late,
    )


def _held(
    before: Held,
    target: float,
    now: float,
    kind: str,
    detail: str,
    inferred: bool,
    draining: bool = False,
) -> Held:
    # Raising a refusal protects the admitted requests' SLO: it goes through at once. With
    # inferred demand a raise is at least MIN_RAISE (capped): if the engines do not answer
    # the refusal, the estimate creeps up, and a crawl would never settle.
    if inferred and before.published + publish.REFUSAL_BAND / 2 <= target < (
        before.published + MIN_RAISE
    ):
        target = min(demand.MAX_INFERRED_REFUSAL, before.published + MIN_RAISE)
    raising = publish.quantise(target) > before.published
    urgent = raising and target - before.published >= publish.REFUSAL_BAND
    return publish.hold(
        before,
        target,
        now,
        band=publish.REFUSAL_BAND,
        reversal_s=publish.REFUSAL_REVERSAL_S,
        urgent=urgent or (draining and not raising),
        falls_after=publish.RELEASE_TICKS,
        reason=lambda value: f"refuses {value:.1%} of {kind} requests: {detail}" if value else "",
    )
