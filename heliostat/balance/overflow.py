"""The regional half of the control law: each origin's users placed over the regions in budget.

Per model and tick, for every region of the policy (an edge region, with gateways and no
GPUs, included):

1. **Supply** (`Supply`, from the endpoints): what its live endpoints can serve now. With
   service rates known (`capacity`), in requests/s: UTILISATION of their observed capacity,
   less what it takes to drain a backlog beyond what the SLO tolerates,

       X_q = max(0, B_q - c_q * QUEUE_SHARE * ttft)        (the backlog the SLO does not tolerate)
       C_q = UTILISATION * c_q - X_q / T_drain

   (a queue of c_q x t requests waits t; the SLO leaves QUEUE_SHARE of the TTFT to waiting,
   the rest to prefill and the network). Anything beyond is already late: it must drain
   within T_drain = max(ttft, DRAIN_S) (not faster: the loop overshoots, see DRAIN_S), and
   meanwhile that capacity is not there for new arrivals. (Taking the queue's growth off
   as well, a feed-forward on its slope, was tried: a saturated replica's queue jitters
   from scrape to scrape, and the steady 2x surge of tests/e2e/test_regional_law.py fell
   from 94% to 66-82% SLO.) Without rates the older unit stands: one endpoint at its
   thresholds carries 1.0, C_q counts endpoints.
2. **Demand** (`demand`): its gateways' measured rate, else inferred from its engines with
   the shares in effect taken out; smoothed. Inferred from engines, where the plan would turn
   a share its rescuers' room bounds, it is solved at the share the plan lends, not read at
   the one last published (`_settled`): read there, it fed on the decision it drives and,
   under constant signals, the share never settled. An estimate that restarted (another
   source or unit: at start-up the first gateway reports replace the engines' reading) moves
   no share up but urgently until it has settled (`settled`, SETTLE_S), nor does a
   capacity that is still the prior while a slot of it is free.
3. **Allocation** (`allocation`): local first, then the nearest region with room within the
   origin's budget, onward lending when it takes that, every rescuer kept below
   RESCUE_CEILING of its capacity for others; the rest is unplaced (refused by `refusal`
   unless the fallback model takes it). A region at risk whose slots still carry its users
   (below saturation) offers the allocation only the share that pays (`spill`: the expected
   TTFT saved net of the round trip and of the rescuer's own users' added waits, with
   hysteresis), not all it carries above its planning level; its rescuer has room for it.
4. **Shares**: each origin's plan as shares of its admitted users, published in thousandths
   with hysteresis (`publish`); the locality weights of its view (`assemble`). What is
   unplaced is refused (`refusal`) only while the regions that bound the plan are busy
   (mean occupancy >= BUSY) and only once it has been unplaced for REFUSE_AFTER_S without
   a break (a failover or an estimate's jump is not a full planet), or sooner once the
   origin's queue has been beyond what the SLO tolerates for two ticks running (the queues
   are not absorbing it: every request that waits there is late), or at once when the
   demand is a rate its gateways measured (over a window of seconds, steps taken at once)
   against its own capacity proven full (observed full, or late; not a failover: a region
   whose replicas died has none): the excess is known before any queue shows it, and
   refusing it then keeps the queue from building (a flash crowd's admitted requests
   otherwise wait behind the seconds of queue built before the refusal). Otherwise it
   stays home.
   Likewise a region whose slots evidently carry its users (`carries_own`: their measured
   level is not above its planning utilisation by more than chance, and its queue is not
   late) is taken to carry them whatever its estimates say, up to what it admits: demand
   counted over seconds and capacity extrapolated from light load disagree by chance, and
   local first means no user leaves a region on such a disagreement.

`overflow.max_share` caps what a region with GPUs sends away when the operator sets it;
left out, the allocation's feasibility and the rescuers' room decide.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from heliostat.balance import (
    allocation,
    capacity,
    chance,
    demand,
    publish,
    spill,
    weights,
)
from heliostat.balance.priorities import within_budget
from heliostat.balance.state import Held, RegionState
from heliostat.policy import Model, Policy

UTILISATION = 0.95  # of the observed capacity: what a region plans to run at, at most
RESCUE_CEILING = 0.9  # of its capacity: the most a rescuer is planned to, with others' users
# How far below its gateways' measured rate a region's demand is read beyond chance
# (`surge`): in Poisson deviations of the rate over the reports' window.
RISE_SIGMAS = 1.0
# A late backlog drains within this, or the SLO if longer. Not faster: draining within 1 s
# (a scrape, a tick and a push at 0.5 s intervals) made a steady 2x surge swing its share
# between 100% and half (58% SLO in tests/e2e/test_regional_law.py, 93-99% at 3 s). Nor
# scaled with the signal interval: 12 s at 2 s intervals let the planet's discrete flash
# crowd queue (us-east 88% SLO in tests/planet/test_fluid_vs_discrete.py, 95% at 3 s).
DRAIN_S = 3.0
# Of the TTFT objective, what a request may spend waiting for a slot: the rest is for the
# prefill, the network and the spread of waits around their mean.
QUEUE_SHARE = 0.25
BUSY = 0.75  # mean share of slots in use from which a region counts as full
BUSY_RELEASE = 0.5  # ... and down to which it still does once refusals started
# A region whose measured level is below its planning utilisation carries its own users
# (`carries_own`); while it lends or refuses, only while it keeps at least this much of them
# (its level is scaled up by that share; below it, too noisy to say: the estimates decide).
LEVEL_KEPT = 0.5
# ... and it starts lending only once its level stands this many chance deviations above
# its planning utilisation (`level_spread`): 2 happen by chance about once in 40 looks, and
# a burst must also raise the demand its gateways measure above its capacity to count.
LEVEL_SIGMAS = 2.0
# Once it lends, it takes its users back below this many deviations fewer (hysteresis: the
# level lags a change of shares by seconds, and a share that turns round is held).
LEVEL_RELEASE = 1.0
# The origin's own queue makes its share's rise urgent only beyond what its slots hold by
# chance at its level once in this many looks (`chance_queue`; a rescuer's distress stays on
# the SLO's term, `rescuer_distressed`). The
# law looks every tick, twice a second at the default interval: once in 50 s, and an urgent
# move needs two looks running (`_late_twice`), rarer still; a false alarm costs a share two
# turns (out and back) against the target of at most two a minute.
CHANCE_LOOKS = 100
# A share that fell is raised again by the origin's wish (not urgently) only this long after
# its fall: a rescuer's distress brings a share down at once, past any hold, and a share that
# then rose again after the reversal hold alone and fell again at the next distress turned
# three times in 40 s (up, down, up, down). With a minute between a fall and the rise that
# follows, the turns come at most two in any minute, the stability target, however
# urgent the falls. An urgent rise (the origin's own queue beyond chance) does not wait.
RISE_AFTER_FALL_S = 2.0 * publish.REVERSAL_HOLD_S
# Refusing starts once demand has been unplaced this long without a break: a failover, a
# burst or an estimate's jump is absorbed by the queues; a full planet lasts.
REFUSE_AFTER_S = 3.0
# A demand estimate that (re)started, from a new source or in new units (at start-up, the
# first gateway reports in requests/s replace what the engines read in endpoints), moves no
# share up but urgently (`origin_overdue`) for this long: its gateways' window holds only
# the seconds since they began reporting (at 2 s, a rate of 12/s reads +-2.4/s by chance)
# and nothing smooths it yet; nor is the capacity it is set against more than an
# extrapolation from light load. The window filled and smoothed once: WINDOW_S + TAU_S.
SETTLE_S = demand.WINDOW_S + demand.TAU_S
# Kept for the fallback model's decision (it plans a region back to this level).
RELEASE = RESCUE_CEILING


@dataclass(frozen=True, slots=True)
class Supply:
    """One region's live endpoints of one model, this tick."""

    endpoints: int  # live: a fresh signal, healthy or saturated
    capacity: float  # planning capacity C (see the module docstring)
    raw: float  # observed capacity (rates) or endpoint count (pressure units)
    load: float  # what arrives at them now, same unit
    backlog: float = 0.0  # requests waiting at them
    occupancy: float = 0.0  # share of their room in use (1 while requests wait), smoothed
    rates: bool = False  # capacity in requests/s (else endpoint units: no backlog term)
    # Every endpoint's throughput was observed full (rates), or the thresholds say so (pressure
    # units): its capacity is a measurement, not an extrapolation from light load.
    measured_full: bool = True
    # The utilisation its capacity is planned to (`queueing.utilisation`): what its slots
    # carry with waits the SLO tolerates.
    utilisation: float = UTILISATION
    # What it can carry for its own users beyond `capacity` before admitting more serves
    # fewer of them within the SLO (`queueing.admission`): used when no neighbour has room.
    strain: float = 0.0
    # Share of its room in use averaged both ways over seconds (`capacity.LEVEL_TAU_S`; None:
    # `occupancy`): the utilisation its admitted load keeps it at, measured, not estimated.
    level: float | None = None
    slots: int | None = None  # every live endpoint's slots added up (None: unknown)
    # The mean time its engines spent prefilling a request of late (seconds, over its live
    # endpoints that measure it; None: unknown) and the share of prompt tokens their prefix
    # caches held (None: unknown). A region whose cache holds its users' shared prompts
    # prefills them in a fraction of the time: `spill` weighs that against a round trip.
    prefill: float | None = None
    hit_rate: float | None = None
    # Its slots free now (each live endpoint's room less its occupancy at the last scrape; 0
    # where unknown), and whether some live endpoint's capacity is still the prior (the
    # model's median per slot, not observed): `refusal.Admits` reads them.
    free: float = 0.0
    estimated: bool = False


