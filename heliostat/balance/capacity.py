"""What one endpoint serves and can serve, in requests per second, from what it completed.

Demand read from queue levels confuses a backlog with a rate (a 1.3x surge read as 8.5x).
Rates do not: per endpoint, each tick,

- **served** s: completions per second between the last two scrapes: the engine's own
  `Signal.served_rate`, else the increase of `Signal.served_total` over the time between
  scrapes (a counter that went down was reset: its whole new value counts). Not what the
  gateways' load reports call successful: Envoy counts a success when the response headers
  arrive, which for a stream is when the server accepts it, not when it completes;
- **growth** g: how fast its queue grew between the two scrapes (negative while it drains);
- **arrivals** a = max(0, s + g): what reached it, served or queued;
- **occupancy** o: the share of its slots in use, running / slots, and 1 while requests wait
  (its slots are full, or its KV cache is);
- **capacity** c: completions per second it sustains with its slots full. Little's law says
  s = o x c over the same stretch of time, so each scrape interval gives a sample s / o,
  with o averaged over the interval (the mean of both ends: one scrape's `running` is a
  snapshot). A busy interval (o = 1) is a direct observation of its throughput and moves
  the estimate fully (an EWMA, TAU_S); a quiet one is an extrapolation and moves it with
  weight o^2; below MIN_OCCUPANCY there is too little work to tell. The estimate is used
  only once MIN_SAMPLES intervals have been seen (a start-up burst is not a rate). Before an
  endpoint has been observed at all, the prior is its peers' capacity per slot (median over
  the model's observed endpoints) times its slots.

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
MIN_OCCUPANCY = 0.1
MIN_SAMPLES = 4  # scrapes with a served rate before the averages are trusted


def observe(
    signal: Signal | None,
    slots: int | None,
    previous: ServiceState | None,
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
    served = _served(signal, previous, interval)
    growth = 0.0
    if (
        interval
        and interval > 0
        and signal.waiting is not None
        and previous is not None
        and previous.waiting is not None
    ):
        growth = (signal.waiting - previous.waiting) / interval
    waiting = signal.waiting or 0.0
    occupancy: float | None = None
    if waiting > 0.0:
        occupancy = 1.0
    elif slots and signal.running is not None:
        occupancy = min(1.0, max(0.0, signal.running) / slots)
    gain = weights.alpha(dt, TAU_S)
    # The occupancy over the interval the served rate covers: the mean of both ends.
    spanned = occupancy
    if occupancy is not None and previous is not None and previous.occupancy is not None:
        spanned = (occupancy + previous.occupancy) / 2
    samples = previous.samples if previous else 0
    capacity = previous.capacity if previous is not None else None
    if served is not None and spanned is not None and spanned >= MIN_OCCUPANCY:
        samples += 1
        sample = served / spanned
        if capacity is None:
            capacity = sample
        else:  # a busy interval is a direct observation; a quiet one only nudges
            capacity += gain * spanned * spanned * (sample - capacity)
    return ServiceState(
        capacity=capacity,
        served=served,
        served_total=signal.served_total,
        scraped_at=signal.scraped_at,
        waiting=signal.waiting,
        growth=growth,
        busy=occupancy is not None and occupancy >= 1.0,
        occupancy=occupancy,
        samples=samples,
    )


def _served(
    signal: Signal,
    previous: ServiceState | None,
    interval: float | None,
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
    return None


def known(state: ServiceState | None) -> float | None:
    """The endpoint's capacity once MIN_SAMPLES intervals have been seen, else None."""
    if state is None or state.capacity is None or state.samples < MIN_SAMPLES:
        return None
    return state.capacity


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
        capacity / n
        for address, state in sorted(states.items())
        if (capacity := known(state)) is not None and (n := slots.get(address))
    ]
    return statistics.median(values) if values else None
