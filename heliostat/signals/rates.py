"""Counters -> rates between two scrapes of the same endpoint.

Three kinds: the prefix-cache hit rate (a ratio of two counters), the served rate (a success
counter over the time between scrapes) and the mean prefill time (a histogram's sum over its
count, averaged over PREFILL_TAU_S).

vLLM reports prefix-cache hits and queries as token counters since start; the recent hit rate
is their increase ratio between scrapes (`increase(hits) / increase(queries)`, as PromQL would
compute it). The wall time between scrapes cancels out of the ratio, so no clock is needed.
A counter that went down was reset (the server restarted): as Prometheus does, we count its
increase as its whole new value. When nothing was queried in between, the previous rate is
kept: an idle server's cache is as warm as it was, and an unknown rate is worse for routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heliostat.signals.record import Reading


@dataclass(frozen=True, slots=True)
class CounterState:
    """The counter values of the last accepted scrape, and the rate computed then."""

    hits: float
    queries: float
    rate: float | None


def _increases(now: tuple[float, float], before: tuple[float, float]) -> tuple[float, float]:
    """Two counters' increases since `before`, exported by one process: either going down
    means it restarted and both started again at zero, so their whole values are the
    increases (as Prometheus counts a reset)."""
    if now[0] < before[0] or now[1] < before[1]:
        return now
    return now[0] - before[0], now[1] - before[1]


def prefix_hit_rate(
    previous: CounterState | None, reading: Reading
) -> tuple[float | None, CounterState | None]:
    """The hit rate to publish for `reading` and the state to keep for the next scrape.

    Engines that publish a rate gauge (SGLang, old vLLM) pass straight through. The first
    counter reading of an endpoint has no rate yet (None).
    """
    hits, queries = reading.prefix_hits_total, reading.prefix_queries_total
    if hits is None or queries is None:
        return reading.prefix_hit_rate, None
    if previous is None:
        return None, CounterState(hits, queries, None)
    d_hits, d_queries = _increases((hits, queries), (previous.hits, previous.queries))
    if d_queries <= 0:
        return previous.rate, CounterState(hits, queries, previous.rate)
    rate = min(1.0, max(0.0, d_hits / d_queries))
    return rate, CounterState(hits, queries, rate)


@dataclass(frozen=True, slots=True)
class ServedState:
    """The success counter and scrape time of the last accepted scrape, and the rate then."""

    total: float
    at: float
    rate: float | None


def served_rate(
    previous: ServedState | None, total: float | None, at: float
) -> tuple[float | None, ServedState | None]:
    """Requests completed per second between the last two scrapes, and the state to keep.

    Uses the scrapes' own timestamps (`at`), so a late or skipped round does not inflate the
    rate. A counter that went down was reset (the server restarted, or one data-parallel engine
    did): its whole new value is the increase, as Prometheus's `rate()` counts it. A scrape
    that carries the previous one's timestamp repeats its rate. None until two scrapes, and
    for engines that export no success counter.
    """
    if total is None:
        return None, None
    if previous is None:
        return None, ServedState(total, at, None)
    dt = at - previous.at
    if dt <= 0:
        return previous.rate, ServedState(total, previous.at, previous.rate)
    increase = total - previous.total if total >= previous.total else total
    rate = increase / dt
    return rate, ServedState(total, at, rate)


# The prefill time is averaged over about this long (seconds): a replica prefills a few
# requests a second, and the mean of one scrape interval's swings with each one's prompt and
# cache hit; the law weighs it against round trips of tens of milliseconds.
PREFILL_TAU_S = 10.0


@dataclass(frozen=True, slots=True)
class PrefillState:
    """The histogram's sum and count at the last accepted scrape, and the decaying sums of
    their increases (seconds prefilling, requests prefilled) the mean is read from."""

    seconds: float
    requests: float
    at: float
    decayed_seconds: float = 0.0
    decayed_requests: float = 0.0


def prefill_time(
    previous: PrefillState | None, reading: Reading, at: float
) -> tuple[float | None, PrefillState | None]:
    """The mean seconds a request spent in prefill over the last PREFILL_TAU_S or so (each
    scrape's increases of the histogram's sum and count added into sums that decay by
    exp(-dt / PREFILL_TAU_S)), and the state to keep. A counter that went down was reset:
    its whole new value is the increase. None until something was prefilled between two
    scrapes, and for engines that export no such histogram."""
    seconds, requests = reading.prefill_seconds_total, reading.prefill_requests_total
    if seconds is None or requests is None:
        return None, None
    if previous is None:
        return None, PrefillState(seconds, requests, at)
    d_seconds, d_requests = _increases((seconds, requests), (previous.seconds, previous.requests))
    keep = math.exp(-max(0.0, at - previous.at) / PREFILL_TAU_S)
    state = PrefillState(
        seconds,
        requests,
        max(at, previous.at),
        previous.decayed_seconds * keep + d_seconds,
        previous.decayed_requests * keep + d_requests,
    )
    if state.decayed_requests <= 1e-9:
        return None, state
    return state.decayed_seconds / state.decayed_requests, state