def tolerated(region: Supply, ttft_s: float) -> float:
    """The backlog its users can wait behind within the SLO (see the module docstring)."""
    return region.raw * QUEUE_SHARE * ttft_s if region.rates else math.inf


def late(region: Supply, ttft_s: float) -> bool:
    """Its queue is beyond what the SLO tolerates: the requests at its back are late."""
    return region.backlog > tolerated(region, ttft_s)


def beyond_chance(region: Supply, ttft_s: float) -> bool:
    """Its queue is late (`late`) and beyond what its slots hold by chance at the level they
    run at (`chance_queue`): an emergency, not noise."""
    return region.backlog > max(tolerated(region, ttft_s), chance_queue(region))


def chance_queue(region: Supply) -> float:
    """The backlog a region's slots hold by chance at its measured level: the queue M/M/c
    exceeds once in CHANCE_LOOKS looks (`chance.queue_quantile`), the level taken at
    most at what it admits (`queueing.admission`: planning utilisation plus strain). 0 when
    its slots or level are unknown.

    Why: the SLO's share of the wait alone tolerates c mu x QUEUE_SHARE x TTFT, 0.67
    requests on a pool of 4 slots, so one waiting request made it late. A 4-slot pool at a
    steady 65% holds 0.7 requests waiting on average, more than 7 once in 100 looks; each
    such queue turned its shares urgent, past the reversal hold (`_lending`): the planet
    chat fleet's small region turned its share 1-5 times a minute. Up to this much a queue
    is noise to the origin's own wish to lend more (`_lending`: overdue). Not to a
    rescuer's distress (`rescuer_distressed`): that queue is its own users' too. A real
    backlog is not noise: past its admission level (a surge, an outage) the level is
    capped there, and a queue beyond what that level holds by chance
    is an emergency at once; a pool of hundreds of slots holds next to nothing by chance,
    and the SLO's term decides as before.

    `late` itself keeps the SLO's term alone: it also proves a region full, refuses, lets
    the older rule place all above its planning level, and has a rise its gateways measure
    taken at once (`_demands`). With the chance term there as well, a 2x surge on the
    4-slot pool met the SLO for 56-76% of its users instead of 79-89% (three seeds), and
    the planet's flash crowd (tests/planet/test_flash_crowd_drain.py) admitted p99 1.30 s
    instead of 1.09 s: its refusal waits for the demand its gateways measure. With it in
    `_demands` too, the chat fleet's share turned 0-1 times a minute instead of 1-2, but
    the flash crowd's p99 was the same 1.30 s.
    """
    if not region.slots or region.level is None or region.raw <= 0.0:
        return 0.0
    admits = region.utilisation + region.strain / region.raw
    return chance.queue_quantile(region.slots, min(region.level, admits), 1.0 / CHANCE_LOOKS)


def drain_time(ttft_s: float) -> float:
    """T_drain: DRAIN_S, or the SLO if longer (see the module docstring)."""
    return max(ttft_s, DRAIN_S)


def planning_capacity(
    raw: float, backlog: float, ttft_s: float, drain_s: float, utilisation: float = UTILISATION
) -> float:
    """C = u x raw, less the drain of the backlog the SLO does not tolerate beyond what
    the slack of the plan drains by itself; u is the region's planning utilisation
    (`queueing.utilisation`, at most UTILISATION).

    A region planned to u x raw leaves (1 - u) x raw of its capacity free, and a backlog
    drains through it: only a drain faster than that takes planning capacity off. (Taking
    the whole drain off as well planned a small pool, whose slack is a third of its
    capacity, away from its own slots at every short queue and back once it drained: two
    turns of its shares per queue, most of the planet surge's reversals.)"""
    excess = max(0.0, backlog - raw * QUEUE_SHARE * ttft_s)
    slack = max(0.0, 1.0 - utilisation) * raw
    return max(0.0, utilisation * raw - max(0.0, excess / drain_s - slack))


def max_lent(model: Model) -> float:
    """The most of a region's users overflow may send away: the operator's cap, else all."""
    configured = model.overflow.max_share
    return 1.0 if configured is None else configured


def step(
    policy: Policy,
    model: Model,
    supply: Mapping[str, Supply],
    rates: bool,
    gateways: demand.GatewayLoad,
    previous: Mapping[str, RegionState],
    refused: Mapping[str, float],
    dt: float,
    now: float,
) -> dict[str, RegionState]:
    """Every region's plan for this tick. `refused`: each region's refused fraction last tick."""
    regions = sorted(policy.spec.regions)
    supply = {r: _persistent(s, previous.get(r), model) for r, s in supply.items()}
    users = _demands(model, regions, supply, rates, gateways, previous, refused, dt, now)
    cap = max_lent(model)
    users = _settled(
        users,
        previous,
        refused,
        lambda u: _origins(policy, model, regions, supply, previous, u, cap, refused),
    )
    plan = allocation.allocate(
        _origins(policy, model, regions, supply, previous, users, cap, refused), RESCUE_CEILING
    )
    result: dict[str, RegionState] = {}
    for r in regions:
        own = supply.get(r)
        placed = plan.placed.get(r, {})
        unplaced = plan.unplaced.get(r, 0.0)
        refusing = r in previous and previous[r].refusable > 0.0
        full_since = None
        if unplaced > 0.0:
            before_full = previous[r].full_since if r in previous else None
            full_since = now if before_full is None else before_full
        refusable = 0.0
        if full_since is not None and (
            now - full_since >= REFUSE_AFTER_S
            or _late_twice(model, own, previous.get(r))
            or (rates and users.source[r] == demand.GATEWAYS and _proven(model, own))
        ):
            refusable = _refusable(
                policy, model, r, supply, plan, unplaced, refused.get(r, 0.0) if refusing else None
            )
        most = 1.0 if own is None or own.endpoints == 0 else cap
        lending = _lending(
            policy, model, r, supply, previous, plan, users, refusable, rates, most, now
        )
        result[r] = RegionState(
            capacity=own.capacity if own is not None else 0.0,
            load=own.load if own is not None else 0.0,
            demand=users.smoothed[r],
            overflowing=unplaced > 0.0 or any(q != r for q in placed),
            lending=_capped(lending, most),
            measured=users.measured.get(r, 0.0),
            endpoints=own.endpoints if own is not None else 0,
            unplaced=unplaced,
            refusable=refusable,
            full_since=full_since,
            plan=dict(placed),
            source=users.source[r],
            backlog=own.backlog if own is not None else 0.0,
            raw_capacity=own.raw if own is not None else 0.0,
            batch=users.batch.get(r),
            rates=rates,
            late=own is not None and rates and late(own, model.slo.ttft_ms / 1000.0),
            free=own.free if own is not None else 0.0,
            utilisation=own.utilisation if own is not None else UTILISATION,
            gateways=_reporting(gateways, model, r, now),
            prefill=own.prefill if own is not None else None,
            hit_rate=own.hit_rate if own is not None else None,
            since=users.since[r],
        )
    return _as_units(model, result, previous, plan, users, supply, now)


