"""One endpoint, one tick: its state, health, weight and the reason for them.

States and how Envoy sees them:

- `healthy`: W_MAX x its observed capacity relative to its region's best replica; half of
  that close to saturation and hotter than its peers (the `near` band; not with consistent
  hashing, where a weight is a ring share), see `weights`. HEALTHY.
- `saturated`: at or past its thresholds (smoothed level enters at 1.0, leaves at 0.85; a
  single sample at 2x the thresholds enters at once, see `weights`). Hotter than its peers:
  a quarter of its weight (half while hashing); as busy as they are: its weight, since
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
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from heliostat.balance import weights
from heliostat.balance.saturation import NO_GROWTH, Load, measure, queue_growth
from heliostat.balance.state import EndpointKey, EndpointState, observed_capacity
from heliostat.balance.view import EndpointView, Health, ReasonValue
from heliostat.policy import Endpoint, Model
from heliostat.signals.record import Signal

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
# Relative error of a busy share averaged over the capacity EWMA (sampled occupancy of a few
# slots, correlated over a request's lifetime): about 6% at the loads that matter.
BUSY_ERROR = 0.06

_DRAINED_REASON: Mapping[str, ReasonValue] = {"state": DRAINING, "detail": "drained by operator"}
_STATIC_REASON: Mapping[str, ReasonValue] = {
    "state": STATIC,
    "detail": "no signals yet: neutral weight",
}


def step(
    endpoint: Endpoint,
    model: Model,
    signal: Signal | None,
    previous: EndpointState | None,
    now: float,
    gain: float,
    drained: bool,
    static: bool,
    hashing: bool = False,
    peers: Peers | None = None,
) -> EndpointState:
    """The endpoint's state after this tick, given its signal and its previous state.

    `gain` is the tick's EWMA gain, `weights.alpha(dt)` (computed once per tick); `hashing`
    says the model's clusters hash (weights are ring shares: the `near` band keeps them);
    `peers` is what its region's live endpoints showed at the previous tick (`region_peers`).
    """
    growth = NO_GROWTH
    if previous is not None and signal is not None:
        if signal.scraped_at == previous.scraped_at:  # ticks can outpace scrapes: same sample
            growth = previous.growth
        else:
            growth = queue_growth(signal.waiting, previous.waiting, previous.growth)
    failures = signal.consecutive_failures if signal is not None else 0
    thresholds = model.thresholds
    stale_after = model.signals.stale_after
    load: Load | None = None
    is_near = False
    moves = weights.NO_MOVES
    goal = 0
    detail = ""
    completions, busy_time, window = (
        (previous.completions, previous.busy_time, previous.window) if previous else (0.0, 0.0, 0.0)
    )
    if signal is not None and previous is not None and signal.scraped_at != previous.scraped_at:
        completions, busy_time, window = _observe(
            (completions, busy_time, window), signal, endpoint.slots, previous.scraped_at
        )
    tier = previous.tier if previous is not None else 0
    service = observed_capacity(completions, busy_time)
    if service is not None and peers is not None and peers.best_service > 0.0:
        # Completions are counts: n of them carry a relative error of 1/sqrt(n); each busy
        # time, an average of instants, about BUSY_ERROR (more while the window is young).
        error = math.sqrt(
            1.0 / max(completions, 1.0)
            + 1.0 / max(peers.best_completions, 1.0)
            + 2.0 * BUSY_ERROR**2 * weights.CAPACITY_TAU_S / max(window, 1.0)
        )
        tier = weights.capacity_tier(service / peers.best_service, tier, error)
    capacity = weights.CAPACITY_TIERS[tier]
    if drained:
        state, level, published = DRAINING, None, weights.FLOOR
    elif signal is not None and failures >= thresholds.failures:
        state, level, published = UNHEALTHY, None, weights.FLOOR
    elif static:
        state, level, published = STATIC, None, weights.NEUTRAL
    elif (
        signal is None
        or signal.scraped_at is None
        or now - signal.scraped_at > stale_after  # Signal.is_stale, inlined: runs per endpoint
    ):
        state, level, published = STALE, None, weights.NEUTRAL
        detail = (
            "never scraped"
            if signal is None or signal.scraped_at is None
            else f"no scrape within {stale_after:g}s"
        )
    else:
        load = measure(signal, endpoint.slots, thresholds, growth.trend)
        if load is None:
            state, level, published = STALE, None, weights.NEUTRAL
            detail = "no load series reported"
        else:
            # Load-driven moves keep their history; a return from stale, unhealthy or
            # static starts a fresh one (a comeback ramp is not flapping).
            live = previous is not None and previous.state in _LOAD_DRIVEN
            level = weights.smooth(
                previous.level if live and previous else None, load.saturation, gain
            )
            is_saturated = weights.saturated(
                level, live and previous is not None and previous.state == SATURATED
            )
            others = _peer_level(peers, previous.level if live and previous else None)
            is_near = weights.near(
                min(level, _CAP), others, live and previous is not None and previous.near
            )
            goal = weights.target(
                is_saturated=is_saturated, is_near=is_near, hashing=hashing, capacity=capacity
            )
            before = previous.published if previous is not None else weights.NEUTRAL
            history = previous.moves if live and previous is not None else weights.NO_MOVES
            published, moves = weights.move(before, goal, now, history, jump=is_saturated)
            state = SATURATED if is_saturated else HEALTHY

    reason: Mapping[str, ReasonValue]
    if previous is not None and previous.state == state and previous.published == published:
        reason = previous.reason  # held: byte-identical resource, nothing to push
    else:
        reason = _explain(
            state, load, level, failures, detail, signal, is_near, published, goal, capacity
        )
    health = _HEALTH[state]
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
    return EndpointState(  # positional: twice as fast as keywords, and this runs per endpoint
        state,
        level,
        published,
        reason,
        view,
        signal.waiting if signal is not None else None,
        signal.scraped_at if signal is not None else None,
        growth,
        load.pressure if load is not None else None,
        is_near,
        moves,
        completions,
        busy_time,
        window,
        tier,
    )


class Peers(NamedTuple):
    """What a region's live (healthy or saturated) endpoints showed at a tick: the sum and
    count of their levels (each at most HARD_SATURATION) and the best observed capacity
    among them (0.0 if none yet), with the completions behind that estimate."""

    level_sum: float
    live: int
    best_service: float
    best_completions: float  # the (decayed) completions behind the best estimate


def region_peers(
    endpoints: Iterable[Endpoint], model: str, previous: Mapping[EndpointKey, EndpointState]
) -> dict[str, Peers]:
    """Per region, its endpoints' `Peers` at the previous tick."""
    result: dict[str, Peers] = {}
    for endpoint in endpoints:
        state = previous.get((model, endpoint.address))
        if state is None or state.level is None or state.state not in _LOAD_DRIVEN:
            continue
        total, count, best, best_completions = result.get(endpoint.region, (0.0, 0, 0.0, 0.0))
        service = state.service or 0.0
        if service > best:
            best, best_completions = service, state.completions
        result[endpoint.region] = Peers(
            total + min(state.level, _CAP), count + 1, best, best_completions
        )
    return result


