"""What one endpoint serves and can serve, in requests per second, from what it completed.

Demand read from queue levels confuses a backlog with a rate (a 1.3x surge read as 8.5x).
Rates do not: per endpoint, each tick,

- **served** s: completions per second between the last two scrapes: the engine's own
  `Signal.served_rate`, else the increase of `Signal.served_total` over the time between
  scrapes (a counter that went down was reset: its whole new value counts), else what the
  gateways saw it complete (LRS, `demand.GatewayLoad.served`);
- **growth** g: how fast its queue grew between the two scrapes (negative while it drains);
- **arrivals** a = max(0, s + g): what reached it, served or queued;
- **capacity** c: completions per second it sustains with its slots full. Observed directly
  while it is busy (slots full or a queue), c follows s with weight 1; below that, Little's
  law extrapolates it from the share of slots in use, s x slots / running, with weight
  (running / slots)^2 so a lightly loaded replica only nudges the estimate. The estimate is
  an EWMA with time constant TAU_S. Before an endpoint has been observed at all, the prior is
  its peers' capacity per slot (median over the model's observed endpoints) times its slots.

A model is in *rates* mode when at least one live endpoint's capacity is known; otherwise
the law keeps its older unit, endpoint pressure against the thresholds (see `overflow`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from heliostat.balance import weights
from heliostat.balance.state import ServiceState
from heliostat.signals.record import Signal

TAU_S = 5.0


def observe(
    signal: Signal | None,
    slots: int | None,
    previous: ServiceState | None,
    gateway_served: float | None,
    dt: float,
) -> ServiceState | None:
    """The endpoint's service state after this tick; None without a signal."""
    if signal is None or signal.scraped_at is None:
        return previous
    if previous is not None and previous.scraped_at == signal.scraped_at:
        return previous  # the same sample again: nothing new to learn
    interval = None
    if previous is not None and previous.scraped_at is not None:
        interval = signal.scraped_at - previous.scraped_at
    served = _served(signal, previous, interval, gateway_served)
    growth = 0.0
    if (
        interval
        and interval > 0
        and signal.waiting is not None
        and previous is not None
        and previous.waiting is not None
    ):
        growth = (signal.waiting - previous.waiting) / interval
    running = signal.running
    waiting = signal.waiting or 0.0
    busy = waiting > 0.0 or (
        slots is not None and running is not None and slots > 0 and running >= slots
    )
    capacity = previous.capacity if previous is not None else None
    if served is not None:
        sample: float | None = None
        weight = 0.0
        if busy:
            sample, weight = served, 1.0
        elif slots and running and running > 0:
            use = min(1.0, running / slots)
            sample, weight = served / use, use * use
        if sample is not None and weight > 0.0:
            if capacity is None:
                capacity = sample
            else:
                capacity += weights.alpha(dt, TAU_S) * weight * (sample - capacity)
    return ServiceState(
        capacity=capacity,
        served=served,
        served_total=signal.served_total,
        scraped_at=signal.scraped_at,
        waiting=signal.waiting,
        growth=growth,
        busy=busy,
    )


def _served(
    signal: Signal,
    previous: ServiceState | None,
    interval: float | None,
    gateway_served: float | None,
) -> float | None:
    if signal.served_rate is not None:
        return max(0.0, signal.served_rate)
    total = signal.served_total
    if (
        total is not None
        and previous is not None
        and previous.served_total is not None
        and interval is not None
        and interval > 0
    ):
        increase = total - previous.served_total
        if increase < 0:  # reset: the process restarted and counts from zero
            increase = total
        return increase / interval
    return gateway_served


def arrivals(state: ServiceState) -> float | None:
    """What reached the endpoint per second: served plus queue growth; None if unknown."""
    if state.served is None:
        return None
    return max(0.0, state.served + state.growth)


def per_slot_prior(
    states: Mapping[str, ServiceState], slots: Mapping[str, int | None]
) -> float | None:
    """The median capacity per slot of the endpoints whose capacity is known, if any."""
    values = [
        state.capacity / n
        for address, state in sorted(states.items())
        if state.capacity is not None and (n := slots.get(address))
    ]
    return statistics.median(values) if values else None