def _as_units(
    model: Model,
    result: dict[str, RegionState],
    previous: Mapping[str, RegionState],
    plan: allocation.Allocation,
    users: _Users,
    supply: Mapping[str, Supply],
    now: float,
) -> dict[str, RegionState]:
    """A rescuer's own onward shares and the shares lent to it, published as one unit: what
    lands on it under the shares published stays within what the plan may put there.

    The allocation makes room in a rescuer q for an origin's users by passing q's own users
    on (onward lending); each share is then held on its own. A share into q that rose at
    once (its origin overloaded) while q's onward share was held back, or q's onward share
    that fell (its plan completing a drain) while the share into q was held up against a
    recent rise, landed the origin's users on q's slots with its own users back home: q was
    tipped over (the bench's regional_surge, thirteenth run: eu-west's onward share fell from
    71% to 34% while ap-southeast's 76% into it held for 2.5 s; eu-west's users 97.2% within
    the SLO during the surge against 100% before).

    So where the shares published land more on q than the plan may (its planned total, or
    its own users plus the room it offered: its ceiling), q's onward shares held below their
    targets (a rise held back, a fall the plan made) are published as far as their targets,
    or their published values of the last tick (a fall undone), to fit: the unit moves
    together; not onto a region in distress (`rescuer_distressed`), which takes nothing more,
    nor onto one that lends into q. The shares into q are not cut to fit instead
    (wip/surge12's `_fit_rises`): the surging origin's users paid for it there, and on the
    planet's flash crowd a rise cut at the ramp cost 3.6 points of one seed's SLO."""
    admitted = {o: max(0.0, users.smoothed[o] - state.refusable) for o, state in result.items()}
    for q in sorted(result):
        guests = {
            o: state.lending[q]
            for o, state in result.items()
            if o != q and q in state.lending and state.lending[q].published > 0.0
        }
        if not guests or not settled(users, q, supply.get(q), now):
            continue  # estimates still settling (start-up): the holds decide, as in `_lending`
        most = max(plan.served_at(q), plan.local.get(q, 0.0) + plan.room.get(q, 0.0))
        # Within a thousandth of every demand that lands on q: the shares' resolution.
        most += sum(admitted[o] for o in (q, *guests)) / publish.RESOLUTION
        own = dict(result[q].lending)
        # An origin lending into q is overloaded (its users bring more than its slots
        # complete) or refuses: its share into q is a need, not a saving.
        rescuing = any(
            o in previous
            and (
                overloaded(previous[o].raw_capacity, previous[o].demand)
                or previous[o].refusable > 0.0
            )
            for o in guests
        )
        onward = _onward_fitted(
            model, q, own, guests, admitted, most, previous, supply, now, rescuing
        )
        if onward != own:
            result[q] = dataclasses.replace(result[q], lending=onward)
    return result


def _landed(
    q: str, onward: Mapping[str, Held], guests: Mapping[str, Held], admitted: Mapping[str, float]
) -> float:
    """What lands on q under the shares published: its own users less what it passes on,
    and the origins' admitted users it is lent."""
    passed = min(1.0, sum(h.published for h in onward.values()))
    return admitted[q] * (1.0 - passed) + sum(admitted[o] * h.published for o, h in guests.items())


def _onward_fitted(
    model: Model,
    q: str,
    onward: dict[str, Held],
    guests: Mapping[str, Held],
    admitted: Mapping[str, float],
    most: float,
    previous: Mapping[str, RegionState],
    supply: Mapping[str, Supply],
    now: float,
    rescuing: bool,
) -> dict[str, Held]:
    """q's onward shares, those fallen this tick published back as far as fits what lands
    on q within `most` (see `_as_units`); and, while q rescues an origin in need
    (`rescuing`: overloaded, as `origin_overdue` has it, or refusing), those held below
    their targets raised past their holds and the dead band, as the origin's own rise is
    urgent. Otherwise a rise waits out its holds as in `_lending` (raised at once, q's
    onward share turned round on the planet's steady chat fleet, 3 turns in a run, and
    took users away at start-up on estimates still settling)."""
    over = _landed(q, onward, guests, admitted) - most
    before = previous[q].lending if q in previous else {}
    fitted = dict(onward)
    for p in sorted(onward):
        if over <= 0.0 or admitted[q] <= 0.0:
            break
        held = fitted[p]
        was = _published(before, p)
        goal = max(held.target, was) if held.published < was else held.target
        last = before.get(p)
        if not rescuing:
            goal = min(goal, was)  # only a fall undone: a rise waits out its holds
        if (
            goal <= held.published
            or p in guests  # it lends into q: passing q's users to it is no room
            or rescuer_distressed(model, supply.get(p), previous.get(p))
        ):
            continue
        value = min(goal, _ceil(held.published + over / admitted[q]))
        if value == was and last is not None:
            fitted[p] = dataclasses.replace(last, target=held.target, spread=held.spread)
        else:
            direction = 1 if value > was else -1
            fitted[p] = Held(value, held.target, direction, now, held.reason, held.spread)
        over -= admitted[q] * (value - held.published)
    return fitted


def _ceil(value: float) -> float:
    """Up to thousandths, robust to float error (as `_floor`)."""
    return min(1.0, math.ceil(value * publish.RESOLUTION - 1e-6) / publish.RESOLUTION)


def _reporting(gateways: demand.GatewayLoad, model: Model, region: str, now: float) -> int:
    """How many gateways reported the region's demand for the model (1 when none did)."""
    report = gateways.origin(model.name, region, now)
    return max(1, report.gateways) if report is not None else 1


@dataclass(frozen=True, slots=True)
class _Users:
    """Every region's users' demand this tick: measured, smoothed, where it was measured,
    and the batch part of it when the gateways report it."""

    measured: Mapping[str, float]
    smoothed: Mapping[str, float]
    source: Mapping[str, str]
    batch: Mapping[str, float]
    # Demand inferred from engines: its own users' arrivals at its endpoints (smoothed).
    arrivals: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # Since when each region's estimate has been read from its source in its units, once it
    # switched (None: not since the law began).
    since: Mapping[str, float | None] = dataclasses.field(default_factory=dict)


def _demands(
    model: Model,
    regions: list[str],
    supply: Mapping[str, Supply],
    rates: bool,
    gateways: demand.GatewayLoad,
    previous: Mapping[str, RegionState],
    refused: Mapping[str, float],
    dt: float,
    now: float,
) -> _Users:
    """Each region's demand: its gateways' reports (rates mode), else its engines'."""
    fixed: dict[str, float] = {}
    batch: dict[str, float] = {}
    steps: set[str] = set()
    if rates:
        for r in regions:
            report = gateways.origin(model.name, r, now)
            if report is not None:
                fixed[r] = report.total
                batch[r] = report.batch
                step = demand.stepped(report)
                if step is not None:
                    # A step up in the newest reports (`demand.stepped`): it is the demand.
                    fixed[r] = step
                    steps.add(r)
                    if report.total > 0:
                        batch[r] = report.batch * step / report.total
    arrivals = {r: s.load for r, s in supply.items() if s.endpoints > 0}
    shares = {r: s.shares for r, s in previous.items()}
    measured = demand.from_engines(arrivals, fixed, shares, refused)
    gain = weights.alpha(dt, demand.TAU_S)
    ttft = model.slo.ttft_ms / 1000.0
    smoothed: dict[str, float] = {}
    source: dict[str, str] = {}
    own_arrivals: dict[str, float] = {}
    since: dict[str, float | None] = {}
    for r in regions:
        value = measured.get(r, 0.0)
        before = previous.get(r)
        source[r] = demand.GATEWAYS if r in fixed else demand.ENGINES if r in arrivals else "none"
        own = supply.get(r)
        if before is None or before.source != source[r] or before.rates != rates:
            # Another source or unit: nothing to smooth from, the estimate restarts here
            # (and, switched from another, is young until `settled`).
            smoothed[r] = value
            since[r] = None if before is None else now
            continue
        since[r] = before.since
        if r in steps and value > before.demand:
            smoothed[r] = value  # a step its gateways measured: taken at once
        elif r in fixed and value > before.demand and own is not None and late(own, ttft):
            # A rise its gateways measure while its own queue is already late: two
            # independent witnesses of the same surge, so it is taken at once (feed-forward),
            # not over TAU_S. Only gateway-measured demand: the one inferred from engines
            # reads the shares just moved and would feed on itself.
            smoothed[r] = value
        else:
            smoothed[r] = before.demand + gain * (value - before.demand)
    for r in regions:
        if source[r] == demand.ENGINES:
            # What of its users arrives at its own endpoints under the shares published:
            # where `_settled` solves its demand from. (Smoothed as demand, not as arrivals:
            # when the fleet answers a share, the demand does not move, its arrivals do.)
            own_arrivals[r] = smoothed[r] * _kept(
                sum(shares.get(r, {}).values()), refused.get(r, 0.0)
            )
    return _Users(measured, smoothed, source, batch, own_arrivals, since)


