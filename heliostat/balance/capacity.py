"""What one endpoint serves and can serve, in requests per second, from what it completed.

The one capacity estimator of the law: the region allocation adds its endpoints' capacities
into each region's supply (`law`), and the endpoint weights place each replica in a capacity
tier relative to the best of its region (`endpoints`, `weights.capacity_tier`).

Demand read from queue levels confuses a backlog with a rate (a 1.3x surge read as 8.5x).
Rates do not: per endpoint, at each new scrape,

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
  over the same stretch of time, so each scrape interval of length t gives a sample s / o
  (o averaged over the interval: the mean of both ends, one scrape is a snapshot), weighted
  by w o t, w being the endpoint's `busyness` before the interval: a busy stretch observes
  the throughput, a quiet one is an extrapolation (a replica with few requests runs each faster
  than a full one). The estimate is the ratio of two decaying sums (time constant TAU_S),
  w s t ("completions") over w o t ("busy time"): no bias from the first sample, and the
  completions say how sure the ratio is (n of them carry a relative error of 1/sqrt(n), see
  `relative_error`). Not weighted by the interval's own o (o^2 t, as it was): o is two
  snapshots, noisy around the interval's true occupancy, and a weight that grows with that
  noise regresses s on it with the noise in the denominator (errors in variables): an
  8-slot replica at 40% read 6.5 requests/s for 7.6 (20% low, 35% while young), and its
  region sent users away it could serve (`overflow.carries_own`). The busyness from before
  the interval (up at once, down over seconds) weighs busy stretches as much without it,
  and follows a load's onset at once: 7.8 at 40%, known as soon as before (a weight that
  also fell as slowly as it rose, the `level`, lagged an onset by seconds, and the law
  planned in endpoint units for seconds longer after start-up). The estimate is
  used once MIN_BUSY_TIME busy seconds and MIN_COMPLETIONS completions are behind it.
  Before an endpoint has been observed, the prior is its model's capacity per slot (median
  over the endpoints observed, dead ones included) times its slots.

A model is in *rates* mode when at least one live endpoint's capacity is known; otherwise
the law keeps its older unit, endpoint pressure against the thresholds (see `overflow`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from heliostat.balance import weights
from heliostat.balance.state import ServiceState
from heliostat.samples import Sample

TAU_S = 30.0  # the decaying sums' time constant
BUSYNESS_TAU_S = 5.0  # how slowly `busyness` falls
# The time constant of `level`, the occupancy averaged both ways: long enough that a burst of
# Poisson arrivals (a few slots more for a second) moves it little, short beside the law's
# other windows once load really changed (a queue proves that sooner, see `overflow`).
LEVEL_TAU_S = 5.0
FULL = 0.9  # an interval this full observes the throughput itself
# Before the estimate is used: some busy time (occupancy x seconds) and some completions. A
# rough early estimate beats none (the law would plan in endpoint units); the capacity tiers
# judge it by its error (`relative_error`), which is large while it is young.
MIN_BUSY_TIME = 1.0
MIN_COMPLETIONS = 5.0
# Relative error of a busy share averaged over TAU_S (sampled occupancy of a few slots,
# correlated over a request's lifetime): about 6% at the loads that matter.
BUSY_ERROR = 0.06

UNOBSERVED = ServiceState(0.0, 0.0, 0.0, None, None, None, None)


def observe(
    signal: Sample | None, slots: int | None, previous: ServiceState | None, dt: float
) -> ServiceState | None:
    """The endpoint's service state after this tick: `previous` unless the signal carries a
    new scrape from an engine that counts its completions; None if there never was one."""
    if signal is None or signal.scraped_at is None:
        return previous
    if signal.served_total is None and signal.served_rate is None:
        return previous  # only engines that count completions teach a service rate
    if previous is not None and previous.scraped_at == signal.scraped_at:
        return previous  # the same sample again: nothing new to learn
    before = previous if previous is not None else UNOBSERVED
    interval = None
    if before.scraped_at is not None:
        interval = max(0.0, signal.scraped_at - before.scraped_at)
    served = _served(signal, before, interval)
    occupancy = _occupancy(signal, slots)
    # The occupancy over the interval the served rate covers: the mean of both ends.
    spanned = occupancy
    if occupancy is not None and before.occupancy is not None:
        spanned = (occupancy + before.occupancy) / 2
    completions, busy_time, window, seen_full = (
        before.completions,
        before.busy_time,
        before.window,
        before.seen_full,
    )
    if served is not None and spanned is not None and interval:
        keep = math.exp(-interval / TAU_S)
        # Each interval's sample served / spanned counts with weight busyness x spanned: a
        # busy stretch observes the throughput, a quiet one only hints at it (a replica with
        # few requests runs each faster than a full one: its capacity would be
        # overestimated). The busyness from before the interval, not the interval's own
        # snapshots (see the docstring).
        weight = spanned if before.busyness is None else before.busyness
        completions = keep * completions + weight * served * interval
        busy_time = keep * busy_time + weight * spanned * interval
        window = keep * window + interval
        if spanned >= FULL:
            seen_full += 1
    gain = weights.alpha(dt, BUSYNESS_TAU_S)
    return ServiceState(
        completions,
        busy_time,
        window,
        served,
        signal.served_total,
        signal.scraped_at,
        signal.waiting,
        _growth(signal, before, interval),
        occupancy,
        seen_full,
        _busyness(before.busyness, occupancy, gain),
        _level(before.level, occupancy, weights.alpha(dt, LEVEL_TAU_S)),
    )


def _growth(signal: Sample, before: ServiceState, interval: float | None) -> float:
    """Queue growth between the two scrapes, requests/s (negative while it drains)."""
    if not interval or signal.waiting is None or before.waiting is None:
        return 0.0
    return (signal.waiting - before.waiting) / interval


def _busyness(before: float | None, sample: float | None, gain: float) -> float | None:
    """Occupancy that rises at once and falls slowly (EWMA down): busy as soon as the
    slots fill, not busy only once they stayed emptier for a while."""
    if sample is None:
        return before
    if before is None or sample >= before:
        return sample
    return before + gain * (sample - before)


def _level(before: float | None, sample: float | None, gain: float) -> float | None:
    """Occupancy averaged over LEVEL_TAU_S both ways (an EWMA): the share of its slots the
    endpoint's load keeps busy, which a burst does not move much. What its users' load is,
    measured directly: no capacity estimate and no demand estimate in it."""
    if sample is None:
        return before
    if before is None:
        return sample
    return before + gain * (sample - before)


def _occupancy(signal: Sample, slots: int | None) -> float | None:
    """The share of the endpoint's room in use: 1 while requests wait (its slots or its KV
    cache are full), else its running requests over its slots. Not KV use itself: blocks a
    prefix cache keeps are counted as used by some engines, and say nothing of the rate."""
    if (signal.waiting or 0.0) > 0.0:
        return 1.0
    slots = slots or signal.max_num_seqs
    running = signal.running
    if slots and running is not None and 0.0 <= running < math.inf:
        return min(1.0, running / slots)
    return None


def _served(signal: Sample, before: ServiceState, interval: float | None) -> float | None:
    """Completions per second over the last scrape interval (see the module docstring)."""
    rate = signal.served_rate
    if rate is not None:
        return rate if 0.0 <= rate < math.inf else None
    return _counted(signal.served_total, before.served_total, interval)


def _counted(total: float | None, before: float | None, interval: float | None) -> float | None:
    """Completions per second from the success counter's increase over `interval` (a counter
    that went down was reset: the process restarted and counts from zero)."""
    if total is None or before is None or not interval:
        return None
    increase = total - before
    if increase < 0:  # reset: its whole new value counts
        increase = total
    return increase / interval


def known(state: ServiceState | None) -> float | None:
    """The endpoint's capacity (requests/s with its room full) once enough is behind it."""
    if state is None:
        return None
    completions, busy_time = state.completions, state.busy_time
    if busy_time < MIN_BUSY_TIME or completions < MIN_COMPLETIONS:
        return None
    return completions / busy_time


