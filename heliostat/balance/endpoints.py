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

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from typing import NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt

from heliostat.balance import capacity, weights
from heliostat.balance.saturation import NO_GROWTH, Growth, Load, measure, queue_growth
from heliostat.balance.state import (
    EndpointKey,
    EndpointState,
    Flags,
    Floats,
    Readings,
    ServiceState,
    SteadyColumn,
)
from heliostat.balance.view import EndpointView, Health, ReasonValue, endpoint_view, endpoint_views
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
    tier = previous.tier if previous is not None else 0
    if service is not None:  # no service state: no capacity known, the tier holds
        tier = _tier(service, peers, tier, previous)
    return _step(
        endpoint, model, signal, previous, now, gain, drained, static, hashing, peers, tier
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
    tier: int,
    load_driven: _LoadDriven | None = None,
) -> tuple[EndpointState, bool]:
    """`step`, and whether its state is a fixed point (`_Tick.steady`); `tier` is its
    capacity tier after this tick (`_tier`, worked out by the caller: `advance` from the
    known capacities' column, without a service state per row); `load_driven` is
    `_load_driven` (the specification) or `_fused`, its faster twin."""
    # (`_growth` and `_tier` written out for their common cases: this runs for every
    # endpoint that moved, and a call costs as much as their arithmetic.)
    if previous is None or signal is None:
        growth = NO_GROWTH
    elif signal.scraped_at == previous.scraped_at:
        growth = previous.growth
    else:
        growth = queue_growth(signal.waiting, previous.waiting, previous.growth)
    failures = signal.consecutive_failures if signal is not None else 0
    capacity_share = weights.CAPACITY_TIERS[tier]
    if drained:
        tick = _DRAINED
    elif signal is not None and failures >= model.thresholds.failures:
        tick = _UNHEALTHY
    elif static:
        tick = _STATIC
    else:
        tick = (load_driven or _load_driven)(
            endpoint, model, signal, previous, now, gain, hashing, peers, growth, capacity_share
        )
    state, published = tick.state, tick.published
    reason: Mapping[str, ReasonValue]
    if previous is not None and previous.state == state and previous.published == published:
        reason = previous.reason  # held: byte-identical resource, nothing to push
    else:
        reason = _explain(tick, failures, signal, capacity_share)
    # `_view`, written out: the previous view while nothing in it changed (no allocation)
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
        view = endpoint_view(
            endpoint.address, endpoint.region, endpoint.version, published, health, reason
        )
    # built as the tuple it is (its NamedTuple constructor is a Python call): per endpoint
    return _new(
        EndpointState,
        (
            state,
            tick.level,
            published,
            reason,
            view,
            signal.waiting if signal is not None else None,
            signal.scraped_at if signal is not None else None,
            growth,
            tick.load.pressure if tick.load is not None else None,
            tick.near,
            tick.moves,
            tier,
            tick.unlifted,
        ),
    ), tick.steady


_new = tuple.__new__  # a NamedTuple built from all its fields, without its Python constructor

# The readings an endpoint's tick depends on besides the time of its scrape (`Steady`).
readings = operator.attrgetter(
    "waiting", "running", "kv_usage", "max_num_seqs", "consecutive_failures"
)


def advance(
    model: Model,
    keys: Sequence[EndpointKey],
    signals: Sequence[Sample | None],
    services: Sequence[ServiceState | None],
    previous: Sequence[EndpointState | None],
    column: SteadyColumn | None,
    now: float,
    gain: float,
    drained: frozenset[EndpointKey],
    static: bool,
    hashing: bool,
    peers: Mapping[str, Peers],
    known: Sequence[float | None] | None = None,
    known_columns: tuple[Floats, Flags] | None = None,
    reads: SampleReads | None = None,
) -> SteadyColumn:
    """`step` for every endpoint of the model (`keys`, `signals`, `services` in its endpoint
    order), skipping the arithmetic of those at a fixed point. `known`: each service's
    `capacity.known`, when the caller worked it out already; `known_columns`, the same as
    the estimator's columns (`capacity.known_columns`: the ratios and where they are known),
    when it holds them, so the held rows' tiers are tested over whole columns; `reads`,
    `sample_reads(signals)` when the caller read them already. The previous
    states are `column`, the last tick's result, when it was made under this `model`; else
    `previous` (their records in the model's order, None where there was none).

    Most of a large fleet reads the same numbers tick after tick, only newer. An endpoint
    whose last tick left it at a fixed point (`_Tick.steady`: its level is its sample, no
    lift or queue growth pending, not near, the hysteresis holds and its weight is at its
    goal) and whose readings have not moved since, still fresh, not drained, in the same
    capacity tier, gets the very same state back with the new scrape's time: its level,
    weight, reason and view cannot move (`step`'s own arithmetic, worked through for those
    conditions: the EWMA of a constant is itself, `move` to its own goal is none, and the
    `near` band cannot be entered below ENTER_NEAR whatever its peers show). It keeps its
    very record; only the new scrape's time and queue go into their columns. The result,
    read through `SteadyColumn.state`, is `step`'s to the bit (a property test holds them
    together).
    """
    stale_after = model.signals.stale_after
    keys = tuple(keys)
    count = len(keys)
    present, scraped_column, waiting_column = reads if reads is not None else sample_reads(signals)
    region_peers = peers.get
    endpoints = model.endpoints
    states: list[EndpointState | None]
    kept: list[Readings | None]
    levels_column: list[float | None]
    compose: Callable[[int], EndpointState | None]
    rows: Iterable[int]
    if known is None:
        known = list(map(capacity.known, services))
    if column is not None and column.model is model:
        compose, regions, index = column.state, column.regions, column.index
        rows = _moving(
            column,
            keys,
            present,
            scraped_column,
            services,
            known,
            now,
            stale_after,
            drained,
            peers,
            known_columns,
        )
        if not rows:  # every row held: its columns as they are, only the samples' are new
            return dataclasses.replace(
                column,
                keys=keys,
                scraped=tuple(scraped_column),
                waiting=tuple(waiting_column),
                moved=(),
            )
        states, kept = list(column.states), list(column.readings)
        levels_column = list(column.peer_levels)
    else:  # no memo: every endpoint takes `step`
        compose, regions = previous.__getitem__, _regions(endpoints)
        index = {endpoint.address: row for row, endpoint in enumerate(endpoints)}
        states, kept, levels_column = [None] * count, [None] * count, [None] * count
        rows = range(count)
    holds = weights.tier_holds
    carried = column.tiers if column is not None and column.model is model else None
    if column is not None and column.model is model and not static:
        moved = cast(list[int], rows)
        if len(moved) >= VECTOR_ROWS:
            left: list[int] = []
            # in blocks: each pass over a block's samples and records finds them in the cache
            for start in range(0, len(moved), STEP_BLOCK):
                block = moved[start : start + STEP_BLOCK]
                stepped = _step_rows(
                    model,
                    block,
                    _tiers(block, column, services, known, peers, known_columns),
                    present,
                    column,
                    now,
                    gain,
                    drained,
                    keys,
                    peers,
                )
                for row, state, memo, level in zip(
                    stepped.rows, stepped.records, stepped.kept, stepped.levels, strict=True
                ):
                    states[row] = state
                    kept[row] = memo
                    levels_column[row] = level
                left += stepped.slow
            slow: Iterable[int] = left
        else:
            slow = moved
    else:
        slow = rows
    for row in slow:
        endpoint, signal, key = endpoints[row], signals[row], keys[row]
        before, found, own = compose(row), region_peers(endpoint.region), known[row]
        # `_tier`, from the row's known capacity: its service state is composed (from the
        # estimator's columns) only where the tier may move, which its error decides
        tier = before.tier if before is not None else 0
        if (
            own is not None
            and found is not None
            and found.best_service > 0.0
            and not holds(own / found.best_service, tier)
        ):
            tier = _tier(services[row], found, tier, before)
        state, fixed = _step(
            endpoint,
            model,
            signal,
            before,
            now,
            gain,
            key in drained,
            static,
            hashing,
            found,
            tier,
            _fused,
        )
        states[row] = state
        kept[row] = readings(signal) if fixed and signal is not None else None
        level = state.level  # `peer_level`, written out
        levels_column[row] = (
            min(level, _CAP) if level is not None and state.state in _LOAD_DRIVEN else None
        )
    records = cast(tuple[EndpointState, ...], tuple(states))  # every row was filled
    return SteadyColumn(
        model,
        tuple(kept),
        records,
        regions,
        tuple(scraped_column),
        tuple(waiting_column),
        index,
        keys,
        tuple(levels_column),
        _tier_column(records, carried, rows),
        tuple(rows) if isinstance(rows, list) else None,  # None: no column to advance from
        region_codes=(
            column.region_codes
            if column is not None and column.model is model and column.region_codes is not None
            else _region_codes(regions, count)
        ),
    )


