"""What the control law remembers from one tick to the next.

The law is a pure function; everything that must persist (smoothed saturation, published weights
and the reasons they were published with, hysteresis flags, overflow shares, refusals,
the last queue depth seen) travels in these immutable records. The caller keeps the last
`ControlState` and hands it back on the next tick; nothing else is needed to resume, so two
heliostat replicas fed the same inputs publish the same views.
"""

from __future__ import annotations

import operator
from collections.abc import ItemsView, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt

from heliostat.balance.affinity import AffinityState
from heliostat.balance.saturation import Growth
from heliostat.balance.view import EndpointView, ReasonValue
from heliostat.balance.weights import NO_MOVES, Moves
from heliostat.policy import Model

EndpointKey = tuple[str, str]
"""(model, address), the key of signals and of drained endpoints."""


class EndpointState(NamedTuple):
    """One endpoint of one model after a tick (a NamedTuple: there are 10,000s per tick, and
    a frozen dataclass costs several times more to build).

    `level` is the EWMA of the endpoint's saturation (None while it has no fresh signal);
    `published` is what Envoy was given and only moves when the weight the level asks for
    leaves the dead band. `reason` is the reason published with that
    weight (without the per-view overflow note) and is kept verbatim while weight and state
    hold, so the resource's content hash does not change. `view` caches the EndpointView so
    an unchanged endpoint costs no allocation in the views.
    """

    state: str
    level: float | None
    published: int
    reason: Mapping[str, ReasonValue]
    view: EndpointView
    # Queue growth bookkeeping: the sample last seen, and the growth it showed.
    waiting: float | None = None
    scraped_at: float | None = None
    growth: Growth = Growth(0.0, 0.0)
    # Demand vs capacity (1.0 = at its thresholds) when the endpoint counts towards its
    # region's capacity (healthy or saturated with a fresh signal); None otherwise.
    pressure: float | None = None
    # Close to saturation (`weights.near`, with hysteresis), and the weight's last moves
    # (`weights.move`: its direction and recent reversals, for the reversal budget).
    near: bool = False
    moves: Moves = NO_MOVES
    # Its capacity tier in its region (`weights.capacity_tier`, from `capacity`).
    tier: int = 0
    # The level without the hard lift while one holds it up (`weights.settle`), else None.
    unlifted: float | None = None


Readings = tuple[object, ...]
"""What an endpoint's tick reads of its sample besides the scrape's time (`endpoints.readings`)."""