def settled(users: _Users, r: str, own: Supply | None, now: float) -> bool:
    """Whether r's estimates may move a share up but urgently: its demand, measured at its
    gateways, has settled since it (re)started (`SETTLE_S`; demand inferred from engines is
    no window of reports), and its capacity is observed, or no slot of it is free (as
    `refusal.early`: a capacity that is still the prior, the model's median per slot, read
    half a region's true one at start-up in a fleet of speeds 1 and 3; a region with a slot
    free is no proof of a shortfall it reckons on that guess)."""
    since = users.since.get(r)
    if since is not None and now - since < SETTLE_S and users.source.get(r) == demand.GATEWAYS:
        return False
    return own is None or not own.estimated or own.free < 1.0


def _kept(lent: float, refused: float) -> float:
    """The share of a region's users that arrives at its own endpoints when it lends `lent`
    of its admitted users and refuses `refused` (as `demand.from_engines` counts it)."""
    admitted = 1.0 - min(demand.MAX_INFERRED_REFUSAL, refused)
    return max(demand.MIN_KEPT, (1.0 - min(1.0, lent)) * admitted)


# Bisection steps for `_settled`: 2^-12 of a share, below the thousandths it is published in.
_SETTLE_STEPS = 12
_SETTLE_SWEEPS = 2
_UNPLACED_EPS = 1e-9


def _settled(
    users: _Users,
    previous: Mapping[str, RegionState],
    refused: Mapping[str, float],
    problem: Callable[[_Users], Mapping[str, allocation.Origin]],
) -> _Users:
    """Demand inferred from engines, solved at the share the plan lends, not read at the
    share last published, where that share would turn round with its rescuers' room bounding
    it.

    Its engines see only the users it keeps: D = a / k(L), with a its users' arrivals at its
    own endpoints and k(L) the share kept when it lends L. When the rescuers' room R bounds
    what leaves (some of its users are unplaced), the plan lends L = R / D = R k(L) / a: a
    slope of about -R / a in the share it was read at. While the fleet does not answer the
    share (constant signals; a lagging fleet for a while), the estimate then feeds on the
    decision it drives, and past -1 the published share swung between two values for ever
    (turning round at every reversal hold), whatever the smoothing: the share is held while
    the estimate catches up. So when the plan would turn such a share round (`_turns`), the
    share is solved for the fixed point L = plan(a / k(L)) by bisection instead: with the
    arrivals constant it is one value, and the next reading at it agrees with it.

    Only then. When the fleet answers the shares (a = k(L_published) D), D read at the
    published share is the true demand, and the fixed point R / ((1 - L_published) D + R) is
    only a step towards R / D (on a turn, one partial step; then the plain plan follows):
    solved on every tick it left the share a dead band short of R / D. Nor where the origin's
    own capacity C bounds the share (everything it does not serve is placed): the plan then
    keeps C at home whatever D is, the arrivals at its own endpoints are C once the fleet
    answers, and the fixed point is any share (solving for it threw the share between 0 and
    its cap on the noise).
    """
    lenders = [
        r
        for r, source in sorted(users.source.items())
        if source == demand.ENGINES and users.arrivals.get(r, 0.0) > 0.0
    ]
    if not lenders:
        return users
    smoothed = dict(users.smoothed)

    def plan_at(r: str, share: float) -> tuple[float, float]:
        """What r lends when its demand is read at `share`, and what the plan left unplaced."""
        smoothed[r] = users.arrivals[r] / _kept(share, refused.get(r, 0.0))
        current = dataclasses.replace(users, smoothed=dict(smoothed))
        plan = allocation.allocate(problem(current), RESCUE_CEILING)
        admitted = smoothed[r] * (1.0 - min(demand.MAX_INFERRED_REFUSAL, refused.get(r, 0.0)))
        away = sum(x for q, x in plan.placed.get(r, {}).items() if q != r)
        lent = min(1.0, away / admitted) if admitted > 0.0 else 0.0
        return lent, plan.unplaced.get(r, 0.0)

    for _ in range(_SETTLE_SWEEPS):
        for r in lenders:
            published = sum(previous[r].shares.values()) if r in previous else 0.0
            lent, unplaced = plan_at(r, published)
            if lent <= 0.0 or unplaced <= _UNPLACED_EPS:
                continue  # its own capacity bounds the share, or nothing leaves: it stands
            if not _turns(previous.get(r), lent, published):
                continue  # the share keeps its course: the estimate at it stands
            low, high = 0.0, 1.0
            for _ in range(_SETTLE_STEPS):
                middle = (low + high) / 2.0
                if plan_at(r, middle)[0] > middle:
                    low = middle
                else:
                    high = middle
            plan_at(r, low)
    return dataclasses.replace(users, smoothed=smoothed)


def _turns(before: RegionState | None, lent: float, published: float) -> bool:
    """The plan would turn the origin's share round: back down after its last move up, or
    up after a move down. Only then can the estimate be feeding on the share (see
    `_settled`): a fleet that answers the shares keeps a share moving one way while the
    demand does."""
    if before is None:
        return False
    moves = [h for h in before.lending.values() if h.direction != 0]
    if not moves:
        return False
    last = max(moves, key=lambda h: h.moved_at)
    return (last.direction > 0 and lent < published) or (last.direction < 0 and lent > published)