def _region_codes(regions: Sequence[tuple[str, Sequence[int]]], count: int) -> npt.NDArray[np.intp]:
    """Each row's index in `regions` (-1: in none)."""
    codes = np.full(count, -1, dtype=np.intp)
    for code, (_, indices) in enumerate(regions):
        codes[np.fromiter(indices, dtype=np.intp, count=len(indices))] = code
    return codes


def _region_peers(
    column: SteadyColumn, peers: Mapping[str, Peers], at: npt.NDArray[np.intp]
) -> tuple[list[Peers | None], npt.NDArray[np.intp]]:
    """Each region's `Peers` (in `column.regions`' order) and the rows' `at` indices into
    it (-1 where none: read through `_NO_PEERS` appended at the end)."""
    codes = column.region_codes
    if codes is None or len(codes) != len(column.states):
        codes = _region_codes(column.regions, len(column.states))
    found = [peers.get(region) for region, _ in column.regions]
    return found, codes[at]


def _tier_column(
    records: Sequence[EndpointState],
    carried: npt.NDArray[np.intp] | None,
    moved: Iterable[int],
) -> npt.NDArray[np.intp]:
    """Every record's tier as a column: the last tick's (`carried`, whose held rows kept
    their records) with the `moved` rows' new tiers, else read from every record (also
    once more than a quarter of them moved: one pass in C, not a gather and a scatter)."""
    rows = list(moved)
    if carried is None or len(carried) != len(records) or 4 * len(rows) > len(records):
        return np.fromiter(map(_TIER, records), dtype=np.intp, count=len(records))
    tiers = carried.copy()
    if rows:
        tiers[rows] = list(map(_TIER, map(records.__getitem__, rows)))
    return tiers


class SampleReads(NamedTuple):
    """What every tick reads of each row's sample, once (`sample_reads`): the sample as
    read (the `_ABSENT` one where there is none), its scrape's time and its queue."""

    present: Sequence[object]
    scraped: list[float | None]
    waiting: list[float | None]


def sample_reads(signals: Sequence[Sample | None]) -> SampleReads:
    """`SampleReads` of the rows' samples, all in C."""
    present: Sequence[object] = signals
    if any(map(operator.is_, signals, repeat(None))):
        present = [_ABSENT if signal is None else signal for signal in signals]
    return SampleReads(present, list(map(_SCRAPED_AT, present)), list(map(_WAITING, present)))


class _Absent:
    """What `advance` reads where an endpoint has no sample: nothing, and readings that
    equal no memo (a memo is only kept for a sample)."""

    __slots__ = ()
    waiting = running = kv_usage = max_num_seqs = scraped_at = None
    consecutive_failures = object()


_ABSENT = _Absent()
_SCRAPED_AT = operator.attrgetter("scraped_at")
_WAITING = operator.attrgetter("waiting")


def _moving(
    column: SteadyColumn,
    keys: Sequence[EndpointKey],
    present: Sequence[object],
    scraped: Sequence[float | None],
    services: Sequence[ServiceState | None],
    known: Sequence[float | None],
    now: float,
    stale_after: float,
    drained: frozenset[EndpointKey],
    peers: Mapping[str, Peers],
    known_columns: tuple[Floats, Flags] | None = None,
) -> list[int]:
    """The rows that take `step` this tick: all but those at a fixed point whose readings
    held, still fresh, not drained and in the same capacity tier (see `advance`). The
    common tests run over whole columns in C (`map`), so a steady row costs no Python."""
    count = len(keys)
    same = list(map(operator.eq, map(readings, present), column.readings))
    steady: list[bool]
    if None in scraped:  # some row never scraped: the test row by row
        fresh: Iterable[bool] = [t is not None and now - t <= stale_after for t in scraped]
        steady = list(map(operator.and_, same, fresh))
    elif _all_fresh(cast(Sequence[float], scraped), now, stale_after):
        steady = same  # the fresh column would be all True: the readings' test decides
    else:
        ages = map(operator.sub, repeat(now), cast(Sequence[float], scraped))
        steady = list(map(operator.and_, same, map(operator.le, ages, repeat(stale_after))))
    moving = [] if False not in steady else list(compress(range(count), map(operator.not_, steady)))
    held = column.states
    also: list[int] = []
    if drained:
        also.extend(row for row in compress(range(count), steady) if keys[row] in drained)
    if services.count(None) == count:
        pass  # no service state: no capacity known, every tier holds
    elif known_columns is not None:  # the same test, over the estimator's columns
        also.extend(_tiers_moving(column, steady, known_columns, services, peers))
    else:  # a capacity tier may move under a held record
        for region, members in column.regions:
            found = peers.get(region)
            if found is None or found.best_service <= 0.0:
                continue  # no best capacity to compare with: every tier holds (`_tier`)
            best = found.best_service
            for row in compress(members, map(steady.__getitem__, members)):
                own, tier = known[row], held[row].tier
                if own is None or weights.tier_holds(own / best, tier):
                    continue  # `_tier` keeps it, without working its error out
                if _tier(services[row], found, tier, held[row]) != tier:
                    also.append(row)
    if also:
        moving = sorted({*moving, *also})
    return moving


