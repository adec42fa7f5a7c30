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

Batch first: when r's gateways report the batch part D_b of the demand (LRS on the batch
cluster), the batch cluster refuses min(1, f D' / D_b') and the interactive cluster only what
is left; without that split both refuse f. The neutral view (nodes of unknown regions)
refuses the planet's unplaced share, the same way. A refusal sized from demand inferred from
engines (no gateway reports) is at most `demand.MAX_INFERRED_REFUSAL`. Fractions are
published in thousandths with the hysteresis of `publish` (a 2-point band: refusing less
than that is not worth a refused request, the backlog term absorbs it; no quick reversal).
"""

from __future__ import annotations

from collections.abc import Mapping

from heliostat.balance import demand, overflow, publish
from heliostat.balance.state import Held, RefusalState, RegionState

IDLE = RefusalState(interactive=publish.NOTHING, batch=publish.NOTHING)
MIN_RAISE = 0.02


def step(
    previous: RefusalState | None,
    region: RegionState | None,
    fallback_before: float,
    fallback_after: float,
    before_fallback: float,
    now: float,
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
    # Part of what a late region refuses drains its backlog (its planning capacity is down
    # by the drain): that part follows the drain down at once, as overflow shares do.
    # A backlog that lasted two ticks (`overflow.drains_now`), not one tick's blip.
    late = overflow.drains_now(region)
    draining = late or (previous is not None and previous.late)
    total = region.demand / max(1e-9, 1.0 - fallback_before)
    excess = max(0.0, region.refusable - (fallback_after - fallback_before) * total)
    if before_fallback > 0.0:
        total = before_fallback
        unabsorbed = total * (1.0 - fallback_after) - sum(region.plan.values())
        excess = max(0.0, min(region.refusable, unabsorbed))
    reaching = (1.0 - fallback_after) * total
    fraction = excess / reaching if reaching > 0 else 0.0
    inferred = region.source != demand.GATEWAYS
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
    # What of it drains the backlog rather than the arrivals' excess: the capacity the
    # backlog term took off (`overflow.planning_capacity`). Batch alone carries that part.
    drain = 0.0
    if region.rates:
        drain = max(0.0, region.utilisation * region.raw_capacity - region.capacity)
    return _publish(
        previous,
        fraction,
        batch,
        reaching,
        excess,
        now,
        detail,
        inferred=inferred,
        draining=draining,
        late=late,
        drain=drain,
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
    drain: float = 0.0,
) -> RefusalState:
    before = previous or IDLE
    if batch is None:
        batch_target = interactive_target = fraction
    else:
        refused = fraction * amount
        interactive = amount - batch
        batch_target = min(1.0, refused / batch) if batch > 0 else 0.0
        # Interactive requests are refused only for the arrivals' excess beyond the batch
        # ones, never to drain a backlog faster: batch first.
        left = max(0.0, refused - drain - batch)
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