def _origins(
    policy: Policy,
    model: Model,
    regions: list[str],
    supply: Mapping[str, Supply],
    previous: Mapping[str, RegionState],
    users: _Users,
    cap: float,
    refused: Mapping[str, float],
) -> dict[str, allocation.Origin]:
    """The allocation's problem: every region with demand or capacity."""
    origins = {}
    # What each rescuer takes from the paying shares: `spill` weighed its own users' added
    # waits already, so it has that room even above its planning level (its room counted
    # from that level alone sent the share on to a third region, 80 ms further for its
    # own users, or back).
    incoming: dict[str, float] = {}
    ttft_s = model.slo.ttft_ms / 1000.0
    for r in regions:
        own = supply.get(r)
        capacity = own.capacity if own is not None else 0.0
        demanded = users.smoothed[r]
        before = previous.get(r)
        judged = own is not None and _pays_to_judge(model, own, users, r, demanded)
        # Lending already, or a rescuer within budget prefills its users faster than they
        # wait for the round trip (`prefill_pays`): the paying share decides, even while
        # its own slots carry them (a region with a cold cache is not at risk for its
        # queue, yet its users may be served sooner elsewhere).
        lends = before is not None and bool(before.shares)
        if (
            own is not None
            and not (judged and (lends or prefill_pays(policy, model, r, supply)))
            and carries_own(model, own, before, refused.get(r, 0.0))
        ):
            # It evidently serves its own users, whatever the estimates say; up to what it
            # admits at most (`queueing.admission`): past that, its queue says so.
            capacity = max(capacity, min(demanded, own.capacity + own.strain))
        elif own is not None and judged:
            # At risk, and its slots still carry its users (its gateways count fewer than
            # they complete when full; or, demand inferred from engines, its queue is not
            # late): it sends away only the share that saves its users time net of the round
            # trip (`spill`), not all it carries above its planning level; the allocation
            # places that share as before. A queue of a request or two does not switch the
            # older rule on: at 65% an M/M/c queue of 4 slots holds 0.7 on average, and
            # "late" by one request sent half of the users away for a tick (bench chat).
            # While it lends, `spill`'s hysteresis decides when the share ends, not its
            # level: a pool of 4 slots reads 0.4 to 0.7 at a steady 65%, and the level
            # test took the share back and forth with it.
            paid = paying(policy, model, r, supply, users, before)
            if paid.prefill:
                # Prefills weighed: the paying share is the plan, below its planning level
                # too (its users are served sooner where the cache holds their prompts); the
                # allocation still places it only into the rescuer's room.
                capacity = demanded * (1.0 - paid.share)
            else:
                capacity = max(capacity, demanded * (1.0 - paid.share))
            if paid.rescuer is not None:
                sent_there = demanded - capacity
                incoming[paid.rescuer] = incoming.get(paid.rescuer, 0.0) + max(0.0, sent_there)
        if demanded <= 0.0 and capacity <= 0.0:
            continue
        edge = own is None or own.endpoints == 0
        sent = 1.0 if edge else cap
        if not edge and users.source[r] == demand.ENGINES:
            sent = min(sent, 1.0 - demand.MIN_KEPT)
        reach = {q: policy.rtt_ms(r, q) for q in within_budget(policy, model, r)}
        origins[r] = allocation.Origin(
            demanded,
            capacity,
            reach,
            sent,
            rescue=_rescue(own, capacity) if own else None,
            strain=max(0.0, own.capacity + own.strain - capacity) if own else 0.0,
            rising=rising(
                own, before, users.measured.get(r, 0.0), users.source[r], demanded, ttft_s
            ),
        )
    for q, amount in incoming.items():
        rescuer, pool = origins.get(q), supply.get(q)
        if rescuer is None or pool is None or rescuer.rescue is None:
            continue
        most = RESCUE_CEILING * (pool.capacity + pool.strain)
        wanted = min(rescuer.demand, rescuer.capacity) + amount
        if wanted > rescuer.rescue:
            origins[q] = dataclasses.replace(rescuer, rescue=max(rescuer.rescue, min(most, wanted)))
    return origins


def surge(measured: float, source: str) -> float:
    """A region's demand as its gateways measure it this tick, less RISE_SIGMAS Poisson
    deviations of that rate over the reports' window (`demand.WINDOW_S`): what it stands at
    beyond chance. 0.0 when the demand is not measured at its gateways."""
    if source != demand.GATEWAYS or measured <= 0.0:
        return 0.0
    return max(0.0, measured - RISE_SIGMAS * math.sqrt(measured / demand.WINDOW_S))


def rising(
    own: Supply | None,
    before: RegionState | None,
    measured: float,
    source: str,
    smoothed: float,
    ttft_s: float,
) -> float:
    """How much of a region's room its own users are going to take beyond the smoothed demand
    the plan reads: taken off the room it offers others (`allocation.Origin.rising`).

    A rescuer's room is its planning level less its own users' demand, and that demand is
    smoothed (`demand.TAU_S`) over a rate counted over seconds: on a ramp it lags the crowd
    by 2-3 s. When every region ramps (a full planet), each had room on its lagging level
    when the plan was made and lent it into neighbours ramping too; its own users filled it
    within seconds, and what it took in and its own users both waited. On the planet's
    flash crowd (12 seeds) a region's users were late 10% of the time while it lent against
    2% overall, and 27% of the requests served away were late. So:

    - its users measured beyond the smoothed level by more than chance (`surge`): that
      much of its room is theirs;
    - its users measured above the smoothed level at all while every one of its slots was
      in use at this tick and the last (`_full_twice`) and its queue is beyond chance
      (`beyond_chance`: late, and more than its level holds by chance): it is going full
      now, and its room is none (inf). On a small pool the rise alone is within chance for
      seconds (a 16-slot region ramping 2/s reads within a deviation of its smoothed demand
      until its queue shows).

    Each part guards against chance: a region whose users hold steady (a neighbour's surge,
    regional_surge) reads its measured rate above its smoothed demand half the time, and a
    pool at 80% has its slots full now and then. With the queue's test alone (no rise) the
    second part took rescuers' room on chance queues (planet regional_surge, 12 seeds:
    94.47% SLO, 474 refused, against 94.96%, 308); with full twice and a rise but no queue
    beyond chance, it took a 12-slot rescuer's room at 65% plus a lent share
    (tests/planet/test_prefix_lending.py) and the 571 -> 550 ms it gave the flash crowd
    (12 seeds) was that chance. On the planet's flash crowd neither part bites before the
    plan sees the rise itself: a rescuer's room on the ramp is fictional for its capacity,
    extrapolated from light load (us-east 29.9/s at 40%, 23.5/s once observed full), not
    for a lag in its demand."""
    going_full = own is not None and _full_twice(own, before) and beyond_chance(own, ttft_s)
    if going_full and measured > smoothed:
        return math.inf
    return max(0.0, surge(measured, source) - smoothed)


def _pays_to_judge(model: Model, own: Supply, users: _Users, r: str, demanded: float) -> bool:
    """The paying share (`paying`) decides what r sends away: its slots and rates are known
    and still carry its users (saturated, the older rule: all above its planning level)."""
    if not own.rates or not own.slots or own.raw <= 0.0 or demanded >= own.raw:
        return False
    return users.source[r] == demand.GATEWAYS or not late(own, model.slo.ttft_ms / 1000.0)


def paying(
    policy: Policy,
    model: Model,
    r: str,
    supply: Mapping[str, Supply],
    users: _Users,
    before: RegionState | None,
) -> spill.Spill:
    """The share of r's users that pays to send to a rescuer within its budget (`spill`),
    from its demand and every pool's slots and observed capacity; none without rates or
    slots (the older planning-level rule then stands: all above it is placed away)."""
    own = supply.get(r)
    if own is None or not own.rates or not own.slots or own.raw <= 0.0:
        return spill.Spill(1.0, None, 0.0)
    rescuers: dict[str, tuple[spill.Pool, float]] = {}
    for q in within_budget(policy, model, r):
        pool = supply.get(q)
        if q == r or pool is None or not pool.rates or not pool.slots or pool.raw <= 0.0:
            continue
        rescuers[q] = (
            spill.Pool(pool.slots, pool.raw, users.smoothed.get(q, 0.0), pool.prefill or 0.0),
            policy.rtt_ms(r, q) / 1000.0,
        )
    lent = before.shares if before is not None else {}
    demanded = users.smoothed.get(r, 0.0)
    origin = spill.Pool(own.slots, own.raw, demanded, own.prefill or 0.0)
    counted = own.prefill is not None and all(supply[q].prefill is not None for q in rescuers)
    if not counted:
        # Prefill counted only where every side measures it: against an unknown one, a
        # known one would read as all cost or all saving.
        origin = dataclasses.replace(origin, prefill=0.0)
        rescuers = {
            q: (dataclasses.replace(pool, prefill=0.0), rtt) for q, (pool, rtt) in rescuers.items()
        }
    # The reading's spread by chance: a Poisson count over the smoothing's window (about
    # twice its time constant).
    spread = math.sqrt(max(0.0, demanded) / (2.0 * demand.TAU_S))
    paid = spill.paying_share(origin, rescuers, model.slo.ttft_ms / 1000.0, lent, spread)
    if counted and rescuers and paid.rescuer is not None:
        return dataclasses.replace(paid, prefill=True)
    return paid


def prefill_pays(policy: Policy, model: Model, r: str, supply: Mapping[str, Supply]) -> bool:
    """Some region within r's budget prefills a request faster than r does by more than the
    round trip to it, and by START of the TTFT objective: its prefix cache holds what r's
    does not (`Supply.prefill`, measured on both sides). Waits are left to `spill`."""
    own = supply.get(r)
    if own is None or own.prefill is None:
        return False
    margin = spill.START * model.slo.ttft_ms / 1000.0
    for q in within_budget(policy, model, r):
        pool = supply.get(q)
        if q == r or pool is None or pool.prefill is None or not pool.slots:
            continue
        if own.prefill - pool.prefill - policy.rtt_ms(r, q) / 1000.0 >= margin:
            return True
    return False


