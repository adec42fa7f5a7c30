"""What one endpoint serves and can serve, in requests per second, from what it completed.

Demand read from queue levels confuses a backlog with a rate (a 1.3x surge read as 8.5x).
Rates do not: per endpoint, each tick,

- **served** s: completions per second between the last two scrapes: the engine's own
  `Sample.served_rate`, else the increase of `Sample.served_total` over the time between
  scrapes (a counter that went down was reset: its whole new value counts). Not what the
  gateways' load reports call successful: Envoy counts a success when the response headers
  arrive, which for a stream is when the server accepts it, not when it completes;
- **growth** g: how fast its queue grew between the two scrapes (negative while it drains);
- **arrivals** a = max(0, s + g): what reached it, served or queued;
- **occupancy** o: the share of its room in use: running / slots, and 1 while requests
  wait (its slots or its KV cache are full: a KV-bound replica queues with slots free);
- **capacity** c: completions per second it sustains when full. Little's law says s = o x c
  over the same stretch of time, so each scrape interval gives a sample s / o, with o
  averaged over the interval (the mean of both ends: one scrape is a snapshot). A busy
  interval (o = 1) is a direct observation of its throughput; a quiet one is an
  extrapolation and counts with weight o^2; below MIN_OCCUPANCY there is too little work to
  tell. Until MIN_EVIDENCE (weights summed: two busy intervals, or many quiet ones) the
  estimate is the weighted mean of the samples and is not used; then an EWMA (TAU_S)
  weighted the same way. Before an endpoint has been observed, the prior is its model's
  capacity per slot (median over the endpoints observed, dead ones included) times its
  slots.

A model is in *rates* mode when at least one live endpoint's capacity is known; otherwise
the law keeps its older unit, endpoint pressure against the thresholds (see `overflow`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from heliostat.balance import weights
from heliostat.balance.state import ServiceState
from heliostat.samples import Sample

TAU_S = 5.0
MIN_OCCUPANCY = 0.1
FULL = 0.9  # an interval this full observes the throughput itself
MIN_EVIDENCE = 2.0  # busy-interval equivalents (sum of occupancy^2) before it is trusted


def observe(
    signal: Sample | None,
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
    occupancy = _occupancy(signal, slots)
    gain = weights.alpha(dt, TAU_S)
    # The occupancy over the interval the served rate covers: the mean of both ends.
    spanned = occupancy
    if occupancy is not None and previous is not None and previous.occupancy is not None:
        spanned = (occupancy + previous.occupancy) / 2
    evidence = previous.evidence if previous else 0.0
    seen_full = previous.seen_full if previous else 0
    capacity = previous.capacity if previous is not None else None
    if served is not None and spanned is not None and spanned >= MIN_OCCUPANCY:
        sample = served / spanned
        weight = spanned * spanned  # a busy interval is an observation, a quiet one a hint
        if capacity is None:
            capacity = sample
        elif evidence < MIN_EVIDENCE:  # still learning: the weighted mean of the samples
            capacity += weight / (evidence + weight) * (sample - capacity)
        else:
            capacity += gain * weight * (sample - capacity)
        evidence += weight
        if spanned >= FULL:
            seen_full += 1
    return ServiceState(
        capacity=capacity,
        served=served,
        served_total=signal.served_total,
        scraped_at=signal.scraped_at,
        waiting=signal.waiting,
        growth=growth,
        busy=occupancy is not None and occupancy >= 1.0,
        occupancy=occupancy,
        evidence=evidence,
        seen_full=seen_full,
        busyness=_busyness(previous.busyness if previous else None, occupancy, gain),
    )


def _busyness(before: float | None, sample: float | None, gain: float) -> float | None:
    """Occupancy that rises at once and falls slowly (EWMA down): busy as soon as the
    slots fill, not busy only once they stayed emptier for a while."""
    if sample is None:
        return before
    if before is None or sample >= before:
        return sample
    return before + gain * (sample - before)


def _occupancy(signal: Sample, slots: int | None) -> float | None:
    """The share of the endpoint's room in use: 1 while requests wait (its slots or its KV
    cache are full), else its running requests over its slots. Not KV use itself: blocks a
    prefix cache keeps are counted as used by some engines, and say nothing of the rate."""
    if (signal.waiting or 0.0) > 0.0:
        return 1.0
    if slots and signal.running is not None:
        return min(1.0, max(0.0, signal.running) / slots)
    return None


def _served(
    signal: Sample,
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
    """The endpoint's capacity once MIN_EVIDENCE has been gathered, else None."""
    if state is None or state.capacity is None or state.evidence < MIN_EVIDENCE:
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