@dataclass(frozen=True, slots=True, eq=False)
class SteadyColumn:
    """A model's endpoints after a tick, as columns in its endpoint order: each endpoint's
    record (`states`), the time and queue of the sample it was last ticked with (`scraped`,
    `waiting`), and the readings of that sample where its record is a fixed point of its tick
    (`readings`, None where it moved): while they hold, its tick is that record again with the
    new scrape (`endpoints.advance`).

    Columns, not a record per endpoint per tick: the steady endpoints of a large fleet are
    most of it, and only their scrape's time moves. So a steady endpoint keeps the very record
    it had, and only the `scraped` and `waiting` columns take the new sample: its full record
    (`state`) is composed when someone reads it, not on every tick. `model` is the one they
    were computed under (a new policy starts new columns); `index` finds an address's row.
    Two columns are equal when they say the same: the same records as read, readings and
    regions (not which of them were composed)."""

    model: Model
    readings: tuple[Readings | None, ...]
    states: tuple[EndpointState, ...]
    # The model's regions in order of first appearance, each with its endpoints' indices.
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    scraped: tuple[float | None, ...] = ()
    waiting: tuple[float | None, ...] = ()
    index: Mapping[str, int] = field(default_factory=dict)
    keys: tuple[EndpointKey, ...] = ()  # (model, address) per row
    # Per row, what the endpoint shows its region's peers on the next tick: its level capped
    # at HARD_SATURATION while it is live (healthy or saturated), else None
    # (`endpoints.peer_level`); a steady row keeps its value, so the next tick's `Peers`
    # are sums over this column, not a pass over every record.
    peer_levels: tuple[float | None, ...] = ()
    # Per row, its record's capacity tier (`states[row].tier`) as a column, which `advance`
    # carries from tick to tick and sets only at the rows that moved: the next tick tests
    # the held rows' tiers over it (`endpoints._tiers_moving`) without a pass over their
    # records. None: not kept (read from the records). Derived from `states`, so not
    # compared by `__eq__`.
    tiers: npt.NDArray[np.intp] | None = None
    # The rows that took `step` this tick (`endpoints.advance`), against the column it was
    # advanced from; None: every row was computed afresh (no column to advance from).
    moved: tuple[int, ...] | None = None
    # What the law derived from the records (`law._endpoints`: every row's view and
    # pressure, each region's member tuple and live rows), carried so the next tick redoes
    # only the regions whose rows moved. Derived from `states`: not compared by `__eq__`.
    derived: Any = None
    # Per row, the index of its region in `regions` (which `advance` carries with the
    # regions): the column step reads each row's region's peers through it. Derived from
    # `regions`: not compared by `__eq__`. None: not kept.
    region_codes: npt.NDArray[np.intp] | None = None

    def state(self, row: int) -> EndpointState:
        """The endpoint's record as of this tick: its kept record with this tick's sample."""
        record = self.states[row]
        scraped, waiting = self.scraped[row], self.waiting[row]
        if record.scraped_at == scraped and record.waiting is waiting:
            return record
        return tuple.__new__(EndpointState, (*record[:5], waiting, scraped, *record[7:]))

    def records(self) -> list[EndpointState]:
        """Every endpoint's record as of this tick, in the model's endpoint order."""
        return list(map(self.state, range(len(self.states))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SteadyColumn):
            return NotImplemented
        return (
            self.model == other.model
            and self.readings == other.readings
            and self.regions == other.regions
            and self.index == other.index
            and self.records() == other.records()
        )

    __hash__ = None  # type: ignore[assignment]


class EndpointStates(Mapping[EndpointKey, EndpointState]):
    """Every endpoint's state after a tick, keyed by (model, address): a read-only view over
    the models' columns (`SteadyColumn`), so a tick builds no dict of 10,000s of entries
    and no record for an endpoint that held; a record is composed when it is read."""

    __slots__ = ("_columns",)

    def __init__(self, columns: Mapping[str, SteadyColumn]) -> None:
        self._columns = columns

    def column(self, model: str) -> SteadyColumn | None:
        """The model's columns (None if the model had no endpoints ticked)."""
        return self._columns.get(model)

    def __getitem__(self, key: EndpointKey) -> EndpointState:
        try:
            model, address = key
            column = self._columns[model]
            row = column.index[address]
        except (KeyError, TypeError, ValueError):
            raise KeyError(key) from None
        return column.state(row)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        column = self._columns.get(key[0])
        return column is not None and key[1] in column.index

    def __iter__(self) -> Iterator[EndpointKey]:
        for model, column in self._columns.items():
            for address in column.index:
                yield model, address

    def __len__(self) -> int:
        return sum(len(column.index) for column in self._columns.values())

    def items(self) -> ItemsView[EndpointKey, EndpointState]:
        return _Items(self)

    def rows(self) -> Iterator[tuple[EndpointKey, EndpointState]]:
        """(key, record) for every endpoint, column by column: `items` without a lookup."""
        for model, column in self._columns.items():
            state = column.state
            for address, row in column.index.items():
                yield (model, address), state(row)


def state_changes(
    now: Mapping[EndpointKey, EndpointState], before: Mapping[EndpointKey, EndpointState]
) -> list[tuple[EndpointKey, EndpointState, EndpointState]]:
    """(key, before, now) for every endpoint whose `state` (healthy, stale, ...) differs
    between two ticks, in key order; endpoints only one of them has are left out.

    Runs after every tick (the journal): between the law's columns under one policy it
    compares the kept records row by row, composing only the few that changed (a record's
    `state` is never behind: only its sample's time and queue are)."""
    changes: list[tuple[EndpointKey, EndpointState, EndpointState]] = []
    if isinstance(now, EndpointStates) and isinstance(before, EndpointStates):
        for model, column in now._columns.items():
            old = before.column(model)
            if old is None or old.index is not column.index:
                changes.extend(_changes(column.keys, column.index, now, before))
                continue
            for row, (was, new) in enumerate(zip(old.states, column.states, strict=True)):
                if was.state != new.state:
                    changes.append((column.keys[row], old.state(row), column.state(row)))
    else:
        changes.extend(_changes(now, None, now, before))
    return sorted(changes, key=_KEY)


def _changes(
    keys: Iterable[EndpointKey],
    rows: Mapping[str, int] | None,
    now: Mapping[EndpointKey, EndpointState],
    before: Mapping[EndpointKey, EndpointState],
) -> Iterator[tuple[EndpointKey, EndpointState, EndpointState]]:
    """`state_changes` key by key (`rows`: when given, each address's row, so a key listed
    twice is compared once, as a mapping holds it)."""
    for key in keys:
        if rows is not None and key[1] not in rows:
            continue
        was = before.get(key)
        if was is not None:
            new = now[key]
            if was.state != new.state:
                yield key, was, new


_KEY = operator.itemgetter(0)


class _Items(ItemsView[EndpointKey, EndpointState]):
    """`EndpointStates.items()`: walks the columns (its readers walk every endpoint)."""

    _mapping: EndpointStates

    def __iter__(self) -> Iterator[tuple[EndpointKey, EndpointState]]:
        return self._mapping.rows()

    def __repr__(self) -> str:
        return f"EndpointStates({dict(self)!r})"


@dataclass(frozen=True, slots=True)
class Held:
    """A published fraction (a share, a refusal) with the memory its hysteresis needs.

    `published` is what Envoy has, in thousandths; `target` this tick's goal; `direction`
    the sign of the last move and `moved_at` its time, so a move back the other way can be
    held (see `publish`). `reason` was built when `published` last changed and is kept
    verbatim while it holds: it travels in EDS metadata.
    """

    published: float
    target: float
    direction: int = 0
    moved_at: float = 0.0
    reason: str = ""
    spread: float = 0.0  # how far the target moves from tick to tick (EWMA): its noise
    below: int = 0  # ticks in a row the target was below `published` (capped): release grace


class ServiceState(NamedTuple):
    """One endpoint's service, remembered between ticks (see `capacity`, the one estimator).
    A NamedTuple, like EndpointState: there is one per endpoint per tick."""

    completions: float  # decaying sum (capacity.TAU_S) of the requests it completed
    busy_time: float  # decaying sum of its occupancy x seconds
    window: float  # decaying sum of the seconds observed
    served: float | None  # completions/s over the last scrape interval
    served_total: float | None  # the raw counter last seen
    scraped_at: float | None
    waiting: float | None
    growth: float = 0.0  # queue growth, requests/s, over the last scrape interval
    occupancy: float | None = None  # share of its room in use at the last scrape (1 if queueing)
    seen_full: int = 0  # intervals observed (nearly) full: a throughput seen, not inferred
    busyness: float | None = None  # occupancy: up at once, down smoothly
    level: float | None = None  # occupancy averaged both ways (`capacity.LEVEL_TAU_S`)


# ServiceState's fields that may be None, in the order of its columns' masks.
OPTIONAL_SERVICE = (
    "served",
    "served_total",
    "scraped_at",
    "waiting",
    "occupancy",
    "busyness",
    "level",
)

Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]