def carries_own(
    model: Model, own: Supply, before: RegionState | None, refused: float = 0.0
) -> bool:
    """The region evidently carries its own users, measured on its own slots: no user
    leaves it on an estimate's word.

    Its demand is a rate its gateways count over seconds (Poisson: at 3 req/s over 3 s, a
    standard deviation of 1 req/s) and its capacity an estimate (from light load, an
    extrapolation): set against each other, they disagree by chance. Its slots do not: the
    share of them its load keeps busy, averaged over seconds (`Supply.level`), is the
    utilisation it runs at, and below its planning utilisation (`queueing.utilisation`:
    what its slots carry with waits the SLO tolerates) it serves its users within the SLO,
    whatever the estimates say. (A peak-holding occupancy against a fixed BUSY said "busy"
    at 41% of an 8-slot replica: a Poisson burst fills 6 slots often; the estimates then
    sent users away: 2 of 22 in the demo's steady phase.) "Below" means by more than
    chance: LEVEL_SIGMAS of the level's own spread (`level_spread`), LEVEL_RELEASE fewer
    once it lends (hysteresis). While it lends or refuses, its slots see only what it
    keeps: the level is scaled up by that share (while it keeps at least LEVEL_KEPT of its
    users; less, and the estimates decide). Not while its queue is late (now and at the
    last tick): a surge fills the queue before the average moves. In endpoint units (no
    rates) the older test stands: slots not mostly in use (occupancy < BUSY), not lending."""
    if own.endpoints == 0:
        return False
    lending = before is not None and before.overflowing
    if not own.rates:
        return own.occupancy < BUSY and not lending
    if _late_twice(model, own, before):
        return False
    if own.occupancy < BUSY and not lending:
        return True  # its slots were not even mostly in use at their fullest of late
    kept = 1.0 - min(1.0, refused)
    if before is not None:
        kept *= max(0.0, 1.0 - sum(before.shares.values()))
    if kept < LEVEL_KEPT:
        return False
    level = (own.occupancy if own.level is None else own.level) / kept
    sigmas = LEVEL_SIGMAS - (LEVEL_RELEASE if lending else 0.0)
    return level < own.utilisation + sigmas * level_spread(own, level)


def level_spread(own: Supply, level: float) -> float:
    """The standard deviation of a region's measured level around its true utilisation,
    by chance alone: the requests in its c slots are Poisson-like (variance rho / c of the
    occupancy), and the level averages them over LEVEL_TAU_S, about 2 LEVEL_TAU_S / T
    independent looks when a request holds a slot T = c / K seconds. A pool of 8 slots at
    40% reads 0.4 +- 0.08; one of 2,000 slots, +- 0.002. 0 when its slots are unknown."""
    if not own.slots or own.raw <= 0.0:
        return 0.0
    hold = own.slots / own.raw
    return math.sqrt(max(0.0, level) / own.slots * min(1.0, hold / (2.0 * capacity.LEVEL_TAU_S)))


def _lending(
    policy: Policy,
    model: Model,
    r: str,
    supply: Mapping[str, Supply],
    previous: Mapping[str, RegionState],
    plan: allocation.Allocation,
    users: _Users,
    refusable: float,
    rates: bool,
    cap: float,
    now: float,
) -> dict[str, Held]:
    """What region r lends to each rescuer: the plan's share of its admitted users, held.

    The targets are fitted under `cap` before they are held, not after: the allocation caps
    what leaves as a share of the origin's demand, the shares are of what it admits, and
    a refusal makes the second larger. Scaling the held values down afterwards instead
    (`_capped`) republished a different split every tick: each share's dead band let some
    of them reach their target and not others, and the scaling moved them all again (a
    three-region fleet with max_share 0.3 and a refusing origin never settled)."""
    own = supply.get(r)
    placed = plan.placed.get(r, {})
    smoothed = users.smoothed[r]
    admitted = smoothed - refusable
    if users.source[r] != demand.GATEWAYS:
        # Its refusal is capped (see `refusal`): what it really admits is at least this,
        # and the excess stays home rather than spilling onto the rescuers.
        admitted = max(admitted, smoothed * (1.0 - demand.MAX_INFERRED_REFUSAL))
    reachable = set(within_budget(policy, model, r))
    lent_before = previous[r].lending if r in previous else {}
    unit = "/s" if rates else " endpoints"
    # While its plan drains a backlog that lasted (now or at the last tick, `drains`), part
    # of what it lends drains that backlog: that part follows the drain down at once; the
    # plan completing is not a reversal to hold.
    draining = (own is not None and drains(own.capacity, own.utilisation, own.raw)) or (
        r in previous and drains_now(previous[r])
    )
    rescuing = any(
        _published(s.lending, r) > 0.0 and overloaded(s.raw_capacity, s.demand)
        for o, s in previous.items()
        if o != r
    )
    overload = origin_overloaded(model, own, previous.get(r), smoothed)
    overdue = origin_overdue(model, own, previous.get(r), smoothed, rescuing, overload)
    targets = {
        q: placed.get(q, 0.0) / admitted if admitted > 0 and q in reachable else 0.0
        for q in sorted(set(lent_before) | set(placed))
        if q != r
    }
    total = sum(targets.values())
    scale = cap / total if total > cap else 1.0
    # What stays home is a share too (Envoy's locality weight for the origin's own region):
    # it rose at the latest fall of any of the origin's shares (`home_rose_at`).
    home_rose_at = max((h.moved_at for h in lent_before.values() if h.direction < 0), default=None)
    lending: dict[str, Held] = {}
    for q, share in targets.items():
        # Rounded down to what is published (thousandths): rounding up would plan the rescuer
        # past its ceiling by up to half a thousandth of the origin's demand (or the sum past
        # the cap); the remainder stays home.
        target = math.floor(share * scale * publish.RESOLUTION + 1e-9) / publish.RESOLUTION
        rescuer = supply.get(q)
        # In distress: a queue beyond what the SLO tolerates at this tick and the last (not
        # one noisy interval: a pool near its planning level queues for an instant now and
        # then, see `_persistent`). The SLO's term alone, not `beyond_chance`: a rescuer's
        # queue is its own users' as well, and each tick a share too large for it stays
        # up, the rescuer passes its own users on (`rescuer_distressed`).
        distressed = rescuer_distressed(model, rescuer, previous.get(q))
        # A late queue (not an overload) hurries a rise only into room beyond the chance of
        # the rescuer's level (`room_beyond_chance`): room within it may be none.
        pressing = overdue and (overload or room_beyond_chance(plan, rescuer, q))
        falling = target < _published(lent_before, q)
        rising = target > _published(lent_before, q)
        last = lent_before.get(q)
        # A rise that turns a fallen share back up waits RISE_AFTER_FALL_S, not the reversal
        # hold alone: the fall may have been urgent, held by nothing (see RISE_AFTER_FALL_S).
        turning_up = rising and last is not None and last.direction < 0
        held = publish.hold(
            lent_before.get(q),
            target,
            now,
            band=publish.SHARE_BAND,
            # No size of move turns a share back within REVERSAL_HOLD_S by itself: the
            # target of a small pool's share swings by tens of points with its estimates.
            # Real needs are urgent instead: a rescuer's or the origin's lasting queue.
            large_move=math.inf,
            reversal_s=RISE_AFTER_FALL_S if turning_up else publish.REVERSAL_HOLD_S,
            # No release grace here (`publish.RELEASE_TICKS`, as the fallback has): holding
            # a share up for a few ticks after the plan lowered it overloads a rescuer whose
            # own users are arriving (planet discrete flash crowd: us-east 99.5% -> 95.5%).
            # Nor is a rise held while its own queue is late (now and at the last tick):
            # users waiting past the SLO are no noise to damp.
            urgent=q not in reachable
            or ((distressed or draining) and falling)
            or (pressing and rising),
            reason=functools.partial(_reason, r, q, smoothed, plan, unit),
        )
        if (
            held.published > _published(lent_before, q)
            and not pressing
            and not turning_up
            and (
                not settled(users, r, own, now)
                or (home_rose_at is not None and now - home_rose_at < RISE_AFTER_FALL_S)
            )
        ):
            # A rise of one share soon after another fell turns what stays home round (up,
            # then down): the same reversal as one share's, held as long. Each of the
            # origin's shares moving once, at different times, turned its own share three
            # times in 40 s (bench mixed_gpus at full size, sixth run: eu-west lent 17% to
            # us-east, took it back, lent 33% to ap-southeast, took it back). An urgent rise
            # (`origin_overdue`) does not wait.
            # Nor does a share rise on estimates still settling (`settled`), but urgently.
            held = dataclasses.replace(
                last or publish.NOTHING, target=held.target, spread=held.spread
            )
        # A share back at zero is remembered while its last move still holds a reversal
        # back: forgotten, the next tick's rise would not count as turning round.
        if held.published > 0.0 or held.target > 0.0 or now - held.moved_at < _remembered_s():
            lending[q] = held
    return lending