def relative_error(state: ServiceState) -> float:
    """The relative standard error of `known(state)`: completions are counts (1/sqrt(n));
    the busy time, an average of instants, about BUSY_ERROR (more while the window is young)."""
    return math.sqrt(
        1.0 / max(state.completions, 1.0) + BUSY_ERROR**2 * TAU_S / max(state.window, 1.0)
    )


def arrivals(state: ServiceState) -> float | None:
    """What reached the endpoint per second: served plus queue growth; None if unknown.
    (Read for every live endpoint on every tick: `max(0.0, ...)` written out, nan too.)"""
    served = state.served
    if served is None:
        return None
    rate = served + state.growth
    return rate if rate > 0.0 else 0.0


def per_slot_prior(known: Iterable[float | None], slots: Iterable[int | None]) -> float | None:
    """The median capacity per slot of the endpoints whose capacity is known, if any (each
    endpoint's `known` capacity and its slots, in the same order; the median's order does
    not matter)."""
    values = [k / n for k, n in zip(known, slots, strict=True) if k is not None and n]
    return statistics.median(values) if values else None


def observe_all(
    signals: Sequence[Sample | None],
    slots: Sequence[int | None],
    previous: Iterable[ServiceState | None],
    dt: float,
) -> list[ServiceState | None]:
    """`observe` for every endpoint of a model (its columns, in its endpoint order): the
    same states to the bit, for the cost of one loop.

    With success counters (vLLM's `request_success_total`) every endpoint teaches its
    service rate at every scrape, so this runs over the whole fleet on every tick, and no
    row can be skipped: each scrape adds its interval's sample to the decaying sums, and
    every tick reads every row's estimate (`known`: the supply, the capacity tiers). So the
    loop is `observe` written out, operation for operation (a property test holds them
    together to the bit): the previous state read with one tuple unpacking, not a dozen
    attribute reads; `_served`, `_occupancy`, `_growth`, `_busyness` and `_level` inline,
    the gains worked out once per tick, and each state built as the tuple it is (a
    NamedTuple's own constructor is a Python call). About two thirds the cost of the loop that
    called them (issue 17, 2026-12-06: 10.8 ms for 15.7 per 10,000 rows, interleaved).

    What was measured against it (10,000 rows, issue 17, 2026-12-06), and why it stays a
    loop over the rows:
    - columns, in Python or numpy: while the state is one ServiceState per row, splitting
      the states into columns (`zip(*states)`) costs about 1.2 ms, reading the six sample
      columns 1.7 ms and building the states back 1.6 ms; then each of the twenty-odd
      arithmetic passes 0.3 ms in Python (`map`), or each of the eighteen columns' trip
      through numpy (`fromiter`, `tolist`) 0.24 ms, plus the rows whose readings are None:
      about 9-10 ms either way, as much as this loop (and `np.exp` differs from `math.exp`
      in the last bit over a range of intervals). Columns pay only if the state stays
      columns end to end (the supply, the tiers and `describe` reading them too);
    - lazy decay (sums decayed when read): each scrape still adds its interval's term,
      and every tick reads every row's estimate; skipping the rows whose sample agrees
      with their estimate would also skip their `seen_full` counts, their busyness and
      level, and the growth of their completions (the estimate's confidence), so the
      states would differ by more than a tolerance one can state simply;
    - skipping steady rows exactly: a row's sums stop moving only at their floating-point
      fixed point under the very same interval, and real scrape intervals jitter by
      milliseconds: no row of a live fleet would qualify.
    """
    gain_busy = weights.alpha(dt, BUSYNESS_TAU_S)
    gain_level = weights.alpha(dt, LEVEL_TAU_S)
    exp, inf, build, kind = math.exp, math.inf, tuple.__new__, ServiceState
    unobserved = UNOBSERVED
    found: list[ServiceState | None] = []
    append = found.append
    for signal, room, last in zip(signals, slots, previous, strict=True):
        if (
            signal is None
            or signal.scraped_at is None
            or (signal.served_total is None and signal.served_rate is None)
            or (last is not None and last[5] == signal.scraped_at)
        ):
            # nothing new, an engine that does not count its completions, or the same
            # sample again: nothing to learn
            append(last)
            continue
        scraped, rate, total = signal.scraped_at, signal.served_rate, signal.served_total
        before = unobserved if last is None else last
        interval: float | None = None
        if before[5] is not None:  # scraped_at
            interval = scraped - before[5]
            interval = interval if interval > 0.0 else 0.0  # `max(0.0, ...)`, nan too
        (
            completions,
            busy_time,
            window,
            _,
            total_before,
            _,
            waiting_before,
            _,
            was,
            seen_full,
            busyness,
            level,
        ) = before
        # `_served`: the engine's own rate, else its counter's increase
        served = (
            (rate if 0.0 <= rate < inf else None)
            if rate is not None
            else _counted(total, total_before, interval)
        )
        # `_occupancy`
        waiting = signal.waiting
        occupancy: float | None = 1.0
        if not (waiting or 0.0) > 0.0:
            room = room or signal.max_num_seqs
            running = signal.running
            occupancy = None
            if room and running is not None and 0.0 <= running < inf:
                occupancy = running / room
                occupancy = occupancy if occupancy < 1.0 else 1.0  # `min(1.0, ...)`, nan too
        spanned = occupancy
        if occupancy is not None and was is not None:
            spanned = (occupancy + was) / 2
        if served is not None and spanned is not None and interval:
            keep = exp(-interval / TAU_S)
            weight = spanned if busyness is None else busyness
            completions = keep * completions + weight * served * interval
            busy_time = keep * busy_time + weight * spanned * interval
            window = keep * window + interval
            if spanned >= FULL:
                seen_full += 1
        growth = (  # `_growth`
            (waiting - waiting_before) / interval
            if interval and waiting is not None and waiting_before is not None
            else 0.0
        )
        if occupancy is not None:  # `_busyness` and `_level`
            if busyness is None or occupancy >= busyness:
                busyness = occupancy
            else:
                busyness = busyness + gain_busy * (occupancy - busyness)
            level = occupancy if level is None else level + gain_level * (occupancy - level)
        append(
            build(
                kind,
                (
                    completions,
                    busy_time,
                    window,
                    served,
                    total,
                    scraped,
                    waiting,
                    growth,
                    occupancy,
                    seen_full,
                    busyness,
                    level,
                ),
            )
        )
    return found
