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

A late queue is drained by refusing (`beyond_admission`). Once r refuses (or its queue is
late), what r's users bring beyond what the plan lends and what r's slots admit at their
goodput-best level (`queueing.admission`, taken on their observed capacity) is refused, and
while r's queue is late that level is lowered for as long as it takes to drain the late part
of the queue within the TTFT (beyond what the level's slack drains by itself), then returns.
Before, the plan drained a late backlog within DRAIN_S through the batch class only, the
interactive requests never refused for it: on a ramp the demand estimate lags the crowd by
seconds, the queue it builds drained through slack alone, and every request admitted behind
it was late. The rescuers' room (`overflow`) is the plan's, untouched.

On sight (`early`): the plan reads a smoothed demand and refuses only once it proved the
planet full; on a ramp both lag the crowd by seconds. So, whatever the plan says, what r's
gateways measure this tick, less `overflow.RISE_SIGMAS` Poisson deviations of that rate,
beyond what the plan lends, what r's slots admit at their goodput-best level and the room
the regions in r's reach still have (`rooms`: room anywhere is the plan's to lend, not
refused) is refused at once, as a share of what arrives now (the measured rate). Not on
demand inferred from engines; the fallback's move this tick is taken off first. Once so refused, the
steady rule above applies as if the plan had proved the planet full.