def room_beyond_chance(plan: allocation.Allocation, rescuer: Supply | None, q: str) -> bool:
    """The room rescuer q offers (`allocation.Allocation.room`: its ceiling less its own
    load) stands beyond the chance of its slots' level: LEVEL_SIGMAS of the level's own
    spread (`level_spread`, in requests/s at its observed capacity), the test
    `carries_own` makes of a region's own level. Room within that may be none a second
    later; a rise into it hurried by the origin's late queue (`origin_overdue`, not an
    overload) meets the rescuer's distress and an urgent fall: two turns in seconds. Such
    a rise waits out the holds as any other. Its slots or level unknown: room is room.

    Why: on the planet's chat fleet at a steady 65% (tests/planet/test_share_stability,
    seed 1, wip/flash10), ap-southeast's share to eu-west fell to 0 and, 14 s later, its
    queue beyond chance raised it at once to 11% into eu-west's 0.50/s of room (eu-west at
    64% of its 12 slots: +-1.0/s by chance); a second later eu-west had no room and was
    late, and the share fell: three turns in a minute. At 50% (+-0.9/s) its 2.2/s of room
    takes the rise at once (tests/balance/test_share_urgency)."""
    room = plan.room.get(q, 0.0)
    if rescuer is None or not rescuer.rates:
        return room > 0.0
    level = rescuer.occupancy if rescuer.level is None else rescuer.level
    return room > LEVEL_SIGMAS * level_spread(rescuer, level) * rescuer.raw


def origin_overdue(
    model: Model,
    own: Supply | None,
    before: RegionState | None,
    demanded: float,
    rescuing: bool = False,
    overloaded: bool | None = None,
) -> bool:
    """The origin's own need makes its share's rise urgent (past the reversal hold and
    RISE_AFTER_FALL_S):

    - its users bring more than its slots complete (`overloaded`), beyond the demand
      reading's chance, at this tick and the last, on a capacity measured full
      (`_proven`): its queue grows without bound whether or not the gateways' spread of
      it lets one show yet. Waiting for a late queue instead kept a 2x-surging 4-slot
      region's users home (planet chat fleet: its share fell at each of the rescuer's
      distresses and rose only a minute later; 22.6% sent away where half must leave);
    - it rescues others (a share of some region's users is published to it) and its queue
      is late at this tick and the last on the SLO's term alone, as `rescuer_distressed`:
      that queue is partly the users it took in, and passing its own on makes room for
      them rather than leaving the origin's share to fall at each distress;
    - or its queue is late at this tick and the last and beyond what its slots hold by
      chance (`beyond_chance`): a small pool's chance queue is no emergency.

    Why measured full and twice: an overload read against a capacity extrapolated from
    light load is no overload. A region back from an outage re-learns its capacity from
    what completes, low at first (the planet's eu-west back from a loss: 11/s, 14, 16, 18
    read against 25/s of demand, its queue empty), and raising shares on it moved users
    request by request that the fluid engine kept home (cross-region 10.5% against
    7.3%, tests/planet/test_fluid_vs_discrete). What is left of that disagreement is a
    true overload of a few percent: in its flash crowd us-east's users bring 88/s against
    the 81-87/s it completes; request by request the reading wanders by +-5/s and passes
    2 deviations at some ticks, the fluid engine's reading is the mean and never does:
    9.1% cross-region request by request (7.7% without this term) against 7.3% fluid,
    within the test's 2 points with 0.2 to spare."""
    if own is None or not own.rates:
        return False
    if overloaded is None:  # `overloaded`: origin_overloaded's answer, when the caller has it
        overloaded = origin_overloaded(model, own, before, demanded)
    if overloaded:
        return True
    if not _full_twice(own, before):
        return False  # a queue with a slot free beside it: a balance inside the region
    if rescuing:
        return _late_twice(model, own, before)
    return _late_twice(model, own, before, beyond_chance)


def origin_overloaded(
    model: Model, own: Supply | None, before: RegionState | None, demanded: float
) -> bool:
    """Its users bring more than its slots complete (`overloaded`) at this tick and the
    last, on a capacity measured full (`_proven`): `origin_overdue`'s first term, a need
    no chance explains. Not while some of its capacity is still the prior (`estimated`:
    the model's median per slot, a slow replica's): at start-up in a fleet of speeds 1 and
    3 ap-southeast's read 4.2/s against about 14, its 12/s of users "overloaded" it and
    27% of them left at once, to come back seconds later (a late queue of its own still
    hurries a rise: `origin_overdue`'s other terms)."""
    return (
        own is not None
        and own.rates
        and not own.estimated
        and overloaded(own.raw, demanded)
        and _proven(model, own)
        and before is not None
        and overloaded(before.raw_capacity, before.demand)
    )


def overloaded(raw: float, demanded: float) -> bool:
    """Users bring more than the slots complete (observed capacity `raw`), by more than the
    chance of the smoothed demand reading (LEVEL_SIGMAS of a Poisson count over the
    smoothing's 2 TAU_S): such a queue grows without bound."""
    spread = math.sqrt(max(0.0, demanded) / (2.0 * demand.TAU_S))
    return raw > 0.0 and demanded - LEVEL_SIGMAS * spread >= raw


def rescuer_distressed(model: Model, rescuer: Supply | None, before: RegionState | None) -> bool:
    """A rescuer's queue is beyond what the SLO tolerates at this tick and the last one: the
    shares lent to it come down at once (`_lending`), on the SLO's term alone.

    Not beyond chance as well (`beyond_chance`, which only the origin's own urgency to lend
    more uses): the chance term waits for a queue a small pool holds once in CHANCE_LOOKS
    looks, and meanwhile the origin keeps lending into it. With it here, the bench's
    regional_surge at full size met the SLO for 91.4% of its requests instead of 93.9%:
    eu-west, the rescuer, kept taking ap-southeast's users past its room and passed 63% of
    its own users on to us-east (38% without it).

    Nor for a share the origin lends only to save its users time (its demand below what
    its slots complete), evaluated (wip/prefix8) after the bench's shared_prefix fell from
    98.6% to 96.0% SLO between the sixth and seventh full runs: ap-southeast's share rose
    once, fell at once 3 s later (an urgent fall: a rescuer's distress or the origin's
    drain) and RISE_AFTER_FALL_S kept it down for the rest of the run (3.4% sent away
    against 17.1%; under the sixth run's law it rose again 4 s after its fall). On the planet
    below, eu-west's chance queue (late at 2 waiting on 12 slots at 65%) made that fall.
    On a planet of the same fleet with every prompt prefilled in full (864 tokens, 32 out,
    65% of 4.11/s per replica, six seeds; the planet shares no prefixes), that variant met
    the SLO for 95.8% (ap-southeast 89.3%) against 96.1% (92.2%) here, and the sixth run's
    law for 95.7% (86.3%); the planet's 2x surge on the chat fleet sent 29.9% of the small
    region's users away on seed 0 instead of 40% (tests/planet/test_share_stability). What
    the bench's lending buys is the prefill: the other regions' replicas hold the groups'
    prefixes (hit rates 0.67-0.91 in the seventh run against 0.33 on ap-southeast's one
    replica, which cannot hold 24 groups' prompts), so the 160 ms round trip is mostly
    repaid by the prefill it saves. `spill`
    weighs waits and round trips only; a prefill term (hit rates by region, and a measured
    prefill time) is what the lending decision lacks, not a looser distress."""
    return _full_twice(rescuer, before) and _late_twice(model, rescuer, before)