_TIER = operator.attrgetter("tier")


def _tiers_moving(
    column: SteadyColumn,
    steady: Sequence[bool],
    known_columns: tuple[Floats, Flags],
    services: Sequence[ServiceState | None],
    peers: Mapping[str, Peers],
) -> list[int]:
    """The steady rows whose capacity tier moves (`_tier`), found as `_moving`'s loop finds
    them but with its common test, `weights.tier_holds` of the known capacity over the
    region's best, over whole columns (`weights.tiers_hold`): only the rows it cannot keep
    compose their service state and work their error out."""
    ratio, is_known = known_columns
    held = column.states
    count = len(held)
    candidates: Flags | None = None
    tiers: npt.NDArray[np.intp] | None = None
    moved: list[int] = []
    for region, members in column.regions:
        found = peers.get(region)
        if found is None or found.best_service <= 0.0:
            continue  # no best capacity to compare with: every tier holds (`_tier`)
        if candidates is None or tiers is None:
            candidates = np.fromiter(steady, dtype=np.bool_, count=count) & is_known
            tiers = column.tiers
            if tiers is None:
                tiers = np.fromiter(map(_TIER, held), dtype=np.intp, count=count)
        at = np.fromiter(members, dtype=np.intp, count=len(members))
        rows = at[candidates[at]]
        with np.errstate(all="ignore"):
            relative = ratio[rows] / found.best_service
        for row in rows[~weights.tiers_hold(relative, tiers[rows])].tolist():
            tier = held[row].tier
            if _tier(services[row], found, tier, held[row]) != tier:
                moved.append(row)
    return moved


def _all_fresh(scraped: Sequence[float], now: float, stale_after: float) -> bool:
    """Whether `now - t <= stale_after` for every scrape time t, from the oldest one: a
    rounded `now - t` never grows as t does, so the oldest is the only one to test (two
    passes in C instead of two maps and a column of ages). A nan, which `min` may pass
    over and no test passes, makes the sum nan: then False, and the caller tests row by
    row."""
    if not scraped:
        return True
    total = sum(scraped, 0.0)
    return total == total and now - min(scraped) <= stale_after


