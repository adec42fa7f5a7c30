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

import array
import math
import operator
import statistics
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

from heliostat.balance import weights
from heliostat.balance.state import (
    OPTIONAL_SERVICE,
    EndpointKey,
    Flags,
    Floats,
    ServiceColumns,
    ServiceState,
)
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
    """`observe` for every endpoint of a model (its rows, in its endpoint order), through
    the columns the law keeps (`observe_columns`): the same states to the bit.

    With success counters (vLLM's `request_success_total`) every endpoint teaches its
    service rate at every scrape, so the estimator runs over the whole fleet on every tick,
    and no row can be skipped: each scrape adds its interval's sample to the decaying sums,
    and every tick reads every row's estimate (`known`: the supply, the capacity tiers).
    What was measured against skipping (issue 17, 2026-12-06):
    - lazy decay (sums decayed when read): each scrape still adds its interval's term,
      and every tick reads every row's estimate; skipping the rows whose sample agrees
      with their estimate would also skip their `seen_full` counts, their busyness and
      level, and the growth of their completions (the estimate's confidence), so the
      states would differ by more than a tolerance one can state simply;
    - skipping steady rows exactly: a row's sums stop moving only at their floating-point
      fixed point under the very same interval, and real scrape intervals jitter by
      milliseconds: no row of a live fleet would qualify.
    So the law holds the states as columns from tick to tick (`ServiceColumns`) and updates
    them with whole-column operations; a loop over records (one tuple unpacked and one
    built per row) cost about 1 us a row, and columns split from and rebuilt into records
    every tick cost as much (issue 17, 2026-12-06)."""
    rows = list(previous)
    rooms = [
        room or (signal.max_num_seqs if signal is not None else None)
        for room, signal in zip(slots, signals, strict=True)
    ]
    columns = observe_columns(read_samples(signals), rooms, service_columns(rows), dt)
    return columns.rows()


# -- columns -------------------------------------------------------------------------------


class SampleColumns(NamedTuple):
    """What the estimator reads of a model's samples, one column per reading in its endpoint
    order, each with its mask (True where the reading is set: a row without a sample has
    none). `present`: the row has a sample."""

    present: Flags
    scraped_at: Floats
    has_scraped_at: Flags
    served_rate: Floats
    has_served_rate: Flags
    served_total: Floats
    has_served_total: Flags
    waiting: Floats
    has_waiting: Flags
    running: Floats
    has_running: Flags


class _NoSample:
    """What is read where a row has no sample: no reading at all."""

    __slots__ = ()
    scraped_at = served_rate = served_total = waiting = running = None


_NO_SAMPLE = _NoSample()


def floats(values: list[float | None]) -> tuple[Floats, Flags]:
    """A column of readings as floats (0.0 where None) and its mask: a column without a
    None, the common case, is converted in C at once."""
    count = len(values)
    try:
        column = np.frombuffer(array.array("d", values), dtype=np.float64)  # type: ignore[type-var]
        return column, np.ones(count, dtype=np.bool_)
    except TypeError:  # some None (or something that is not a number: as before, an error)
        pass
    mask = np.fromiter(map(operator.is_not, values, repeat(None)), dtype=np.bool_, count=count)
    filled = array.array("d", [0.0 if v is None else v for v in values])
    return np.frombuffer(filled, dtype=np.float64), mask


def read_samples(
    signals: Sequence[Sample | None],
    scraped_at: list[float | None] | None = None,
    queued: list[float | None] | None = None,
) -> SampleColumns:
    """The estimator's readings of every row's sample, as columns (in C: one pass per
    reading over the samples; `scraped_at` and `queued`, each row's `scraped_at` and
    `waiting` (None where it has no sample) when the caller read them already)."""
    rows: Sequence[object] = signals
    present = np.fromiter(
        map(operator.is_not, signals, repeat(None)), dtype=np.bool_, count=len(signals)
    )
    if not present.all():
        rows = [_NO_SAMPLE if signal is None else signal for signal in signals]
    given = {"scraped_at": scraped_at, "waiting": queued}
    read = [
        floats(given.get(name) or list(map(operator.attrgetter(name), rows)))
        for name in ("scraped_at", "served_rate", "served_total", "waiting", "running")
    ]
    (scraped, has_scraped), (rate, has_rate), (total, has_total), (waiting, has_waiting) = read[:4]
    running, has_running = read[4]
    return SampleColumns(
        present,
        scraped,
        has_scraped,
        rate,
        has_rate,
        total,
        has_total,
        waiting,
        has_waiting,
        running,
        has_running,
    )


def no_service(
    addresses: tuple[str, ...],
    index: Mapping[str, int],
    keys: tuple[EndpointKey, ...] | None = None,
) -> ServiceColumns:
    """Columns of `addresses` none of which has a service state yet."""
    count = len(addresses)
    zeros = np.zeros(count, dtype=np.float64)
    none = np.zeros(count, dtype=np.bool_)
    return ServiceColumns(
        addresses,
        index,
        none,
        zeros,
        zeros,
        zeros,
        zeros,
        np.zeros(count, dtype=np.int64),
        dict.fromkeys(OPTIONAL_SERVICE, zeros),
        dict.fromkeys(OPTIONAL_SERVICE, none),
        keys,
    )


