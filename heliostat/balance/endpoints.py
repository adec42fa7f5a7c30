"""One endpoint, one tick: its state, health, weight and the reason for them.

States and how Envoy sees them:

- `healthy`: W_MAX x its observed capacity relative to its region's best replica; less
  close to saturation and hotter than its peers (the `near` band: their level over its own,
  in sqrt(2) steps, down to half; not with consistent hashing, where a weight is a ring
  share), see `weights`. HEALTHY.
- `saturated`: at or past its thresholds (smoothed level enters at 1.0, leaves at 0.85; a
  single sample at 2x the thresholds enters at once, one clear sample takes that back, see
  `weights`). Hotter than its peers: cut the same way, down to a quarter of its weight
  (half while hashing); as busy as they are: its weight, since
  weights cannot make room in a region that is full (the regional law does). Still HEALTHY,
  never DEGRADED: Envoy only uses degraded hosts once a priority's healthy ones cannot carry
  its traffic, and then it moves the *whole* priority's excess to the next priority's
  healthy hosts first. Marking a busy region's replicas DEGRADED would thus push all of its
  traffic onto the nearest neighbour and tip that one over too. The cut plus least-request
  already steer new work away; bounded overflow (`overflow`) moves a measured share, never
  everything.
- `stale`: no scrape within `signals.stale_after` (or never scraped). Neutral weight W_MAX/2,
  HEALTHY: we do not know, so neither starve nor favour it.
- `static`: the model has no signals at all yet (start-up). Neutral weight, HEALTHY.
- `unhealthy`: `consecutive_failures >= thresholds.failures`. UNHEALTHY, floor weight; one good
  scrape (which resets the count) brings it back, ramping up from the floor.
- `draining`: the operator drained it. DRAINING (Envoy stops sending new requests), floor.

The published reason is kept verbatim while the weight and state hold, so an endpoint whose
numbers wobble produces byte-identical EDS and nothing is pushed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from heliostat.balance import capacity, weights
from heliostat.balance.saturation import NO_GROWTH, Growth, Load, measure, queue_growth
from heliostat.balance.state import EndpointKey, EndpointState, ServiceState, Steady
from heliostat.balance.view import EndpointView, Health, ReasonValue
from heliostat.policy import Endpoint, Model
from heliostat.samples import Sample

HEALTHY = "healthy"
SATURATED = "saturated"
STALE = "stale"
STATIC = "static"
UNHEALTHY = "unhealthy"
DRAINING = "draining"

_HEALTH = {
    HEALTHY: Health.HEALTHY,
    SATURATED: Health.HEALTHY,
    STALE: Health.HEALTHY,
    STATIC: Health.HEALTHY,
    UNHEALTHY: Health.UNHEALTHY,
    DRAINING: Health.DRAINING,
}

# States whose weight follows the load; their moves count towards the reversal budget.
_LOAD_DRIVEN = frozenset({HEALTHY, SATURATED})
# Levels compared between peers are capped here: one replica drowning far past its thresholds
# must not make every other one look cool.
_CAP = weights.HARD_SATURATION

_DRAINED_REASON: Mapping[str, ReasonValue] = {"state": DRAINING, "detail": "drained by operator"}
_STATIC_REASON: Mapping[str, ReasonValue] = {
    "state": STATIC,
    "detail": "no signals yet: neutral weight",
}


def step(
    endpoint: Endpoint,
    model: Model,
    signal: Sample | None,
    previous: EndpointState | None,
    now: float,
    gain: float,
    drained: bool,
    static: bool,
    hashing: bool = False,
    peers: Peers | None = None,
    service: ServiceState | None = None,
) -> EndpointState:
    """The endpoint's state after this tick, given its signal and its previous state.

    `gain` is the tick's EWMA gain, `weights.alpha(dt)` (computed once per tick); `hashing`
    says the model's clusters hash (weights are ring shares: the `near` band keeps them);
    `peers` is what its region's live endpoints showed at the previous tick (`region_peers`);
    `service` is its service state after this tick (`capacity.observe`), which places it in
    a capacity tier.

    This is the specification of an endpoint's tick; the law runs it through `advance`,
    which skips the endpoints at a fixed point (and is property-tested against this).
    """
    return _step(
        endpoint, model, signal, previous, now, gain, drained, static, hashing, peers, service
    )[0]


def _step(
    endpoint: Endpoint,
    model: Model,
    signal: Sample | None,
    previous: EndpointState | None,
    now: float,
    gain: float,
    drained: bool,
    static: bool,
    hashing: bool,
    peers: Peers | None,
    service: ServiceState | None,
) -> tuple[EndpointState, bool]:
    """`step`, and whether its state is a fixed point (`_Tick.steady`)."""
    growth = _growth(signal, previous)
    failures = signal.consecutive_failures if signal is not None else 0
    tier = _tier(service, peers, previous.tier if previous is not None else 0)
    capacity_share = weights.CAPACITY_TIERS[tier]
    if drained:
        tick = _Tick(DRAINING, None, weights.FLOOR)
    elif signal is not None and failures >= model.thresholds.failures:
        tick = _Tick(UNHEALTHY, None, weights.FLOOR)
    elif static:
        tick = _Tick(STATIC, None, weights.NEUTRAL)
    else:
        tick = _load_driven(
            endpoint, model, signal, previous, now, gain, hashing, peers, growth, capacity_share
        )
    state, published = tick.state, tick.published
    reason: Mapping[str, ReasonValue]
    if previous is not None and previous.state == state and previous.published == published:
        reason = previous.reason  # held: byte-identical resource, nothing to push
    else:
        reason = _explain(tick, failures, signal, capacity_share)
    return EndpointState(  # positional: twice as fast as keywords, and this runs per endpoint
        state,
        tick.level,
        published,
        reason,
        _view(endpoint, previous, published, _HEALTH[state], reason),
        signal.waiting if signal is not None else None,
        signal.scraped_at if signal is not None else None,
        growth,
        tick.load.pressure if tick.load is not None else None,
        tick.near,
        tick.moves,
        tier,
        tick.unlifted,
    ), tick.steady


# The readings an endpoint's tick depends on besides the time of its scrape (`Steady`).
readings = operator.attrgetter(
    "waiting", "running", "kv_usage", "max_num_seqs", "consecutive_failures"
)


def advance(
    endpoint: Endpoint,
    model: Model,
    signal: Sample | None,
    previous: EndpointState | None,
    now: float,
    gain: float,
    drained: bool,
    static: bool,
    hashing: bool,
    peers: Peers | None,
    service: ServiceState | None,
    steady: Steady | None,
) -> tuple[EndpointState, Steady | None]:
    """`step`, skipping the arithmetic for an endpoint at a fixed point; and its memo for
    the next tick (`steady` is this endpoint's from the last one, None if it moved).

    Most of a large fleet reads the same numbers tick after tick, only newer. An endpoint
    whose last tick left it at a fixed point (`_Tick.steady`: its level is its sample, no
    lift or queue growth pending, not near, the hysteresis holds and its weight is at its
    goal) and whose readings have not moved since, still fresh, not drained, in the same
    capacity tier, gets the very same state back with the new scrape's time: its level,
    weight, reason and view cannot move (`step`'s own arithmetic, worked through for those
    conditions: the EWMA of a constant is itself, `move` to its own goal is none, and the
    `near` band cannot be entered below ENTER_NEAR whatever its peers show). The caller
    checks that `model` is the one the memo was made under.
    """
    if steady is not None and signal is not None and previous is steady.state:
        scraped = signal.scraped_at
        if (
            scraped is not None
            and now - scraped <= model.signals.stale_after
            and not drained
            and readings(signal) == steady.readings
            and _tier(service, peers, previous.tier) == previous.tier
        ):
            waiting = signal.waiting
            if scraped == previous.scraped_at and waiting is previous.waiting:
                return previous, steady
            state = previous._replace(waiting=waiting, scraped_at=scraped)
            return state, Steady(steady.readings, state)
    state, fixed = _step(
        endpoint, model, signal, previous, now, gain, drained, static, hashing, peers, service
    )
    if fixed and signal is not None:
        return state, Steady(readings(signal), state)
    return state, None


class _Tick(NamedTuple):
    """What one tick decided for an endpoint, before its reason and view are built."""

    state: str
    level: float | None
    published: int
    load: Load | None = None
    near: bool = False
    moves: weights.Moves = weights.NO_MOVES
    goal: int = 0
    detail: str = ""
    unlifted: float | None = None
    steady: bool = False


def _growth(signal: Sample | None, previous: EndpointState | None) -> Growth:
    """Queue growth since the last new scrape (ticks can outpace scrapes: same sample)."""
    if previous is None or signal is None:
        return NO_GROWTH
    if signal.scraped_at == previous.scraped_at:
        return previous.growth
    return queue_growth(signal.waiting, previous.waiting, previous.growth)


def _tier(service: ServiceState | None, peers: Peers | None, current: int) -> int:
    """Its capacity tier: its observed capacity over the best of its region's, once both are
    known (`capacity.known`), judged by their errors; else the tier it had."""
    own = capacity.known(service)
    if own is None or service is None or peers is None or peers.best_service <= 0.0:
        return current
    error = math.sqrt(capacity.relative_error(service) ** 2 + peers.best_error**2)
    return weights.capacity_tier(own / peers.best_service, current, error)


def _load_driven(
    endpoint: Endpoint,
    model: Model,
    signal: Sample | None,
    previous: EndpointState | None,
    now: float,
    gain: float,
    hashing: bool,
    peers: Peers | None,
    growth: Growth,
    capacity_share: float,
) -> _Tick:
    """A stale endpoint's neutral tick, or a live one's: level, band, goal and the move."""
    stale_after = model.signals.stale_after
    if signal is None or signal.scraped_at is None:
        return _Tick(STALE, None, weights.NEUTRAL, detail="never scraped")
    if now - signal.scraped_at > stale_after:  # Sample.is_stale, inlined: runs per endpoint
        return _Tick(STALE, None, weights.NEUTRAL, detail=f"no scrape within {stale_after:g}s")
    load = measure(signal, endpoint.slots, model.thresholds, growth.trend)
    if load is None:
        return _Tick(STALE, None, weights.NEUTRAL, detail="no load series reported")
    # Load-driven moves keep their history; a return from stale, unhealthy or static starts
    # a fresh one (a comeback ramp is not flapping).
    live = previous if previous is not None and previous.state in _LOAD_DRIVEN else None
    smoothed = weights.settle(
        weights.Level(live.level, live.unlifted) if live and live.level is not None else None,
        load.saturation,
        gain,
    )
    level = smoothed.value
    is_saturated = weights.saturated(level, live is not None and live.state == SATURATED)
    others = _peer_level(peers, live.level if live else None)
    is_near = weights.near(min(level, _CAP), others, live is not None and live.near)
    goal = weights.target(
        is_saturated=is_saturated,
        is_near=is_near,
        hashing=hashing,
        capacity=capacity_share,
        relative=others / level if others is not None and level > 0.0 else None,
    )
    before = previous.published if previous is not None else weights.NEUTRAL
    history = live.moves if live is not None else weights.NO_MOVES
    evidence = weights.Evidence(is_saturated, weights.recovered(level, is_saturated, is_near))
    published, moves = weights.move(before, goal, now, history, evidence)
    state = SATURATED if is_saturated else HEALTHY
    steady = (
        smoothed.unlifted is None
        and level == load.saturation
        and goal == published
        and not is_near
        and level < weights.ENTER_NEAR
        and weights.saturated(level, is_saturated) == is_saturated
        and growth == NO_GROWTH
        and queue_growth(signal.waiting, signal.waiting, NO_GROWTH) == NO_GROWTH
    )
    return _Tick(state, level, published, load, is_near, moves, goal, "", smoothed.unlifted, steady)


def _view(
    endpoint: Endpoint,
    previous: EndpointState | None,
    published: int,
    health: Health,
    reason: Mapping[str, ReasonValue],
) -> EndpointView:
    """The endpoint's view: the previous one while nothing in it changed (no allocation)."""
    view = previous.view if previous is not None else None
    if (
        view is None
        or view.reason is not reason
        or view.weight != published
        or view.health is not health
        or view.region != endpoint.region
        or view.version != endpoint.version
    ):
        view = EndpointView(
            address=endpoint.address,
            region=endpoint.region,
            version=endpoint.version,
            weight=published,
            health=health,
            reason=reason,
        )
    return view


class Peers(NamedTuple):
    """What a region's live (healthy or saturated) endpoints showed at a tick: the sum and
    count of their levels (each at most HARD_SATURATION) and the best observed capacity
    among them (0.0 if none yet), with the relative error of that estimate."""

    level_sum: float
    live: int
    best_service: float
    best_error: float


def region_peers(
    endpoints: Iterable[Endpoint],
    model: str,
    previous: Mapping[EndpointKey, EndpointState],
    service: Mapping[str, ServiceState],
) -> dict[str, Peers]:
    """Per region, its endpoints' `Peers` at the previous tick (`service`: their service
    states then, by address)."""
    # Plain sums per region, one Peers per region at the end: this runs over every endpoint
    # of the fleet on every tick, and a record per endpoint was a tenth of the law's time.
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    best: dict[str, tuple[float, float]] = {}
    before = previous.get
    observed_of = service.get
    for endpoint in endpoints:
        state = before((model, endpoint.address))
        if state is None or state.level is None or state.state not in _LOAD_DRIVEN:
            continue
        region = endpoint.region
        totals[region] = totals.get(region, 0.0) + min(state.level, _CAP)
        counts[region] = counts.get(region, 0) + 1
        if service:
            observed = observed_of(endpoint.address)
            own = capacity.known(observed)
            if own is not None and observed is not None and own > best.get(region, _NONE)[0]:
                best[region] = (own, capacity.relative_error(observed))
    return {r: Peers(total, counts[r], *best.get(r, _NONE)) for r, total in totals.items()}


_NONE = (0.0, 0.0)  # no observed capacity yet, and its error


def _peer_level(peers: Peers | None, own: float | None) -> float | None:
    """The mean level of the region's other live endpoints (own level taken out if counted)."""
    if peers is None:
        return None
    total, count = peers.level_sum, peers.live
    if own is not None:
        total, count = total - min(own, _CAP), count - 1
    return total / count if count > 0 else None


def _explain(
    tick: _Tick,
    failures: int,
    signal: Sample | None,
    capacity_share: float,
) -> Mapping[str, ReasonValue]:
    """The reason published with a new weight or state (built only when one changes)."""
    state, load, level = tick.state, tick.load, tick.level
    if state == DRAINING:
        return _DRAINED_REASON
    if state == STATIC:
        return _STATIC_REASON
    if state == UNHEALTHY:
        return {"state": state, "failures": failures, "error": signal.error if signal else None}
    if load is None or level is None:
        return {"state": STALE, "stale": True, "detail": tick.detail, "failures": failures}
    reason: dict[str, ReasonValue] = {"state": state}
    if state == HEALTHY:  # room left, or close to saturation and hotter than its peers
        reason["band"] = weights.NEAR if tick.near else weights.FREE
    reason.update(
        saturation=round(level, 2),  # the smoothed level the weight was computed from
        driver=load.driver,  # the term that dominated this scrape
        failures=failures,
    )
    if capacity_share < 1.0:  # observed capacity, relative to the best replica of its region
        reason["capacity"] = round(capacity_share, 2)
    if tick.goal != tick.published:  # on its way: a ramp, or a turn waiting for the budget
        reason["goal"] = tick.goal
    return reason