def _regions(endpoints: Iterable[Endpoint]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The regions in order of first appearance, each with its endpoints' indices."""
    found: dict[str, list[int]] = {}
    for index, endpoint in enumerate(endpoints):
        found.setdefault(endpoint.region, []).append(index)
    return tuple((region, tuple(indices)) for region, indices in found.items())


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


# The ticks that need no arithmetic, built once: a fleet going stale is tens of thousands.
_DRAINED = _Tick(DRAINING, None, weights.FLOOR)
_UNHEALTHY = _Tick(UNHEALTHY, None, weights.FLOOR)
_STATIC = _Tick(STATIC, None, weights.NEUTRAL)
_NEVER_SCRAPED = _Tick(STALE, None, weights.NEUTRAL, detail="never scraped")
_NO_SERIES = _Tick(STALE, None, weights.NEUTRAL, detail="no load series reported")


@functools.lru_cache(maxsize=64)
def _stale_after(stale_after: float) -> _Tick:
    """The tick of an endpoint with no scrape within `stale_after` (one per policy value)."""
    return _Tick(STALE, None, weights.NEUTRAL, detail=f"no scrape within {stale_after:g}s")


def _tier(
    service: ServiceState | None,
    peers: Peers | None,
    current: int,
    previous: EndpointState | None = None,
) -> int:
    """Its capacity tier: its observed capacity over the best of its region's, once both are
    known (`capacity.known`), judged by their errors and by its load against its peers'
    (`_lean`, from its `previous` state); else the tier it had."""
    own = capacity.known(service)
    if own is None or service is None or peers is None or peers.best_service <= 0.0:
        return current
    if weights.tier_holds(own / peers.best_service, current):
        return current  # whatever its error: no need to work it out
    error = math.sqrt(capacity.relative_error(service) ** 2 + peers.best_error**2)
    lean = _lean(peers, previous)
    return weights.capacity_tier(own / peers.best_service, current, error, lean)


def _lean(peers: Peers, previous: EndpointState | None) -> int:
    """+1 while the endpoint runs hotter than its region's other live endpoints as the
    `near` band's entry judges it (`weights.near`), -1 while they, taken together, run that
    much hotter than it: its weight gives it more, or less, than its capacity; 0 otherwise
    or unknown."""
    level = peer_level(previous)
    others = _peer_level(peers, level)
    if level is None or others is None:
        return 0
    if weights.near(level, others, was_near=False):
        return 1
    if weights.near(others, level, was_near=False):
        return -1
    return 0


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
        return _NEVER_SCRAPED
    if now - signal.scraped_at > stale_after:  # Sample.is_stale, inlined: runs per endpoint
        return _stale_after(stale_after)
    load = measure(signal, endpoint.slots, model.thresholds, growth.trend)
    if load is None:
        return _NO_SERIES
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
    # (The same sample again shows no growth: `queue_growth` reads both queues alike.)
    steady = (
        smoothed.unlifted is None
        and level == load.saturation
        and goal == published
        and not is_near
        and level < weights.ENTER_NEAR
        and weights.saturated(level, is_saturated) == is_saturated
        and growth == NO_GROWTH
    )
    return _Tick(state, level, published, load, is_near, moves, goal, "", smoothed.unlifted, steady)


def _fused(
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
    """`_load_driven` with `measure`, `weights.settle`, `saturated`, `near`, `target` and
    `move` written out for their common cases (the rare ones call them): the same
    operations in the same order, so the same floats to the bit, at a third of the calls.
    `advance` runs it for every endpoint that moved; a property test holds it to `step`."""
    stale_after = model.signals.stale_after
    if signal is None or signal.scraped_at is None:
        return _NEVER_SCRAPED
    if now - signal.scraped_at > stale_after:
        return _stale_after(stale_after)
    load = measure(signal, endpoint.slots, model.thresholds, growth.trend)
    if load is None:
        return _NO_SERIES
    saturation = load.saturation
    live = previous if previous is not None and previous.state in _LOAD_DRIVEN else None
    last = live.level if live is not None else None
    if live is None or last is None:
        level, unlifted = saturation, None
    else:
        level, unlifted = _settled(last, live.unlifted, saturation, gain)
    # weights.saturated, weights.near
    if live is not None and live.state == SATURATED:
        is_saturated = level > weights.LEAVE_SATURATED
    else:
        is_saturated = level >= weights.ENTER_SATURATED
    others = _peer_level(peers, last)
    capped = min(level, _CAP)
    if others is None or others >= weights.ENTER_SATURATED:
        is_near = False
    elif live is not None and live.near:
        is_near = capped > weights.LEAVE_NEAR and capped - others > weights.NEAR_MARGIN / 2
    else:
        is_near = capped >= weights.ENTER_NEAR and capped - others >= weights.NEAR_MARGIN
    # weights.target: without the near band no cut, so neither hashing nor peers matter
    if is_near:
        goal = weights.target(
            is_saturated=is_saturated,
            is_near=is_near,
            hashing=hashing,
            capacity=capacity_share,
            relative=others / level if others is not None and level > 0.0 else None,
        )
    else:
        goal = _PLAIN_GOALS.get(capacity_share) or _plain_goal(capacity_share)
    before = previous.published if previous is not None else weights.NEUTRAL
    history = live.moves if live is not None else weights.NO_MOVES
    if goal == before:
        published, moves = before, history
    else:
        published, moves = _moved(before, goal, now, history, is_saturated, is_near, level)
    steady = (
        unlifted is None
        and level == saturation
        and goal == published
        and not is_near
        and level < weights.ENTER_NEAR
        and (level > weights.LEAVE_SATURATED if is_saturated else level >= weights.ENTER_SATURATED)
        == is_saturated
        and growth == NO_GROWTH
    )
    return _new(  # every field, as the tuple it is (no NamedTuple constructor call)
        _Tick,
        (
            SATURATED if is_saturated else HEALTHY,
            level,
            published,
            load,
            is_near,
            moves,
            goal,
            "",
            unlifted,
            steady,
        ),
    )


def _plain_goal(capacity_share: float) -> int:
    """`weights.target` without the near band: W_MAX x the capacity share, within bounds."""
    return max(weights.FLOOR, min(weights.W_MAX, round(weights.W_MAX * capacity_share)))


# ... for each capacity tier's share, worked out once (a tier is one of a few).
_PLAIN_GOALS = {share: _plain_goal(share) for share in weights.CAPACITY_TIERS}


def _settled(
    last: float, lifted: float | None, sample: float, gain: float
) -> tuple[float, float | None]:
    """`weights.settle` of a level that exists, as (value, unlifted)."""
    value = last + gain * (sample - last)
    if sample >= weights.HARD_SATURATION and value < weights.ENTER_SATURATED:
        value = weights.ENTER_SATURATED
    held = last if lifted is None else lifted
    base = held + gain * (sample - held)
    if value - base < 1e-3:
        return value, None
    if sample <= weights.CLEAR:
        return base, None
    return value, base


def _moved(
    before: int,
    goal: int,
    now: float,
    history: weights.Moves,
    is_saturated: bool,
    is_near: bool,
    level: float,
) -> tuple[int, weights.Moves]:
    """`weights.move` towards a goal that differs: a turn (the reversal budget) goes
    through it, a move on in the same direction is written out."""
    direction = 1 if goal > before else -1
    if history.direction != 0 and direction != history.direction:
        clear = not is_saturated and not is_near and level <= weights.LEAVE_NEAR
        evidence = weights.Evidence(is_saturated, clear)
        return weights.move(before, goal, now, history, evidence)
    if direction > 0:
        published = min(goal, 2 * before)
    elif is_saturated or goal == weights.FLOOR:
        published = goal
    else:
        published = max(goal, (before + 1) // 2)
    return published, weights.Moves(direction, history.reversals, is_saturated and direction < 0)


_LoadDriven = Callable[
    [
        Endpoint,
        Model,
        "Sample | None",
        "EndpointState | None",
        float,
        float,
        bool,
        "Peers | None",
        Growth,
        float,
    ],
    _Tick,
]


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
    endpoints = list(endpoints)
    return peers_of(endpoints, [previous.get((model, e.address)) for e in endpoints], service)


def peer_level(state: EndpointState | None) -> float | None:
    """What the endpoint adds to its region's `Peers.level_sum`: its level, capped, while it
    is live (healthy or saturated with a level); None when it does not count."""
    if state is None or state.level is None or state.state not in _LOAD_DRIVEN:
        return None
    return min(state.level, _CAP)


def peers_of(
    endpoints: Iterable[Endpoint],
    previous: Iterable[EndpointState | None],
    service: Mapping[str, ServiceState],
) -> dict[str, Peers]:
    """`region_peers`, given each endpoint's previous state (None: it had none) in order."""
    endpoints = list(endpoints)
    return column_peers(_regions(endpoints), list(map(peer_level, previous)), endpoints, service)


def column_peers(
    regions: Iterable[tuple[str, Sequence[int]]],
    levels: Sequence[float | None],
    endpoints: Sequence[Endpoint],
    service: Mapping[str, ServiceState],
    known: Sequence[float | None] | None = None,
) -> dict[str, Peers]:
    """`peers_of` over a model's columns: `regions`, each region's rows in order; `levels`,
    each row's `peer_level` (`SteadyColumn.peer_levels`, kept across ticks for the rows
    that held); `known`, when kept, each row's `capacity.known` of its `service` entry
    (the law keeps it from the tick that made them: no lookup and no call per row). The
    sums run per region in row order with `sum` (in C), the same in both paths, so the
    law's columns and the specification agree to the bit."""
    found: dict[str, Peers] = {}
    observed_of = service.get
    for region, rows in regions:
        counted = [row for row in rows if levels[row] is not None]
        if not counted:
            continue
        best = _NONE
        if service and known is not None:  # as below, its error only for the best row
            top, most = -1, 0.0
            for row in counted:
                own = known[row]
                if own is not None and own > most:
                    top, most = row, own
            observed = observed_of(endpoints[top].address) if top >= 0 else None
            if observed is not None:
                best = (most, capacity.relative_error(observed))
        elif service:  # the best observed capacity among them, with its error
            for row in counted:
                observed = observed_of(endpoints[row].address)
                own = capacity.known(observed)
                if own is not None and observed is not None and own > best[0]:
                    best = (own, capacity.relative_error(observed))
        total = sum(cast(list[float], list(map(levels.__getitem__, counted))), 0.0)
        found[region] = Peers(total, len(counted), *best)
    return found


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
        return _stale_reason(tick.detail, failures)
    # saturation: the smoothed level the weight was computed from; driver: the term that
    # dominated this scrape; capacity: observed, relative to the best replica of its region;
    # goal: on its way (a ramp, or a turn waiting for the budget).
    band = (weights.NEAR if tick.near else weights.FREE) if state == HEALTHY else None
    share = _hundredths(capacity_share) if capacity_share < 1.0 else None
    goal = tick.goal if tick.goal != tick.published else None
    key = (state, band, _hundredths(level), load.driver, failures, share, goal)
    reason = _REASONS.get(key)
    if reason is None:
        reason = _reason(key)
        if len(_REASONS) >= _REASONS_LIMIT:
            _REASONS.clear()
        _REASONS[key] = reason
    return reason


def _hundredths(value: float) -> float:
    """`round(value, 2)`, the same float (or int, for an int), at a fraction of its cost
    (it converts to decimal digits and back, about 1 us, once or twice per endpoint that
    moved). For a positive float whose hundredfold y is below 2**40 and at least 0.01
    from a half: y's rounding error (half a unit in its last place, at most 2**-13) cannot
    take the exact hundredfold of `value` across a half, so its correct rounding to an
    integer is k = round(y), and `round(value, 2)` is the double nearest to k / 100, which
    is what dividing two doubles gives (k and 100 are exact). Everything else (zero and
    its sign, negatives, near ties, huge values, nan, inf) takes `round` itself."""
    if type(value) is float:
        scaled = value * 100.0
        if 0.0 < scaled < _ROUNDED_BELOW:
            whole = round(scaled)
            if abs(scaled - whole) < 0.49:
                return whole / 100
    return round(value, 2)


_ROUNDED_BELOW = 2.0**40


# A live endpoint's reason by content: one shared (read-only) mapping per content, as for
# stale ones. Every endpoint that moved gets one, and they take few values (levels in
# hundredths), so a fleet's reasons are a few hundred objects, not one per endpoint per
# move, and translation finds each one's reason code once (`xds.translate.endpoints`).
# Emptied when it outgrows _REASONS_LIMIT: it can only be too small, never wrong.
_ReasonKey = tuple[str, str | None, float, str, int, float | None, int | None]
_REASONS: dict[_ReasonKey, Mapping[str, ReasonValue]] = {}
_REASONS_LIMIT = 4096


def _reason(key: _ReasonKey) -> Mapping[str, ReasonValue]:
    """The reason for its content (`_explain`'s key), keys in the order they are shown."""
    state, band, saturation, driver, failures, share, goal = key
    reason: dict[str, ReasonValue] = {"state": state}
    if band is not None:  # healthy: room left, or close to saturation and hotter than peers
        reason["band"] = band
    reason.update(saturation=saturation, driver=driver, failures=failures)
    if share is not None:
        reason["capacity"] = share
    if goal is not None:
        reason["goal"] = goal
    return reason


@functools.lru_cache(maxsize=256)
def _stale_reason(detail: str, failures: int) -> Mapping[str, ReasonValue]:
    """A stale endpoint's reason, one shared (read-only) mapping per content, like
    _DRAINED_REASON: a fleet that goes stale at once would build tens of thousands."""
    return {"state": STALE, "stale": True, "detail": detail, "failures": failures}


# -- the moved rows' step over columns -----------------------------------------------------

# From this many moved rows on, `advance` steps them over columns (`_step_rows`); fewer take
# `_step` one by one, where numpy's cost per operation outweighs the rows' arithmetic.
VECTOR_ROWS = 48
# ... in blocks of at most this many rows: a column pass over 50,000 rows' samples, records
# or new objects no longer finds them in the cache (1.4 us a new view against 0.5).
STEP_BLOCK = 4096

_NAN = math.nan
_HEALTHY_VIEW = _HEALTH[HEALTHY]  # every state the columns step is HEALTHY to Envoy
_TIER_GOALS = np.array([_plain_goal(share) for share in weights.CAPACITY_TIERS], dtype=np.int64)
_TIER_SHARES: tuple[float | None, ...] = tuple(
    _hundredths(share) if share < 1.0 else None for share in weights.CAPACITY_TIERS
)
_DRIVERS = ("", "kv", "queue", "running")
_STATE = operator.itemgetter(0)


def _floats(values: Sequence[object]) -> tuple[Floats, Flags]:
    """A column of optional numbers as floats (nan where None) and where it is set."""
    has = np.fromiter(map(operator.is_not, values, repeat(None)), dtype=np.bool_, count=len(values))
    if has.all():
        return np.array(values, dtype=np.float64), has
    return np.array([_NAN if v is None else v for v in values], dtype=np.float64), has


def _usable(values: Floats, has: Flags) -> Flags:
    """Where a reading is absent or a finite non-negative number (`saturation._reading` keeps
    it as it is); elsewhere `_step` reads it, row by row."""
    with np.errstate(invalid="ignore"):
        return ~has | ((values >= 0.0) & (values < math.inf))


def _pick_max(a: Floats, b: Floats) -> Floats:
    """Python's `max(a, b)` per element: a unless b > a."""
    return np.where(b > a, b, a)


class _Stepped(NamedTuple):
    """The rows `_step_rows` stepped, with their records, readings memos and peer levels;
    `slow`, the rows it left to `_step`."""

    rows: list[int]
    records: list[EndpointState]
    kept: list[Readings | None]
    levels: list[float | None]
    slow: list[int]


def _step_rows(
    model: Model,
    rows: list[int],
    tiers: list[int],
    present: Sequence[object],
    column: SteadyColumn,
    now: float,
    gain: float,
    drained: frozenset[EndpointKey],
    keys: Sequence[EndpointKey],
    peers: Mapping[str, Peers],
) -> _Stepped:
    """`_step` (with `_fused`) of the `rows` that moved, over columns: every row whose tick
    is the common one (a sample that reads as `measure` reads it, a previous record, not
    drained nor failing, stale or live outside the `near` band, no turn against the reversal
    budget, no queue growth starting) is worked out with whole-column operations, the same
    operations on the same floats in the same order as `_fused`, so the same records to the
    bit; the others are left to `_step` (`_Stepped.slow`). `tiers`: each row's capacity
    tier after this tick. A property test holds it to `step`."""
    thresholds = model.thresholds
    stale_after = model.signals.stale_after
    count = len(rows)
    every = count == len(column.states)  # every row moved: the columns as they are

    def gather(values: Sequence[_T]) -> Sequence[_T]:
        return values if every else list(map(values.__getitem__, rows))

    signals = gather(present)
    records = gather(column.states)
    (
        p_state,
        p_level,
        p_published,
        p_reason,
        p_view,
        _,
        _,
        p_growth,
        _,
        p_near,
        p_moves,
        _,
        p_unlifted,
    ) = zip(*records, strict=True)
    # the previous sample's time and queue, as `column.state` composes them
    p_scraped = gather(column.scraped)
    p_waiting = gather(column.waiting)
    scraped = list(map(_SCRAPED_AT, signals))
    failures = list(map(_FAILURES, signals))
    # which rows this can step at all: a scraped sample (not `_ABSENT`), failing less than
    # the thresholds, not drained
    ok = np.fromiter(map(operator.is_not, scraped, repeat(None)), dtype=np.bool_, count=count)
    if not ok.all():
        failures = [f if s is not None else 0 for f, s in zip(failures, scraped, strict=True)]
    limit = thresholds.failures
    ok &= np.fromiter((type(f) is int and f < limit for f in failures), dtype=np.bool_, count=count)
    if drained:
        ok &= ~np.fromiter(
            map(drained.__contains__, map(keys.__getitem__, rows)), dtype=np.bool_, count=count
        )
    scraped_at, _ = _floats([s if s is not None else _NAN for s in scraped])
    with np.errstate(invalid="ignore"):
        stale = ok & (now - scraped_at > stale_after)  # `Sample.is_stale`, inlined
    live_rows = ok & ~stale
    # queue growth: the same sample again keeps its growth; a new one shows none unless its
    # queue rose (left to `_step`)
    waiting_raw = list(map(_WAITING, signals))
    waiting, has_waiting = _floats(waiting_raw)
    before_waiting, has_before_waiting = _floats(p_waiting)
    same_scrape = np.fromiter(map(operator.eq, scraped, p_scraped), dtype=np.bool_, count=count)
    usable_waiting = _usable(waiting, has_waiting)
    with np.errstate(invalid="ignore"):
        no_rise = (
            (~has_waiting | ~has_before_waiting | (waiting <= before_waiting))
            & usable_waiting
            & _usable(before_waiting, has_before_waiting)
        )
    ok &= same_scrape | no_rise
    growth: list[Growth] = [
        g if same else NO_GROWTH for g, same in zip(p_growth, same_scrape.tolist(), strict=True)
    ]
    rise = np.fromiter(map(_RISE, growth), dtype=np.float64, count=count)
    trend = np.fromiter(map(_TREND, growth), dtype=np.float64, count=count)
    # `measure`
    running, has_running = _floats(list(map(_RUNNING, signals)))
    kv, has_kv = _floats(list(map(_KV, signals)))
    ok &= ~live_rows | (usable_waiting & _usable(running, has_running) & _usable(kv, has_kv))
    endpoints = model.endpoints
    hints = list(map(_SLOTS_OF, gather(endpoints)))
    slots_raw = [h or s for h, s in zip(hints, map(_MAX_NUM_SEQS, signals), strict=True)]
    slots, has_slots = _floats(slots_raw)
    with np.errstate(all="ignore"):
        seats = np.where(has_slots & (slots > 0), slots * thresholds.running, 0.0)
        driver = np.zeros(count, dtype=np.intp)
        saturation = np.full(count, -1.0)
        term = kv / thresholds.kv
        driver[has_kv] = 1
        saturation = np.where(has_kv, term, saturation)
        term = waiting / thresholds.queue
        up = has_waiting & (term > saturation)
        driver[up] = 2
        saturation = np.where(up, term, saturation)
        term = running / seats
        up = has_running & (seats > 0) & (term > saturation)
        driver[up] = 3
        saturation = np.where(up, term, saturation)
        ok &= ~live_rows | (driver > 0)  # no term: `_NO_SERIES`, left to `_step`
        # `_pressure`
        added = np.where(saturation < 1.0, 0.0, trend)
        pressure = saturation
        pressure = np.where(
            has_waiting, _pick_max(pressure, (waiting + added) / thresholds.queue), pressure
        )
        queued = np.where(has_waiting & (waiting != 0.0), waiting, 0.0)  # `waiting or 0.0`
        pressure = np.where(
            has_running & (seats > 0),
            _pick_max(pressure, (running + queued + added) / seats),
            pressure,
        )
    # `_fused`: the level
    live = np.fromiter(map(_LOAD_DRIVEN.__contains__, p_state), dtype=np.bool_, count=count)
    last, has_last = _floats(p_level)
    lifted, has_lifted = _floats(p_unlifted)
    settling = live & has_last
    with np.errstate(all="ignore"):
        value = last + gain * (saturation - last)
        value = np.where(
            (saturation >= weights.HARD_SATURATION) & (value < weights.ENTER_SATURATED),
            weights.ENTER_SATURATED,
            value,
        )
        held = np.where(has_lifted, lifted, last)
        base = held + gain * (saturation - held)
        settles = value - base < 1e-3
        clears = saturation <= weights.CLEAR
        level = np.where(settling, np.where(settles | ~clears, value, base), saturation)
        unlifted = settling & ~settles & ~clears  # `unlifted` is `base` there
        ok &= ~live_rows | np.isfinite(level)
        was_saturated = live & (
            np.fromiter(map(operator.eq, p_state, repeat(SATURATED)), dtype=np.bool_, count=count)
        )
        is_saturated = np.where(
            was_saturated, level > weights.LEAVE_SATURATED, level >= weights.ENTER_SATURATED
        )
        # the peers' mean level without its own (`_peer_level`)
        by_region, code = _region_peers(column, peers, np.array(rows, dtype=np.intp))
        total = np.array([p.level_sum if p is not None else _NAN for p in by_region] + [_NAN])
        total = total[code]  # a row in no region (-1) reads the last entry: none
        live_peers = np.array([p.live if p is not None else 0 for p in by_region] + [0])
        live_peers = live_peers[code]
        own = np.where(settling, np.where(last > _CAP, _CAP, last), 0.0)
        total = np.where(settling, total - own, total)
        live_peers = np.where(settling, live_peers - 1, live_peers)
        has_others = live_peers > 0
        others = total / np.where(has_others, live_peers, 1)
        capped = np.where(level > _CAP, _CAP, level)
        was_near = live & np.fromiter(map(bool, p_near), dtype=np.bool_, count=count)
        is_near = (
            has_others
            & ~(others >= weights.ENTER_SATURATED)
            & np.where(
                was_near,
                (capped > weights.LEAVE_NEAR) & (capped - others > weights.NEAR_MARGIN / 2),
                (capped >= weights.ENTER_NEAR) & (capped - others >= weights.NEAR_MARGIN),
            )
        )
    ok &= ~live_rows | ~is_near  # the `near` band's cut: `weights.target`, left to `_step`
    # the goal and the move towards it
    tier_column = np.array(tiers, dtype=np.intp)
    goal = np.where(live_rows, _TIER_GOALS[tier_column], weights.NEUTRAL)
    before = np.array(p_published, dtype=np.int64)
    history = [m if on else weights.NO_MOVES for m, on in zip(p_moves, live.tolist(), strict=True)]
    last_direction = np.fromiter(map(_DIRECTION, history), dtype=np.int64, count=count)
    moving = goal != before
    direction = np.where(goal > before, 1, -1)
    turns = moving & (last_direction != 0) & (direction != last_direction)
    ok &= ~live_rows | ~turns  # a turn: the reversal budget (`weights.move`), left to `_step`
    published = np.where(
        ~moving,
        before,
        np.where(
            direction > 0,
            np.minimum(goal, 2 * before),
            np.where(
                is_saturated | (goal == weights.FLOOR),
                goal,
                np.maximum(goal, (before + 1) // 2),
            ),
        ),
    )
    steady = (
        ~unlifted
        & (level == saturation)
        & (goal == published)
        & (level < weights.ENTER_NEAR)
        & (
            np.where(
                is_saturated, level > weights.LEAVE_SATURATED, level >= weights.ENTER_SATURATED
            )
            == is_saturated
        )
        & (rise == 0.0)
        & (trend == 0.0)
    )
    # `_hundredths` of the levels, over the column where it is a division (else `round`)
    with np.errstate(all="ignore"):
        scaled = level * 100.0
        whole = np.rint(scaled)
        exact = (scaled > 0.0) & (scaled < _ROUNDED_BELOW) & (np.abs(scaled - whole) < 0.49)
        hundredths = whole / 100.0
    # -- the records: each column of the fast rows, then one record per row (in C)
    stale_detail = _stale_after(stale_after).detail
    fast = np.flatnonzero(ok)
    slow = list(map(rows.__getitem__, np.flatnonzero(~ok).tolist()))
    picked = fast.tolist()

    def pick(values: Sequence[_T]) -> list[_T]:
        if len(picked) == count:  # every row: the column as it is
            return list(values)
        return list(map(values.__getitem__, picked))

    stale_f = stale[fast]
    live_f = ~stale_f
    saturated_f = is_saturated[fast] & live_f
    code = np.where(stale_f, 2, saturated_f.astype(np.intp))  # _STATES' index
    state_list = list(map(_STATES.__getitem__, code.tolist()))
    weight = np.where(stale_f, weights.NEUTRAL, published[fast])
    weight_list = weight.tolist()
    level_f = level[fast]
    levels_out = _with_none(level_f, stale_f)
    pressure_out = _with_none(pressure[fast], stale_f)
    unlifted_out = _with_none(base[fast], ~(unlifted[fast] & live_f))
    peer_out = _with_none(np.where(level_f > _CAP, _CAP, level_f), stale_f)
    failures_f = pick(failures)
    tiers_f = pick(tiers)
    # the reason: kept while state and weight hold, else `_explain`'s
    before_code = np.fromiter(
        map(_STATE_CODES.get, pick(p_state), repeat(-1)), dtype=np.intp, count=len(picked)
    )
    renew = (before_code != code) | (before[fast] != weight)
    reasons: list[Mapping[str, ReasonValue]] = pick(p_reason)
    renewed = np.flatnonzero(renew & stale_f).tolist()
    _put(
        reasons,
        renewed,
        map(_stale_reason, repeat(stale_detail), map(failures_f.__getitem__, renewed)),
    )
    explained = np.flatnonzero(renew & live_f)
    if len(explained):
        at = fast[explained]
        taken = explained.tolist()
        keys_ = list(
            zip(
                map(state_list.__getitem__, taken),
                map(_BANDS.__getitem__, saturated_f[explained].tolist()),
                _shown(level[at], exact[at], hundredths[at]),
                map(_DRIVERS.__getitem__, driver[at].tolist()),
                map(failures_f.__getitem__, taken),
                map(_TIER_SHARES.__getitem__, map(tiers_f.__getitem__, taken)),
                [
                    None if g == w else g
                    for g, w in zip(goal[at].tolist(), weight[explained].tolist(), strict=True)
                ],
                strict=True,
            )
        )
        found_reasons = list(map(_REASONS.get, keys_))
        for k in [k for k, r in enumerate(found_reasons) if r is None]:
            found_reasons[k] = _remember_reason(keys_[k])
        _put(reasons, taken, cast(list[Mapping[str, ReasonValue]], found_reasons))
    # the view: the previous one while nothing in it changed
    views: list[EndpointView] = pick(p_view)
    picked_endpoints = list(map(endpoints.__getitem__, map(rows.__getitem__, picked)))
    rebuild = (
        np.fromiter(map(_VIEW_WEIGHT, views), dtype=np.int64, count=len(views)) != weight
    ) | np.fromiter(
        map(
            operator.or_,
            map(operator.is_not, map(_VIEW_REASON, views), reasons),
            map(operator.is_not, map(_VIEW_HEALTH, views), repeat(_HEALTHY_VIEW)),
        ),
        dtype=np.bool_,
        count=len(views),
    )
    if not rebuild.all():
        rebuild |= np.fromiter(
            map(
                operator.or_,
                map(operator.ne, map(_REGION, views), map(_REGION, picked_endpoints)),
                map(operator.ne, map(_VERSION, views), map(_VERSION, picked_endpoints)),
            ),
            dtype=np.bool_,
            count=len(views),
        )
    built = np.flatnonzero(rebuild).tolist()
    if built:
        made = list(map(picked_endpoints.__getitem__, built))
        _put(
            views,
            built,
            endpoint_views(
                map(_ADDRESS_OF, made),
                map(_REGION, made),
                map(_VERSION, made),
                map(weight_list.__getitem__, built),
                repeat(_HEALTHY_VIEW),
                map(reasons.__getitem__, built),
                len(built),
            ),
        )
    # the moves: none while stale; held while the weight holds; else one in its direction
    moves_out: list[weights.Moves] = pick(history)
    stale_at = np.flatnonzero(stale_f).tolist()
    _put(moves_out, stale_at, repeat(weights.NO_MOVES, len(stale_at)))
    turned = np.flatnonzero(moving[fast] & live_f)
    if len(turned):
        ways = direction[fast][turned]
        _put(
            moves_out,
            turned.tolist(),
            map(
                tuple.__new__,
                repeat(weights.Moves),
                zip(
                    ways.tolist(),
                    map(_REVERSALS, map(moves_out.__getitem__, turned.tolist())),
                    (saturated_f[turned] & (ways < 0)).tolist(),
                    strict=True,
                ),
            ),
        )
    signals_f = pick(signals)
    records_out: list[EndpointState] = list(
        map(
            tuple.__new__,
            repeat(EndpointState),
            zip(
                state_list,
                levels_out,
                weight_list,
                reasons,
                views,
                pick(waiting_raw),
                pick(scraped),
                pick(growth),
                pressure_out,
                repeat(False),
                moves_out,
                tiers_f,
                unlifted_out,
            ),
        )
    )
    fixed = np.flatnonzero(steady[fast] & live_f).tolist()
    kept: list[Readings | None] = [None] * len(picked)
    _put(kept, fixed, map(readings, map(signals_f.__getitem__, fixed)))
    return _Stepped(list(map(rows.__getitem__, picked)), records_out, kept, peer_out, slow)


def _put(values: list[_T], at: Iterable[int], new: Iterable[_T]) -> None:
    """values[i] = each new value, at each index of `at` in turn."""
    for i, value in zip(at, new):  # noqa: B905 (`new` may be a map)
        values[i] = value


def _shown(level: Floats, exact: Flags, hundredths: Floats) -> list[float]:
    """`_hundredths` of each level: the column's division where it is exact, `round` once
    per distinct other level (a fleet's levels repeat)."""
    shown: list[float] = np.where(exact, hundredths, _NAN).tolist()
    if not exact.all():
        at = np.flatnonzero(~exact)
        distinct, where = np.unique(level[at], return_inverse=True)
        rounded = [round(value, 2) for value in distinct.tolist()]
        _put(shown, at.tolist(), map(rounded.__getitem__, where.tolist()))
    return shown


_BANDS = (weights.FREE, None)  # a healthy row's band (outside `near`), a saturated one's
_ADDRESS_OF = operator.attrgetter("address")
_REVERSALS = operator.attrgetter("reversals")


_T = TypeVar("_T")
_STATES = (HEALTHY, SATURATED, STALE)
_STATE_CODES = {state: code for code, state in enumerate(_STATES)}
_VIEW_WEIGHT = operator.attrgetter("weight")
_VIEW_REASON = operator.attrgetter("reason")
_VIEW_HEALTH = operator.attrgetter("health")
_VERSION = operator.attrgetter("version")


def _with_none(values: Floats, none: Flags) -> list[float | None]:
    """The column as floats, None where `none`."""
    found: list[float | None] = values.tolist()
    if none.any():
        for j in np.flatnonzero(none).tolist():
            found[j] = None
    return found


def _remember_reason(key: _ReasonKey) -> Mapping[str, ReasonValue]:
    """`_explain`'s cached reason for a key it has not seen (or forgot)."""
    reason = _reason(key)
    if len(_REASONS) >= _REASONS_LIMIT:
        _REASONS.clear()
    _REASONS[key] = reason
    return reason


_FAILURES = operator.attrgetter("consecutive_failures")
_RUNNING = operator.attrgetter("running")
_KV = operator.attrgetter("kv_usage")
_SLOTS_OF = operator.attrgetter("slots")
_MAX_NUM_SEQS = operator.attrgetter("max_num_seqs")
_REGION = operator.attrgetter("region")
_RISE = operator.itemgetter(0)
_TREND = operator.itemgetter(1)
_DIRECTION = operator.itemgetter(0)


def _tiers(
    rows: list[int],
    column: SteadyColumn,
    services: Sequence[ServiceState | None],
    known: Sequence[float | None],
    peers: Mapping[str, Peers],
    known_columns: tuple[Floats, Flags] | None,
) -> list[int]:
    """Each moved row's capacity tier after this tick, as `advance`'s loop works it out
    (`_tier` from its known capacity), with the common test, `weights.tier_holds` of the
    known capacity over its region's best, over the rows' columns: only the rows it cannot
    keep compose their previous record and service state."""
    at = np.array(rows, dtype=np.intp)
    carried = column.tiers
    if carried is not None and len(carried) == len(column.states):
        tiers = carried[at]
    else:
        tiers = np.fromiter(
            map(_TIER, map(column.states.__getitem__, rows)), dtype=np.intp, count=len(rows)
        )
    by_region, code = _region_peers(column, peers, at)
    best = np.array([p.best_service if p is not None else 0.0 for p in by_region] + [0.0])
    best = best[code]  # a row in no region (-1) reads the last entry: none
    if known_columns is not None:
        ratio, is_known = known_columns[0][at], known_columns[1][at]
    else:
        ratio, is_known = _floats(list(map(known.__getitem__, rows)))
    with np.errstate(all="ignore"):
        open_ = is_known & (best > 0.0) & ~weights.tiers_hold(ratio / best, tiers)
    result: list[int] = tiers.tolist()
    for i in np.flatnonzero(open_).tolist():
        row = rows[i]
        found = by_region[code[i]] if code[i] >= 0 else None
        result[i] = _tier(services[row], found, result[i], column.state(row))
    return result