def service_columns(
    states: Sequence[ServiceState | None],
    addresses: tuple[str, ...] | None = None,
    index: Mapping[str, int] | None = None,
    keys: tuple[EndpointKey, ...] | None = None,
) -> ServiceColumns:
    """Columns of the given states, one row each (None: the row has none); `addresses`
    default to the rows' numbers as text."""
    count = len(states)
    if addresses is None:
        addresses = tuple(map(str, range(count)))
    if index is None:
        index = {address: row for row, address in enumerate(addresses)}
    present = [state is not None for state in states]
    rows = [state if state is not None else UNOBSERVED for state in states]
    fields = list(zip(*rows, strict=True)) if rows else [()] * len(ServiceState._fields)
    by_name = dict(zip(ServiceState._fields, fields, strict=True))

    def floats(name: str) -> Floats:
        return np.array([0.0 if v is None else v for v in by_name[name]], dtype=np.float64)

    return ServiceColumns(
        addresses,
        index,
        np.array(present, dtype=np.bool_),
        floats("completions"),
        floats("busy_time"),
        floats("window"),
        floats("growth"),
        np.array(by_name["seen_full"], dtype=np.int64),
        {name: floats(name) for name in OPTIONAL_SERVICE},
        {
            name: np.array([v is not None for v in by_name[name]], dtype=np.bool_)
            for name in OPTIONAL_SERVICE
        },
        keys,
    )


def aligned(previous: Mapping[str, ServiceState], keys: tuple[EndpointKey, ...]) -> ServiceColumns:
    """`previous` (the last tick's service states by address) as columns in the order of
    `keys` (the model's (model, address) in its endpoint order): the very columns while
    the keys are those they were aligned to; else each address takes its row (one without
    any, none)."""
    if isinstance(previous, ServiceColumns) and previous.aligned_to is keys:
        return previous
    addresses = tuple(key[1] for key in keys)
    index = {address: row for row, address in enumerate(addresses)}
    if isinstance(previous, ServiceColumns):
        if previous.addresses == addresses:
            return previous.rekeyed(keys)
        if not previous:
            return no_service(addresses, index, keys)
        rows = np.array([previous.index.get(a, -1) for a in addresses], dtype=np.int64)
        found = rows >= 0
        take = np.where(found, rows, 0)

        def gathered(column: Floats) -> Floats:
            return np.where(found, column[take], 0.0)

        return ServiceColumns(
            addresses,
            index,
            found & previous.present[take],
            gathered(previous.completions),
            gathered(previous.busy_time),
            gathered(previous.window),
            gathered(previous.growth),
            np.where(found, previous.seen_full[take], 0),
            {n: gathered(c) for n, c in previous.optional.items()},
            {n: found & m[take] for n, m in previous.has.items()},
            keys,
        )
    if not previous:
        return no_service(addresses, index, keys)
    return service_columns(list(map(previous.get, addresses)), addresses, index, keys)


def _exp(values: Floats) -> Floats:
    """`math.exp` of every value (to the bit: not `np.exp`, see `observe_columns`), taken
    once per distinct value: a fleet scraped on one interval has a handful of them, not one
    per row (a nan is one value, whose exp is nan; 0.0 and -0.0 are one, as their exp is)."""
    distinct, where = np.unique(values, return_inverse=True)
    exps = np.fromiter(map(math.exp, distinct.tolist()), dtype=np.float64, count=len(distinct))
    return exps[where.reshape(-1)]