def _peer_level(peers: Peers | None, own: float | None) -> float | None:
    """The mean level of the region's other live endpoints (own level taken out if counted)."""
    if peers is None:
        return None
    total, count = peers.level_sum, peers.live
    if own is not None:
        total, count = total - min(own, _CAP), count - 1
    return total / count if count > 0 else None


def _observe(
    sums: tuple[float, float, float],
    signal: Signal,
    slots_hint: int | None,
    last_scrape: float | None,
) -> tuple[float, float, float]:
    """The capacity sums after a new scrape: each decays by exp(-interval / CAPACITY_TAU_S),
    then adds what the interval brought: the requests completed (the engine's success
    counter, `Signal.served_rate` x interval), the busy share of its slots x interval, the
    interval. Sums rather than averages: their ratio is completions per busy second with no
    bias from the first sample, and the completion count says how sure the ratio is."""
    rate = getattr(signal, "served_rate", None)  # heliostat.signals: the success counter's rate
    slots = slots_hint or signal.max_num_seqs
    if (
        not isinstance(rate, int | float)
        or not 0.0 <= rate < math.inf
        or signal.running is None
        or not 0.0 <= signal.running < math.inf
        or not slots
        or signal.scraped_at is None
        or last_scrape is None
    ):
        return sums
    interval = max(0.0, signal.scraped_at - last_scrape)
    keep = math.exp(-interval / weights.CAPACITY_TAU_S)
    completions, busy_time, window = sums
    busy = min(1.0, signal.running / slots)
    return (
        keep * completions + rate * interval,
        keep * busy_time + busy * interval,
        keep * window + interval,
    )


def _explain(
    state: str,
    load: Load | None,
    level: float | None,
    failures: int,
    detail: str,
    signal: Signal | None,
    is_near: bool,
    published: int,
    goal: int,
    capacity: float,
) -> Mapping[str, ReasonValue]:
    """The reason published with a new weight or state (built only when one changes)."""
    if state == DRAINING:
        return _DRAINED_REASON
    if state == STATIC:
        return _STATIC_REASON
    if state == UNHEALTHY:
        return {"state": state, "failures": failures, "error": signal.error if signal else None}
    if load is None or level is None:
        return {"state": STALE, "stale": True, "detail": detail, "failures": failures}
    reason: dict[str, ReasonValue] = {"state": state}
    if state == HEALTHY:  # room left, or close to saturation and hotter than its peers
        reason["band"] = weights.NEAR if is_near else weights.FREE
    reason.update(
        saturation=round(level, 2),  # the smoothed level the weight was computed from
        driver=load.driver,  # the term that dominated this scrape
        failures=failures,
    )
    if capacity < 1.0:  # observed capacity, relative to the best replica of its region
        reason["capacity"] = round(capacity, 2)
    if goal != published:  # on its way: a ramp, or a turn waiting for the reversal budget
        reason["goal"] = goal
    return reason