class ServiceColumns(Mapping[str, ServiceState]):
    """A model's service states after a tick, held as columns in its endpoint order
    (`capacity.observe_columns` updates them with a few operations over whole arrays), read
    as a mapping from endpoint address to `ServiceState` (composed when read) over the rows
    that have one: what `ModelState.service` was as a dict, without 10,000s of records.

    Each float column of `ServiceState` is one array; a field that may be None has a mask
    beside it (`has[name]`, True where it is set; a NaN is a reading, not a None), and
    `present` says which rows have a state at all. A row without one holds zeros and no
    field set. The arrays are never written after construction (read-only)."""

    __slots__ = (
        "_count",
        "addresses",
        "aligned_to",
        "busy_time",
        "completions",
        "growth",
        "has",
        "index",
        "optional",
        "present",
        "seen_full",
        "window",
    )

    def __init__(
        self,
        addresses: tuple[str, ...],
        index: Mapping[str, int],
        present: Flags,
        completions: Floats,
        busy_time: Floats,
        window: Floats,
        growth: Floats,
        seen_full: npt.NDArray[np.int64],
        optional: Mapping[str, Floats],
        has: Mapping[str, Flags],
        keys: tuple[EndpointKey, ...] | None = None,
    ) -> None:
        self.addresses = addresses  # per row; `index` finds an address's row
        self.index = index
        self.present = present
        self.completions = completions
        self.busy_time = busy_time
        self.window = window
        self.growth = growth
        self.seen_full = seen_full
        self.optional = optional  # OPTIONAL_SERVICE's columns, by name
        self.has = has  # and their masks
        # The law's (model, address) keys the rows were aligned to (`SteadyColumn.keys`):
        # while the next tick's keys are the very same, so are the rows.
        self.aligned_to = keys
        columns: list[npt.NDArray[np.generic]] = [present, completions, busy_time, window]
        columns += [growth, seen_full, *optional.values(), *has.values()]
        for column in columns:
            column.flags.writeable = False
        self._count = int(np.count_nonzero(present))

    def rekeyed(self, keys: tuple[EndpointKey, ...]) -> ServiceColumns:
        """The same columns, aligned to `keys` (the same addresses in the same order)."""
        return ServiceColumns(
            self.addresses,
            self.index,
            self.present,
            self.completions,
            self.busy_time,
            self.window,
            self.growth,
            self.seen_full,
            self.optional,
            self.has,
            keys,
        )

    def row(self, row: int) -> ServiceState | None:
        """The row's state (None: it has none)."""
        if not self.present[row]:
            return None
        optional = [
            self.optional[name].item(row) if self.has[name][row] else None
            for name in OPTIONAL_SERVICE
        ]
        served, served_total, scraped_at, waiting, occupancy, busyness, level = optional
        return tuple.__new__(
            ServiceState,
            (
                self.completions.item(row),
                self.busy_time.item(row),
                self.window.item(row),
                served,
                served_total,
                scraped_at,
                waiting,
                self.growth.item(row),
                occupancy,
                self.seen_full.item(row),
                busyness,
                level,
            ),
        )

    def rows(self, at: npt.NDArray[np.intp] | None = None) -> list[ServiceState | None]:
        """Every row's state (None where it has none), in row order, or those of the rows
        `at`, in their order: column by column, in C (a field set on every row read, as
        they mostly are, is its column as a list)."""

        def read(column: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return column if at is None else column[at]

        def optional(name: str) -> list[Any]:
            values, has = read(self.optional[name]), read(self.has[name])
            if not has.all():
                values = values.astype(object)
                values[~has] = None
            found: list[Any] = values.tolist()
            return found

        columns = (
            read(self.completions).tolist(),
            read(self.busy_time).tolist(),
            read(self.window).tolist(),
            optional("served"),
            optional("served_total"),
            optional("scraped_at"),
            optional("waiting"),
            read(self.growth).tolist(),
            optional("occupancy"),
            read(self.seen_full).tolist(),
            optional("busyness"),
            optional("level"),
        )
        states: list[ServiceState | None] = list(
            map(tuple.__new__, repeat(ServiceState), zip(*columns, strict=True))
        )
        present = read(self.present)
        if not present.all():
            for row in np.flatnonzero(~present).tolist():
                states[row] = None
        return states

    @property
    def count(self) -> int:
        """How many rows have a state."""
        return self._count

    def __getitem__(self, address: str) -> ServiceState:
        row = self.index.get(address)
        state = self.row(row) if row is not None else None
        if state is None:
            raise KeyError(address)
        return state

    def __contains__(self, address: object) -> bool:
        row = self.index.get(address) if isinstance(address, str) else None
        return row is not None and bool(self.present[row])

    def __iter__(self) -> Iterator[str]:
        return compress(self.addresses, self.present.tolist())

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __repr__(self) -> str:
        return f"ServiceColumns({dict(self.items())!r})"


class ServiceRows(Sequence["ServiceState | None"]):
    """A `ServiceColumns`' rows as a sequence (each row's state, None where it has none),
    composed when read: what `endpoints.advance` reads of the rows that move."""

    __slots__ = ("_columns",)

    def __init__(self, columns: ServiceColumns) -> None:
        self._columns = columns

    @overload
    def __getitem__(self, row: int) -> ServiceState | None: ...
    @overload
    def __getitem__(self, row: slice) -> list[ServiceState | None]: ...
    def __getitem__(self, row: int | slice) -> ServiceState | list[ServiceState | None] | None:
        if isinstance(row, slice):
            return self._columns.rows()[row]
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self._columns.row(row)

    def __len__(self) -> int:
        return len(self._columns.addresses)

    def at(self, rows: Sequence[int]) -> list[ServiceState | None]:
        """The states of `rows`, in their order, composed together."""
        return self._columns.rows(np.array(rows, dtype=np.intp)) if rows else []

    def count(self, value: object) -> int:
        if value is None:
            return len(self) - self._columns.count
        return super().count(value)


@dataclass(frozen=True, slots=True)
class RegionState:
    """One region of one model after a tick: its supply, its users' demand, their plan.

    Units are the model's: requests/s when service rates are known (`rates` True), else
    endpoint units (one endpoint at its thresholds carries 1.0).
    """

    capacity: float  # what its live endpoints can serve now (planning capacity)
    load: float  # what arrives at its endpoints now
    demand: float  # its own gateways' demand, smoothed
    overflowing: bool  # some of its users are planned elsewhere or refused
    lending: Mapping[str, Held] = field(default_factory=dict)  # q -> share of its admitted users
    measured: float = 0.0  # this tick's demand before smoothing (what `demand` follows)
    endpoints: int = 0  # live endpoints (fresh signal, healthy or saturated)
    unplaced: float = 0.0  # demand the allocation could place nowhere within budget
    refusable: float = 0.0  # of which its gateways refuse (see `overflow._refusable`)
    full_since: float | None = None  # since when some of its demand is unplaced, unbroken
    plan: Mapping[str, float] = field(default_factory=dict)  # serving region -> demand
    source: str = "none"  # where `measured` came from: "gateways", "engines" or "none"
    backlog: float = 0.0  # requests waiting at its endpoints
    raw_capacity: float = 0.0  # its endpoints' observed service capacity, before planning
    batch: float | None = None  # the batch part of `measured`, when its gateways report it
    rates: bool = False
    late: bool = False  # its backlog is beyond what the SLO tolerates (`overflow.late`)
    free: float = 0.0  # its slots free at this tick (`overflow.Supply.free`; 0: unknown)
    utilisation: float = 0.95  # what its capacity is planned to (`queueing.utilisation`)
    gateways: int = 1  # how many of its gateways (Envoys) reported its demand
    # Its engines' mean prefill time (seconds) and prefix-cache hit rate, as `spill` weighed
    # them (`overflow.Supply`); None: not measured, or the model does not hash prompts.
    prefill: float | None = None
    hit_rate: float | None = None
    # Since when its demand is read from its current source in its current units, once it
    # switched (the estimate restarted; None: it has not since the law began):
    # `overflow.settled`.
    since: float | None = None

    @property
    def pressure(self) -> float | None:
        """Own demand over own capacity; above 1 its GPUs cannot carry its gateways' traffic."""
        return self.demand / self.capacity if self.capacity > 0 else None

    @property
    def shares(self) -> dict[str, float]:
        """The shares Envoy was given: rescuer -> share of this region's admitted traffic."""
        return {q: s.published for q, s in self.lending.items() if s.published > 0}


@dataclass(frozen=True, slots=True)
class RefusalState:
    """What one view's gateways refuse of a model's requests, per class (fractions)."""

    interactive: Held
    batch: Held
    excess: float = 0.0  # demand/s refused by the plan, after the fallback's share
    demand: float = 0.0  # the demand it was refused from
    detail: str = ""
    late: bool = False  # its region's backlog was beyond what the SLO tolerates
    # While it refuses: the interactive requests each of its gateways may have in flight
    # (Envoy's max_requests, `refusal.in_flight`), None when not capped.
    in_flight: int | None = None

    @property
    def active(self) -> bool:
        return self.interactive.published > 0 or self.batch.published > 0


@dataclass(frozen=True, slots=True)
class FallbackState:
    """The fallback share of one scope of one model: a region's view, a tenant, the neutral view.

    `share` is held as an overflow share is (`publish.hold`: the target fed forward, with a
    dead band and no quick reversal); `reason` was built when `published` last
    changed and is kept verbatim while it holds (it travels to Envoy in route metadata, so
    it must not change the routes on every tick). The rest is this tick's decision, for
    /debug/state.
    """

    engaged: bool  # hysteresis flag: the scope's demand reached its thresholds
    demand: float  # smoothed demand of the scope's gateways before the fallback
    share: Held  # its target and what Envoy was told (`publish.hold`)
    reason: Mapping[str, ReasonValue] = field(default_factory=dict)
    state: str = "idle"
    target: float = 0.0
    pressure: float | None = None
    room: float | None = None  # the fallback model's room in the scope (endpoint units)
    rates: bool = False  # `demand` is in requests/s (else endpoint units), as the model's


@dataclass(frozen=True, slots=True)
class FallbackStates:
    """Every scope's fallback share of one model, towards `model`."""

    model: str
    regions: Mapping[str, FallbackState]
    tenants: Mapping[str, FallbackState]
    neutral: FallbackState


@dataclass(frozen=True, slots=True)
class ModelState:
    regions: Mapping[str, RegionState]
    refusals: Mapping[str, RefusalState]  # by view region
    neutral_refusal: RefusalState
    service: Mapping[str, ServiceState] = field(default_factory=dict)  # by endpoint address
    fallback: FallbackStates | None = None  # models with `fallback` only
    affinity: AffinityState | None = None  # models with `affinity` only: hash or not
    steady: SteadyColumn | None = None  # the endpoints at a fixed point (`endpoints.advance`)
    # Per row of `steady`, `capacity.known` of its `service` entry (None: none known yet).
    known: tuple[float | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class ControlState:
    """Everything `compute` needs from the previous tick. Immutable; compare with ==."""

    now: float
    endpoints: Mapping[EndpointKey, EndpointState]
    models: Mapping[str, ModelState]