def observe_columns(
    samples: SampleColumns,
    slots: Sequence[int | None],
    previous: ServiceColumns,
    dt: float,
    room: Floats | None = None,
) -> ServiceColumns:
    """`observe` of every row at once (`samples`, `slots` and `previous` in the model's
    endpoint order; a row's slots are its endpoint's, else its sample's `max_num_seqs`, as
    `observe` reads them): the same states to the bit (a property test holds them together),
    for a few operations over whole columns instead of a loop over rows.

    The arithmetic is `observe`'s, operation for operation in the same order, over numpy
    float64 (IEEE like Python's floats: the same bits); None is a mask beside its column,
    and each branch a selection (`np.where`). The decay `exp(-interval / TAU_S)` is taken
    with `math.exp` over the rows that learn, not `np.exp`, which may differ from it in the
    last bit (it does on CPUs where numpy vectorises it)."""
    n = len(previous.addresses)
    s = samples
    was, was_has = previous.optional, previous.has
    with np.errstate(all="ignore"):
        # Rows that learn: a new scrape from an engine that counts its completions.
        same = previous.present & was_has["scraped_at"] & (was["scraped_at"] == s.scraped_at)
        learn = s.present & s.has_scraped_at & (s.has_served_total | s.has_served_rate) & ~same
        if not learn.any():
            return previous
        # The interval since the last scrape: `max(0.0, ...)`, nan too; "truthy" when set
        # and not zero (a row without a state starts as UNOBSERVED: no scrape yet).
        raw = s.scraped_at - was["scraped_at"]
        interval = np.where(raw > 0.0, raw, 0.0)
        spans = was_has["scraped_at"] & (interval != 0.0)
        # `_served`: the engine's own rate, else its counter's increase (a reset counts whole)
        rate_ok = s.has_served_rate & (s.served_rate >= 0.0) & (s.served_rate < math.inf)
        increase = s.served_total - was["served_total"]
        increase = np.where(increase < 0, s.served_total, increase)
        counted = s.has_served_total & was_has["served_total"] & spans
        served = np.where(s.has_served_rate, s.served_rate, increase / interval)
        has_served = np.where(s.has_served_rate, rate_ok, counted)
        # `_occupancy`: 1 while requests wait, else running over slots
        if room is None:  # (`rooms(slots)`, unless the caller has it)
            room = rooms(slots)
        queued = s.has_waiting & (s.waiting > 0.0)
        counts = (room != 0.0) & s.has_running & (s.running >= 0.0) & (s.running < math.inf)
        share = s.running / room
        share = np.where(share < 1.0, share, 1.0)  # `min(1.0, ...)`
        occupancy = np.where(queued, 1.0, share)
        has_occupancy = queued | counts
        both = has_occupancy & was_has["occupancy"]
        spanned = np.where(both, (occupancy + was["occupancy"]) / 2, occupancy)
        # The decaying sums, where an interval's sample is complete.
        adds = learn & has_served & has_occupancy & spans
        keep = np.ones(n, dtype=np.float64)
        if adds.any():
            keep[adds] = _exp(-interval[adds] / TAU_S)
        busy = was["busyness"]
        weight = np.where(was_has["busyness"], busy, spanned)
        completions = np.where(
            adds, keep * previous.completions + weight * served * interval, previous.completions
        )
        busy_time = np.where(
            adds, keep * previous.busy_time + weight * spanned * interval, previous.busy_time
        )
        window = np.where(adds, keep * previous.window + interval, previous.window)
        seen_full = previous.seen_full + (adds & (spanned >= FULL))
        # `_growth`
        grows = spans & s.has_waiting & was_has["waiting"]
        growth = np.where(grows, (s.waiting - was["waiting"]) / interval, 0.0)
        # `_busyness` (up at once, down smoothly) and `_level` (both ways)
        gain_busy = weights.alpha(dt, BUSYNESS_TAU_S)
        gain_level = weights.alpha(dt, LEVEL_TAU_S)
        rises = ~was_has["busyness"] | (occupancy >= busy)
        busyness = np.where(
            has_occupancy, np.where(rises, occupancy, busy + gain_busy * (occupancy - busy)), busy
        )
        level_was = was["level"]
        level = np.where(
            has_occupancy,
            np.where(was_has["level"], level_was + gain_level * (occupancy - level_was), occupancy),
            level_was,
        )
    # Rows that learn take the new state, the others keep theirs (or none).
    values = {
        "served": (served, has_served),
        "served_total": (s.served_total, s.has_served_total),
        "scraped_at": (s.scraped_at, s.has_scraped_at),
        "waiting": (s.waiting, s.has_waiting),
        "occupancy": (occupancy, has_occupancy),
        "busyness": (busyness, was_has["busyness"] | has_occupancy),
        "level": (level, was_has["level"] | has_occupancy),
    }
    return ServiceColumns(
        previous.addresses,
        previous.index,
        previous.present | learn,
        np.where(learn, completions, previous.completions),
        np.where(learn, busy_time, previous.busy_time),
        np.where(learn, window, previous.window),
        np.where(learn, growth, previous.growth),
        np.where(learn, seen_full, previous.seen_full),
        {
            name: np.where(learn & mask, column, np.where(learn, 0.0, was[name]))
            for name, (column, mask) in values.items()
        },
        {name: np.where(learn, mask, was_has[name]) for name, (_, mask) in values.items()},
        previous.aligned_to,
    )


def rooms(slots: Sequence[int | None]) -> Floats:
    """Each row's slots as floats, 0.0 where it has none (or 0)."""
    try:
        return np.frombuffer(array.array("d", slots), dtype=np.float64)  # type: ignore[type-var]
    except TypeError:
        return np.array([r or 0 for r in slots], dtype=np.float64)


def known_columns(service: ServiceColumns) -> tuple[Floats, Flags]:
    """`known` of every row: the capacities (ratios, whatever the mask says) and where they
    are known."""
    completions, busy_time = service.completions, service.busy_time
    with np.errstate(all="ignore"):
        ratio = completions / busy_time
    # `busy_time < MIN_BUSY_TIME or completions < MIN_COMPLETIONS`: None (nan passes)
    known = service.present & ~((busy_time < MIN_BUSY_TIME) | (completions < MIN_COMPLETIONS))
    return ratio, known
