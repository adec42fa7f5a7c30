"""One endpoint, one tick: its state, health, weight and the reason for them.

States and how Envoy sees them:

- `healthy`: weight from headroom (see `weights`), HEALTHY.
- `saturated`: at or past its thresholds (smoothed level enters at 1.0, leaves at 0.85; a
  single sample at 2x the thresholds enters at once, see `weights`). Floor weight, but still
  HEALTHY, never DEGRADED: Envoy only uses degraded hosts once a priority's
  healthy ones cannot carry its traffic, and then it moves the *whole* priority's excess to
  the next priority's healthy hosts first. Marking a busy region's replicas DEGRADED would
  thus push all of its traffic onto the nearest neighbour and tip that one over too. The floor
  weight plus least-request already steer new work away; bounded overflow (`overflow`) moves
  a measured share, never everything.
- `stale`: no scrape within `signals.stale_after` (or never scraped). Neutral weight W_MAX/2,
  HEALTHY: we do not know, so neither starve nor favour it.
- `static`: the model has no signals at all yet (start-up). Neutral weight, HEALTHY.
- `unhealthy`: `consecutive_failures >= thresholds.failures`. UNHEALTHY, floor weight; one good
  scrape (which resets the count) brings it back, ramping up from the floor.
- `draining`: the operator drained it. DRAINING (Envoy stops sending new requests), floor.

The published reason is kept verbatim while the weight and state hold, so an endpoint whose
numbers wobble inside the dead band produces byte-identical EDS and nothing is pushed.
"""

from __future__ import annotations

from collections.abc import Mapping

from heliostat.balance import weights
from heliostat.balance.saturation import NO_GROWTH, Load, measure, queue_growth
from heliostat.balance.state import EndpointState
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
) -> EndpointState:
    """The endpoint's state after this tick, given its signal and its previous state.

    `gain` is the tick's EWMA gain, `weights.alpha(dt)` (computed once per tick).
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
    spread = noise = 0.0
    pending = 0
    detail = ""
    if drained:
        state, level, published = DRAINING, None, weights.FLOOR
    elif signal is not None and failures >= thresholds.failures:
        state, level, published = UNHEALTHY, None, weights.FLOOR
    elif static:
        state, level, published = STATIC, None, weights.NEUTRAL
    elif (
        signal is None
        or signal.scraped_at is None
        or now - signal.scraped_at > stale_after  # Sample.is_stale, inlined: runs per endpoint
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
            before = previous.level if previous else None
            level = weights.smooth(before, load.saturation, gain)
            if before is not None and previous is not None:
                noise = weights.noise_band(previous.spread, gain)  # last tick's: monotone
                spread = previous.spread + gain * (abs(load.saturation - before) - previous.spread)
            if weights.saturated(level, previous is not None and previous.state == SATURATED):
                state, published = SATURATED, weights.FLOOR
            else:
                state = HEALTHY
                prev_published = previous.published if previous else weights.NEUTRAL
                goal = weights.held_target(level, prev_published)
                candidate = weights.publish(prev_published, goal, noise)
                published, pending = weights.confirm(
                    prev_published, candidate, goal, noise, previous.pending if previous else 0
                )

    reason: Mapping[str, ReasonValue]
    if previous is not None and previous.state == state and previous.published == published:
        reason = previous.reason  # held: byte-identical resource, nothing to push
    else:
        reason = _explain(state, load, level, failures, detail, signal)
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
        spread,
        load.pressure if load is not None else None,
        pending,
    )


def _explain(
    state: str,
    load: Load | None,
    level: float | None,
    failures: int,
    detail: str,
    signal: Sample | None,
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
    return {
        "state": state,
        "saturation": round(level, 2),  # the smoothed level the weight was computed from
        "driver": load.driver,  # the term that dominated this scrape
        "failures": failures,
    }