def _full_twice(region: Supply | None, before: RegionState | None) -> bool:
    """Fewer than one of the region's slots was free at this tick and the last one (a
    region whose free slots are unknown counts as full): its queue waits for lack of slots,
    not for a balance inside the region that a share cannot mend.

    Why: a queue on one replica while a peer has a slot free (`refusal.Admits.busy` makes
    the same test before a late queue refuses) is the region's balance, and the next
    requests go to the free slot (least-request, the weights as capacities are learnt). A
    share moved on it turns back once the balance settles. In a fleet of speeds 1 and 3
    the slow replicas queue while the region has slots free (equal weights at start-up, a
    slow replica's tier not yet learnt); urgent on that queue, a rescuer's distress brought
    a share down at once, the origin's own queue raised it again a few seconds later, and
    the distress brought it down again: three turns of the origin's home share in 40 s
    (bench mixed_gpus, twelfth full run: eu-west 4.5 reversals/min; planet seed 15 the
    same). A region out of slots is unchanged: a surge fills them first."""
    if region is None or before is None:
        return False
    return region.free < 1.0 and before.free < 1.0


def _remembered_s() -> float:
    """How long a share back at zero is remembered: while its fall still holds a rise back."""
    return max(publish.hold_s(), RISE_AFTER_FALL_S)


def _persistent(own: Supply, before: RegionState | None, model: Model) -> Supply:
    """The supply with its backlog drain sized on the backlog that lasted: the smaller of
    this tick's and the last one's. A pool of slots run near its planning level queues for
    an instant now and then (an M/M/c queue does, see `queueing`); draining each such blip
    within T_drain took a tenth of a 12-slot region's capacity off for one tick at a time,
    and the shares it lends turned back and forth with it (planet regional surge: 24 turns
    in 3 minutes). A backlog that stays two ticks is drained as before."""
    if not own.rates or before is None or not before.rates or own.backlog <= before.backlog:
        return own
    ttft = model.slo.ttft_ms / 1000.0
    capacity = planning_capacity(own.raw, before.backlog, ttft, drain_time(ttft), own.utilisation)
    return dataclasses.replace(own, capacity=capacity)


def drains(capacity: float, utilisation: float, raw: float) -> bool:
    """Part of the planning capacity is taken off to drain a backlog (`_persistent`)."""
    return capacity < utilisation * raw - 1e-9


def drains_now(region: RegionState) -> bool:
    """The region's plan this tick drains a backlog that lasted (see `drains`)."""
    return region.rates and drains(region.capacity, region.utilisation, region.raw_capacity)


def _rescue(own: Supply, capacity: float) -> float:
    """The most the region is planned to once it serves others' users: its planning
    capacity, and below RESCUE_CEILING of what it admits at most (its own users come first)."""
    return min(capacity, RESCUE_CEILING * (capacity + own.strain))


def _proven(model: Model, region: Supply | None) -> bool:
    """The region's capacity is a measurement, not an extrapolation from light load: its
    endpoints were observed full, or its queue is beyond what the SLO tolerates now."""
    if region is None or region.endpoints == 0:
        return False
    return region.measured_full or late(region, model.slo.ttft_ms / 1000.0)


def _late_twice(
    model: Model,
    own: Supply | None,
    before: RegionState | None,
    test: Callable[[Supply, float], bool] = late,
) -> bool:
    """The region's queue was beyond what the SLO tolerates at this tick and the last one
    (`late`; or, with `beyond_chance`, beyond chance as well, each tick at this tick's level)."""
    if own is None or before is None or not own.rates:
        return False
    ttft = model.slo.ttft_ms / 1000.0
    return test(own, ttft) and test(dataclasses.replace(own, backlog=before.backlog), ttft)


def _refusable(
    policy: Policy,
    model: Model,
    origin: str,
    supply: Mapping[str, Supply],
    plan: allocation.Allocation,
    unplaced: float,
    refusing: float | None,
) -> float:
    """What of the origin's unplaced demand its gateways should refuse.

    All of it when the planet is full for it: the origin and every region within its
    budget are demonstrably busy (mean occupancy >= BUSY: a region whose slots are not
    mostly in use has room its capacity estimate has not seen yet) and the plan filled every
    in-budget region to its ceiling. If the plan left room somewhere, the excess is there
    because the operator's cap kept the origin's users away, not because the GPUs are full:
    it stays home rather than being refused. Nor is an origin whose capacity was never
    observed at full load (only extrapolated) proof of a full planet: it may serve what it
    would refuse. Once the origin is proven full, a rescuer's estimate needs no such proof:
    the plan sends it nothing past its room whatever the refusal decides, and its slots in
    use (busy) are measured; the excess would only queue at the origin. An origin with no
    live endpoints (an edge, or a region whose replicas just failed) proves nothing: its
    rescuers must. Once refusing
    (`refusing`: the fraction it refuses, None when it does not), "busy" is held down to
    BUSY_RELEASE, and further by the fraction refused: refusing lowers the load the rescuers
    see (a capped share is a share of the admitted users), which must not end it.
    """
    if unplaced <= 0.0:
        return 0.0
    own_proven = _proven(model, supply.get(origin))
    busy = BUSY if refusing is None else min(BUSY_RELEASE, BUSY * (1.0 - refusing))
    for q in [origin, *within_budget(policy, model, origin)]:
        region = supply.get(q)
        if region is None or region.endpoints == 0:
            continue
        # Busy relative to what it admits (`queueing.admission`): a pool of a few slots is
        # full for its users' SLO well before every slot is in use.
        admits = region.utilisation + region.strain / region.raw if region.raw > 0 else 1.0
        if region.occupancy < busy * min(1.0, admits / UTILISATION):
            return 0.0
        if q != origin and plan.served_at(q) < _rescue(region, region.capacity) - 1e-6:
            return 0.0  # room left that the operator's cap kept it from: not a full planet
        if refusing is None and not _proven(model, region) and (q == origin or not own_proven):
            # Its capacity is extrapolated from light load: not proof it is full. A queue
            # beyond what the SLO tolerates is: it is full now, whatever the estimate; and
            # once refusing, the queue the refusal drained proves nothing either way.
            return 0.0
    return unplaced


def _published(lending: Mapping[str, Held], q: str) -> float:
    held = lending.get(q)
    return held.published if held is not None else 0.0


def _capped(lending: dict[str, Held], cap: float) -> dict[str, Held]:
    """One sender's shares, their sum at most `cap` (and 1): held values give way first."""
    total = sum(h.published for h in lending.values())
    if total <= cap + 1e-9:
        return lending
    eased = {q: min(h.published, h.target) for q, h in lending.items()}
    total = sum(eased.values())
    scale = cap / total if total > cap else 1.0
    return {
        q: Held(
            _floor(eased[q] * scale) if scale < 1.0 else eased[q],
            h.target,
            h.direction,
            h.moved_at,
            h.reason,
            h.spread,
            h.below,
        )
        for q, h in lending.items()
    }


def _reason(
    origin: str,
    rescuer: str,
    demand_now: float,
    plan: allocation.Allocation,
    unit: str,
    share: float,
) -> str:
    if share <= 0.0:
        return ""
    local = plan.local.get(origin, 0.0)
    return (
        f"{share:.1%} of {origin}'s users served in {rescuer}: {origin} demand "
        f"{demand_now:.2f}{unit}, serves {local:.2f}{unit} itself, {rescuer} had room "
        f"for {plan.room.get(rescuer, 0.0):.2f}{unit}"
    )


def _floor(value: float) -> float:
    """Down to thousandths (a cap is never exceeded), robust to float error: 0.3 stays 0.3
    (rounding 0.2995 published 0.299 and 0.3 on alternate ticks, a turn each time)."""
    return max(0.0, math.floor(value * publish.RESOLUTION + 1e-6) / publish.RESOLUTION)