In flight (`in_flight`): a drop fraction refuses at random, and a random stream thinned to
the goodput-best level still finds every slot busy now and then and waits (6-11% of the
admitted were late once the planet's flash crowd held). So while r refuses and keeps its
admitted users at home, each of its gateways also caps what it has in flight at r's slots
and the backlog the SLO tolerates (split over its gateways; interactive demand only: batch
first is the drop fractions' order): past it Envoy answers 503 at once (a circuit
breaker's overflow, `heliostat.xds.translate.resilience`), the request that would have
waited for a slot. The cap holds while r's demand stays beyond its level. Not refusing,
and with no room left in r's reach, a loose guard stays armed (`loose_in_flight`: r's
slots and what they complete within the TTFT, where the next request's mean wait is the
whole TTFT): it refuses only requests late on average.

Envoy 1.40 rebuilds a cluster whose thresholds change through CDS, and the rebuilt
cluster's count of requests in flight starts at 0: the requests in flight on the old one
(which finish there, not reset; its connections drain) are not counted against the new
cap, so for about one request's time after a move the gateway admits up to the new cap on
top of them (bench/measure/breaker_update.py). A runtime override of
`circuit_breakers.<cluster>.<priority>.max_requests` (RTDS) moves the cap with the count
kept and no rebuild; heliostat serves no RTDS yet. Hence the caps move only by more than
one request, and the tight cap holds through a lull.

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

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from heliostat.balance import demand, overflow, publish, queueing
from heliostat.balance.priorities import within_budget
from heliostat.balance.state import Held, RefusalState, RegionState
from heliostat.policy import Model, Policy

IDLE = RefusalState(interactive=publish.NOTHING, batch=publish.NOTHING)
MIN_RAISE = 0.02


@dataclass(frozen=True, slots=True)
class Admits:
    """What a region's slots admit of its own users when it refuses (`beyond_admission`)."""

    region: str
    slots: int | None  # every live endpoint's slots added up (None: unknown)
    raw: float  # their observed capacity, requests/s
    ttft_s: float
    free: float = 0.0  # their slots free now (`overflow.Supply.free`)
    estimated: bool = False  # some endpoint's capacity is still the prior, not observed

    @property
    def rate(self) -> float:
        """Requests/s of its own users its slots admit at most: the goodput-best level
        (`queueing.admission`) of its observed capacity."""
        level = queueing.admission(self.slots, self.raw, self.ttft_s, overflow.UTILISATION)
        return level * self.raw

    @property
    def busy(self) -> bool:
        """Every one of its slots is in use now (less than one free).

        A late queue is drained by refusing only then: a queue on one replica while a peer
        has a slot free is a balancing problem inside the region, not a full region. The
        queued requests wait there whatever the gateways refuse, and the next ones go to
        the free slot (least-request, and the weights as the capacities are learnt);
        refusing them drains nothing sooner. At start-up in a fleet of speeds 1 and 3
        (tests/planet/test_startup_refusal.py) the slow replicas queue while the weights
        are still equal, and their queues made regions at 65% load refuse."""
        return self.free < 1.0

    @property
    def tolerated(self) -> float:
        """The backlog its users can wait behind within the SLO (`overflow.tolerated`)."""
        return self.raw * overflow.QUEUE_SHARE * self.ttft_s


def admits(
    region: str,
    slots: int | None,
    raw: float,
    ttft_s: float,
    rates: bool,
    free: float = 0.0,
    estimated: bool = False,
) -> Admits | None:
    """The region's `Admits` from its slots and observed capacity (requests/s), None in
    endpoint units (no rates: no queueing model to size a level with)."""
    if not rates or raw <= 0.0:
        return None
    return Admits(region, slots, raw, ttft_s, free, estimated)


def beyond_admission(region: RegionState, own: Admits, reaching: float, overdue: bool) -> float:
    """What of the region's users (`reaching` its gateways' model clusters) its slots do not
    admit, once it refuses: what the plan does not lend, less what its slots take at their
    goodput-best level, and less again, while its queue is late (`overdue`, see `step`),
    what drains the late part of it within the TTFT beyond what that level's slack drains
    (`admitted`).

    The drain is the point: a late queue is drained by refusing, not only through slack. A
    ramp builds a queue in the seconds its demand estimate lags, and every request admitted
    behind it is late until it drains; refused now, the requests behind it are on time."""
    lent = sum(x for q, x in region.plan.items() if q != own.region)
    return max(0.0, reaching - lent - admitted(region, own, overdue))


def admitted(region: RegionState, own: Admits, overdue: bool) -> float:
    """Requests/s of its own users the region's slots admit this tick: their goodput-best
    level (`Admits.rate`), lowered while its queue is late (`overdue`) by what drains the
    late part of it within the TTFT beyond what that level's slack drains by itself."""
    late = max(0.0, region.backlog - own.tolerated) if overdue else 0.0
    slack = max(0.0, own.raw - own.rate)
    return max(0.0, own.rate - max(0.0, late / own.ttft_s - slack))


def is_overdue(region: RegionState, own: Admits | None, previous: RefusalState | None) -> bool:
    """The region's queue is late and is drained by refusing (`beyond_admission`): late at
    this tick and the last (not one noisy scrape), or at this tick once refusing (the planet
    is known full); and only while every slot of the region is in use (`Admits.busy`)."""
    busy = own is None or own.busy
    return region.late and busy and previous is not None and (previous.late or previous.active)


def admitting_rates(
    regions: Mapping[str, RegionState],
    admitting: Mapping[str, Admits | None],
    previous: Mapping[str, RefusalState],
) -> dict[str, float]:
    """Per region whose slots' level is known, what they admit of its own users this tick
    (`admitted`, the drain of a late queue included, as `step` will size it): for the
    fallback model (`fallback`), which takes what they do not admit before refusal does.
    Not a region whose capacity is still the prior with a slot free now (as `early`: a
    level sized on a guess proves nothing full)."""
    result: dict[str, float] = {}
    for r, region in regions.items():
        own = admitting.get(r)
        if own is None or (own.estimated and not own.busy):
            continue
        result[r] = admitted(region, own, is_overdue(region, own, previous.get(r)))
    return result


def rooms(
    policy: Policy,
    model: Model,
    regions: Mapping[str, RegionState],
    admitting: Mapping[str, Admits | None],
) -> dict[str, float]:
    """Per origin, the room the regions it may reach (directly or onward, within budget)
    still have for others' users: below RESCUE_CEILING of their goodput-best level, less
    what the plan puts on them and what their own users' measured rise (beyond a deviation)
    adds to that. Generous on purpose (onward regions counted whole): room anywhere keeps
    `early` from refusing, and the plan lends it instead."""
    room: dict[str, float] = {}
    for q, region in regions.items():
        own = admitting.get(q)
        if own is None:
            continue
        placed = sum(r.plan.get(q, 0.0) for r in regions.values())
        rising = max(0.0, surge(region) - region.demand)
        room[q] = max(0.0, overflow.RESCUE_CEILING * own.rate - placed - rising)
    result = {}
    for r in regions:
        reach = set(within_budget(policy, model, r))
        for q in list(reach):
            reach.update(within_budget(policy, model, q))
        reach.discard(r)
        result[r] = sum(room.get(q, 0.0) for q in reach)
    return result


def surge(region: RegionState) -> float:
    """The region's demand as its gateways measure it this tick, less `overflow.RISE_SIGMAS`
    Poisson deviations of that rate over the reports' window (`demand.WINDOW_S`); 0.0 when
    the demand is not measured at its gateways (`overflow.surge`). What `early` refuses on
    sight stands beyond the level by more than that, so a chance excursion of the rate
    refuses little or nothing, and what it refuses falls within the publish band."""
    return overflow.surge(region.measured, region.source)


def early(region: RegionState, own: Admits, scale: float, room: float, overdue: bool) -> float:
    """What of the region's users to refuse on sight: their measured rate (`surge`, after the
    fallback's move: `scale`) beyond what the plan lends, what its slots admit at their
    goodput-best level and the room the regions in reach still have (`rooms`).

    The plan reads a smoothed demand and refuses only once it proved the planet full
    (`overflow._refusable`); on a ramp both lag the crowd by seconds, and every request
    admitted past the goodput-best level meanwhile queues, making the later ones late.
    Measured above the level by more than chance, with nowhere to lend it, the excess has
    no better fate than a refusal now.

    Not while some of the region's capacity is still the prior (`Admits.estimated`: the
    model's median per slot, a slow replica's in a fleet of mixed speeds) and a slot of it
    is free now: a level sized on a guess proves nothing full that has room. At start-up in
    a fleet of speeds 1 and 3 a region's capacity read half its true one, and its users at
    65% read as beyond its level (tests/planet/test_startup_refusal.py)."""
    if own.estimated and not own.busy:
        return 0.0
    return max(0.0, beyond_admission(region, own, surge(region) * scale, overdue) - room)


def capacity_in_flight(own: Admits) -> int:
    """The requests a region's slots hold in flight without making one wait past the SLO:
    its slots, and the backlog its users can wait behind within the TTFT objective
    (`Admits.tolerated`). With slots alone, the cap is a loss system: at 90% of a pool of 8
    slots Erlang's formula refuses ~20% of arrivals that a short wait would have served
    (tests/e2e/test_e2e_fallback's 1.5x surge, the fallback taking its share: 76 of 997
    requests refused by the cap with slots alone, 38 with this; `step` now leaves a model
    with a fallback uncapped)."""
    slots = own.slots or 0
    return slots + math.floor(own.tolerated)


def loose_in_flight(own: Admits) -> int:
    """The requests a region's slots hold in flight before the next one's mean wait for a
    slot is the whole TTFT objective: its slots, and as many again as they complete within
    the TTFT (`Admits.raw` x TTFT). The guard `step` arms whenever the region's capacity is
    observed, refusing or not.

    Why: with N requests in flight on c busy slots completing K requests/s, the next one
    waits (N - c + 1) / K for a slot on average. Past c + K x TTFT it is late on average
    whatever else happens, and admitted it holds a place in the queue that makes every
    request behind it later too; refused at once (503 with retry-after) it costs nothing a
    wait would have saved. Below that the cap refuses nothing: a pool at 65% holds more
    than that by chance once in thousands of looks (a 4-slot pool of ~5.4/s at 500 ms: a
    cap of 6, where M/M/4 at 0.65 waits past 2 in line about 5% of the time, and those
    were late 60% of the time on the planet's chat fleet). What it is for: the seconds a
    ramp is measured behind the crowd (`demand.WINDOW_S`) and a region that lends (the
    tight cap, `capacity_in_flight`, only arms once refusing proved the planet full): on
    the planet's flash crowd (12 seeds) 189 of the 330 late admitted requests came before
    the first refusal, and a region's users were late 10% of the time while it lent."""
    return (own.slots or 0) + math.floor(own.raw * own.ttft_s)


def in_flight(
    region: RegionState,
    own: Admits,
    refused: RefusalState,
    previous: RefusalState | None,
    *,
    loose: bool = False,
) -> RefusalState:
    """The refusal with what each of the region's gateways has in flight on its interactive
    cluster capped (Envoy's max_requests) at its slots and the backlog the SLO tolerates
    (`capacity_in_flight`; `loose`: `loose_in_flight`), split over its gateways, while its
    admitted users all stay at home and its gateways report no batch demand. `refused`
    unchanged otherwise: while it lends, what its users hold elsewhere moves with the plan;
    with batch demand, batch first is the drop fractions' order, and a cap per class splits
    the pool (in tests/e2e's batch-first refusals 36 of 198 and 45 of 135 interactive
    requests overflowed a cap sized on their share); slots unknown. A cap moves only by
    more than one request (Envoy rebuilds the cluster, see the module docstring).

    A drop fraction refuses at random: it thins the arrivals to the goodput-best level
    (`queueing.admission`), and a random stream at that level still finds every slot busy
    now and then and waits: 6-11% of the admitted waited past the TTFT once the planet's
    flash crowd held (pools of 4-16 slots), the admitted p99 near 1 s. A cap refuses the
    request that would wait for a slot: past it Envoy answers 503 at once (a circuit
    breaker's overflow), an admitted request finds a slot free and none idles while one is
    refused. On the planet's flash crowd (six seeds) 1-2% of the admitted were late once it
    held, and the admitted p99 fell from 1.03 s to 0.69 s, goodput 27.23 -> 27.53/s."""
    # Not while it lends: what its users hold elsewhere moves with the plan. Sized over the
    # share it keeps, a cap while lending refused more at start-up in a fleet of speeds 1 and
    # 3 (tests/planet/test_startup_refusal.py, seed 7: 0.19% against 0.12%) and moved the
    # planet's flash crowd by nothing measurable (flash-split.md: 664 ms either way).
    if own.slots is None or own.slots <= 0 or region.shares or (region.batch or 0.0) > 0.0:
        return refused
    size = loose_in_flight(own) if loose else capacity_in_flight(own)
    cap = max(1, math.ceil(size / max(1, region.gateways)))
    if (
        previous is not None
        and previous.in_flight is not None
        and abs(cap - previous.in_flight) <= 1
    ):
        cap = previous.in_flight
    return dataclasses.replace(refused, in_flight=cap)


def tight_before(region: RegionState, own: Admits, previous: RefusalState | None) -> bool:
    """The region's gateways held the tight cap at the last tick (`capacity_in_flight`, as
    `in_flight` sizes it now, within the one request a cap may stand off by), not the loose
    guard."""
    if previous is None or previous.in_flight is None:
        return False
    tight = math.ceil(capacity_in_flight(own) / max(1, region.gateways))
    return previous.in_flight <= tight + 1


def step(
    previous: RefusalState | None,
    region: RegionState | None,
    fallback_before: float,
    fallback_after: float,
    before_fallback: float,
    now: float,
    admits: Admits | None = None,
    room: float | None = None,
    fallback_reach: float = 0.0,
) -> RefusalState:
    """The refusal of one region's view for this tick.

    `fallback_before` and `fallback_after` are the fallback's share of the region's users in
    effect and the one it is going to, `before_fallback` the fallback's own estimate of
    their demand before it (0.0 without a fallback). Refusal only takes what the fallback at
    its share cannot absorb: the demand that reaches the model, T x (1 - fallback_after),
    less what the allocation placed, and never more than the allocation found unplaced. Not
    `refusable` less the fallback's last move: the model's own demand estimate lags the
    share just given to the fallback, and for a few ticks it would refuse what the fallback
    already carries. `fallback_reach` is the share the fallback may still rise to (`law`:
    its max share while it has room): while it is above the share the fallback goes to,
    nothing is refused on sight (`early`) and a late queue is not drained by refusing.
    """
    if region is None or region.demand <= 0.0:
        return _publish(previous, 0.0, None, 0.0, 0.0, now, "no demand")
    # A late queue is drained by refusing (`beyond_admission`, `is_overdue`).
    # What drains a backlog follows the drain down at once, as overflow shares do.
    overdue = is_overdue(region, admits, previous)
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
    # Demand the plan still cannot place anywhere keeps the refusal on, as long
    # as the plan once proved the planet full (`RefusalState.excess`, carried): not a
    # region whose users an operator's cap keeps from a rescuer with room.
    holding = previous is not None and previous.excess > 0.0 and region.unplaced > 0.0
    proven = excess if excess > 0.0 or not holding or previous is None else previous.excess
    # Only once the plan proved the planet full: a queue late for a burst, or behind an
    # operator's cap that keeps users from a rescuer with room, is not refused for (the
    # headless demo's 1.3x surge under max_share 30% refused 11 of 70 before this).
    sighted = 0.0
    # The fallback keeps its place before refusal: it engages on the smoothed demand, which
    # lags the measured rate, so while it may still rise (`fallback_reach`) nothing is
    # refused on sight; the plan's refusal takes what it leaves. Refused on sight at the
    # fallback's share this tick, a 1.5x surge on a model whose fallback had room lost 9%
    # of its requests to 429s in its first seconds (tests/e2e/test_e2e_fallback: 86 of 997
    # against 36); refused beyond what the fallback at its largest share would leave, still
    # 59-63: the slots' goodput-best level is below what the plan has the model carry.
    rising_fallback = fallback_reach > fallback_after
    if admits is not None and not inferred and room is not None and not rising_fallback:
        # Measured beyond the level with nowhere to lend it (`early`): refused this tick,
        # not once the plan proved the planet full.
        scale = (1.0 - fallback_after) / max(1e-9, 1.0 - fallback_before)
        sighted = early(region, admits, scale, room, overdue)
        if sighted > 0.0:
            proven = max(proven, sighted)
    if admits is not None and not inferred and proven > 0.0:
        # A late queue is drained by refusing only once the fallback cannot rise further to
        # take the drain (it takes what the slots do not admit, the drain included, before
        # refusal: `fallback`, `admitting_rates`): up to its largest share it is fed forward
        # and its room grows as its load is observed. (tests/e2e/test_e2e_fallback's 1.5x
        # surge: the drain refused every request of a region for 0.75-2.5 s while the
        # fallback stood below its largest share with room.)
        drain = overdue and not rising_fallback
        excess = min(reaching, max(excess, beyond_admission(region, admits, reaching, drain)))
    fraction = excess / reaching if reaching > 0 else 0.0
    if sighted > 0.0:
        # Of what arrives now: on a ramp the measured rate, above the smoothed demand.
        reaching = max(reaching, region.measured * scale)
        fraction = max(fraction, min(1.0, sighted / reaching))
        excess = fraction * reaching
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
    published = _publish(
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
    # Refusing, what its gateways admit is also capped in flight (`in_flight`); the cap holds
    # while its demand, measured or smoothed, is beyond what its slots admit at their level
    # (a cluster's new thresholds make Envoy rebuild it: not on every lull of the refusal).
    # Only the tight cap holds (`tight_before`): the loose guard is armed whatever the
    # demand, and read as a cap to hold it set the tight one on every chance excursion of
    # the measured rate past the level (the planet's chat fleet at 65%: 98.8% SLO against
    # 99.5%, tests/planet/test_share_stability.py).
    beyond = admits is not None and max(region.measured, region.demand) > admits.rate
    holds = beyond and admits is not None and tight_before(region, admits, previous)
    # Not while a fallback model carries part of the region's users or may still rise: a
    # request past the cap is answered 503 by the model's cluster, after the fallback's
    # choice (lua/fallback.lua), so it could not degrade to the fallback; the drop fraction
    # refuses only what the fallback cannot absorb. (tests/e2e/test_e2e_fallback's 1.5x
    # surge: 38-76 of 997 requests refused by the cap on top of the 35-43 refused.)
    degrading = fallback_after > 0.0 or fallback_reach > fallback_after
    # Only a published refusal caps (or one that held): a fraction within the publish band is
    # by the band's own measure not worth a refused request, and a cap set on it refused
    # what the drop fraction would not (the kept chat run at 65%: 6 requests at eu-west).
    # On the planet's flash crowd a sub-band cap was 20 of 500 capped ticks (3 seeds) and
    # leaving it out changed nothing measurable (12 seeds: 96.7% / 729 ms either way).
    refusing = published.active or holds
    if admits is None or inferred or degrading:
        return published
    if refusing:
        return in_flight(region, admits, published, previous)
    # Not refusing: the loose guard (`loose_in_flight`), on capacity observed only (not the
    # prior, busy or not: a slow replica's median per slot in a fleet of speeds 1 and 3
    # reads a region's capacity at half its true one at start-up), and only while the
    # regions in its reach have no room left (`rooms`): where a rescuer has room, the
    # request it would refuse is the plan's to lend. Armed whatever the room, it kept a
    # 4-slot region's queue short in a 2x surge and so what it lent (26% of its users sent
    # away instead of 59%, tests/planet/test_share_stability.py), refusing users a rescuer
    # could serve; it was also all it gave the flash crowd (664 -> 583 ms on the planet):
    # on the ramp the rescuers' room is real to the plan (bench/measure/results/flash-guard.md).
    if admits.estimated or (room is not None and room > 0.0):
        return published
    return in_flight(region, admits, published, previous, loose=True)


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
