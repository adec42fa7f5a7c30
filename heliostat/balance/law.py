"""The control law: policy + signals + gateway load + previous state + time -> views + state.

`compute` is called once per tick (signals.interval, 0.5 s to a few seconds). It is pure: no
clocks (time is the `now` argument, in the same wall-clock seconds as `Sample.scraped_at`), no
I/O, no randomness, and every output is built in a sorted or policy-given order, so two
replicas with the same inputs publish byte-identical views. Per model:

0. a model with affinity decides whether its clusters hash or balance by least request now,
   from the engines' prefix-cache hit rates (`affinity`);
1. every endpoint gets its state, health, weight and reason (`endpoints`, `weights`), and
   its service rate and capacity (`capacity`);
2. its live endpoints add up to each region's supply (`overflow.Supply`);
3. each origin region's demand (at its gateways, `demand`) is placed over the regions within
   its budget (`overflow`, `allocation`), and the plan is published as shares of each
   region's users, in thousandths with hysteresis (`publish`);
4. once every model's plan is known, each model with a fallback decides, per view and per
   tenant, the share of its requests its fallback model serves (`fallback`);
5. what is left unplaced is refused at the gateways, batch first (`refusal`);
6. the views are assembled with priorities, locality weights and refusals (`assemble`).

`gateways` is what the gateway Envoys reported over LRS (`demand.GatewayLoad`, an immutable
record the caller builds); without it every region's demand comes from its engines.

The time step dt is `now - previous.now` (the model's signals.interval on the first tick),
clamped to [0, MAX_DT_S] so a stalled loop does not jump the smoothing on its next tick.
"""

from __future__ import annotations

import dataclasses
import operator
import statistics
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from heliostat.balance import (
    affinity,
    assemble,
    capacity,
    fallback,
    overflow,
    queueing,
    refusal,
    weights,
)
from heliostat.balance.demand import NO_GATEWAYS, GatewayLoad
from heliostat.balance.endpoints import SampleReads, advance, column_peers, peers_of, sample_reads
from heliostat.balance.state import (
    ControlState,
    EndpointKey,
    EndpointState,
    EndpointStates,
    FallbackStates,
    Flags,
    Floats,
    ModelState,
    RefusalState,
    ServiceColumns,
    ServiceRows,
    ServiceState,
    SteadyColumn,
)
from heliostat.balance.view import (
    Balancing,
    ClusterView,
    EndpointView,
    FallbackView,
    InFlight,
    RegionView,
    Views,
)
from heliostat.policy import Model, Policy
from heliostat.samples import Sample

MAX_DT_S = 10.0
SEEN_FULL = 4  # intervals observed full before a region's capacity is taken as measured


def compute(
    policy: Policy,
    signals: Mapping[EndpointKey, Sample],
    previous: ControlState | None,
    now: float,
    drained: frozenset[EndpointKey] = frozenset(),
    gateways: GatewayLoad = NO_GATEWAYS,
) -> tuple[Views, ControlState]:
    """This tick's views of every region (and the neutral one), and the state to pass next."""
    region_names = sorted(policy.spec.regions)
    endpoint_states: dict[str, SteadyColumn] = {}  # by model: `EndpointStates` reads them
    model_states: dict[str, ModelState] = {}
    endpoint_views: dict[str, dict[str, tuple[EndpointView, ...]]] = {}
    admitting: dict[str, dict[str, refusal.Admits | None]] = {}
    found_by_model: dict[str, list[Sample | None]] = {}
    for model in policy.spec.models:
        dt = _dt(model, previous, now)
        before = previous.models.get(model.name) if previous else None
        # Each endpoint's key and signal, looked up once per tick (in C) for every pass; the
        # keys are the last tick's while the policy's model holds.
        column = _column(model, previous, before)
        keys = column.keys if column is not None else _keys(model)
        found = list(map(signals.get, keys))
        found_by_model[model.name] = found
        chosen = affinity.step(
            model,
            found,
            before.affinity if before else None,
            now,
            dt,
        )
        hashing = chosen is not None and chosen.hashing
        views_by_region, service, supply, rates, steady, known = _endpoints(
            model, keys, found, previous, before, column, gateways, now, dt, drained, hashing
        )
        endpoint_states[model.name] = steady
        endpoint_views[model.name] = views_by_region
        ttft = model.slo.ttft_ms / 1000.0
        admitting[model.name] = {
            r: refusal.admits(r, s.slots, s.raw, ttft, s.rates, s.free, s.estimated)
            for r, s in supply.items()
        }
        refused = {
            r: state.interactive.published
            for r, state in (before.refusals if before else {}).items()
        }
        regions = overflow.step(
            policy,
            model,
            supply,
            rates,
            gateways,
            before.regions if before else {},
            refused,
            dt,
            now,
        )
        chosen = affinity.step_bounds(model, chosen, found, _bound_evidence(supply), now, dt)
        model_states[model.name] = ModelState(
            regions=regions,
            refusals={},
            neutral_refusal=refusal.IDLE,
            service=service,
            affinity=chosen,
            steady=steady,
            known=known,
        )
    fallbacks: dict[str | None, list[FallbackView]] = {r: [] for r in region_names}
    fallbacks[None] = []
    for model in policy.spec.models:
        if model.fallback is None:
            continue
        before = previous.models.get(model.name) if previous else None
        own = model_states[model.name]
        decided = fallback.step(
            policy,
            model,
            own.regions,
            model_states[model.fallback.model].regions,
            before.fallback if before else None,
            _dt(model, previous, now),
            now,
            refusal.admitting_rates(
                own.regions, admitting[model.name], before.refusals if before else {}
            ),
        )
        model_states[model.name] = dataclasses.replace(own, fallback=decided)
        for view_region, scoped in fallbacks.items():
            scoped.extend(_fallback_views(model.name, decided, view_region))
    per_view: dict[str | None, list[ClusterView]] = {r: [] for r in region_names}
    per_view[None] = []
    for model in policy.spec.models:
        before = previous.models.get(model.name) if previous else None
        own = model_states[model.name]
        room = refusal.rooms(policy, model, own.regions, admitting[model.name])
        refusals = {
            r: refusal.step(
                before.refusals.get(r) if before else None,
                own.regions.get(r),
                *_fallback_move(before, own, r),
                now,
                admitting[model.name].get(r),
                room.get(r),
                _fallback_reach(model, own, r),
            )
            for r in region_names
        }
        neutral = refusal.neutral(before.neutral_refusal if before else None, own.regions, now)
        model_states[model.name] = dataclasses.replace(
            own, refusals=refusals, neutral_refusal=neutral
        )
        views_by_region = endpoint_views[model.name]
        chosen_lb = own.affinity
        for r in region_names:
            lb = None
            if chosen_lb is not None and model.affinity is not None:
                plan = own.regions.get(r)
                lends = [q for q, h in plan.lending.items() if h.published > 0.0] if plan else []
                lb = affinity.balancing(model.affinity, chosen_lb, r, lends)
            per_view[r].extend(
                _balanced(
                    assemble.clusters(
                        policy,
                        model,
                        r,
                        views_by_region,
                        own.regions,
                        refusals[r],
                        _in_flight(model, own, found_by_model[model.name], r, refusals[r]),
                    ),
                    lb,
                )
            )
        lb = None
        if chosen_lb is not None and model.affinity is not None:
            lb = affinity.balancing(model.affinity, chosen_lb)
        per_view[None].extend(
            _balanced(
                assemble.clusters(
                    policy,
                    model,
                    None,
                    views_by_region,
                    own.regions,
                    neutral,
                    weights=_routable(own.steady),
                ),
                lb,
            )
        )
    views = Views(
        by_region={r: RegionView(r, tuple(per_view[r]), tuple(fallbacks[r])) for r in region_names},
        neutral=RegionView(None, tuple(per_view[None]), tuple(fallbacks[None])),
    )
    return views, ControlState(
        now=now, endpoints=EndpointStates(endpoint_states), models=model_states
    )


def _bound_evidence(supply: Mapping[str, overflow.Supply]) -> dict[str, affinity.BoundEvidence]:
    """Each region's measurements for its hash bound (`affinity.step_bounds`): its engines'
    prefix-cache hit rate (set while hashing, `_with_prefill`) and a live replica's
    completions per second when full (its observed capacity over its live endpoints)."""
    return {
        r: affinity.BoundEvidence(
            s.hit_rate,
            s.raw / s.endpoints if s.rates and s.endpoints > 0 and s.raw > 0.0 else None,
        )
        for r, s in sorted(supply.items())
    }


def _routable(column: SteadyColumn | None) -> Mapping[str, int] | None:
    """Each region's routable weight as the law derived it with the region's tuple of views
    (`_Derived.routable`), None when it has none."""
    derived = column.derived if column is not None else None
    return derived.routable if isinstance(derived, _Derived) else None


def _in_flight(
    model: Model,
    state: ModelState,
    found: Sequence[Sample | None],
    region: str,
    refused: RefusalState,
) -> InFlight | None:
    """While the region's cap holds (`refusal.in_flight`): its gateways and its own live
    endpoints' slots by version, as `refusal.admits` added them up (the policy's slots,
    else the engine's max_num_seqs), for the clusters derived from its view to split the
    cap (`heliostat.planning.caps`). None while it is not capped."""
    region_state = state.regions.get(region)
    if refused.in_flight is None or region_state is None or state.steady is None:
        return None
    steady = state.steady
    totals: dict[str | None, int] = {}
    for row in dict(steady.regions).get(region, ()):
        record = steady.states[row]
        if record.pressure is None:  # not live: not in the region's supply
            continue
        sample = found[row]
        slots = model.endpoints[row].slots or (sample.max_num_seqs if sample is not None else None)
        if slots:
            version = record.view.version
            totals[version] = totals.get(version, 0) + slots
    ordered = tuple(sorted(totals.items(), key=lambda item: (item[0] is not None, item[0] or "")))
    return InFlight(max(1, region_state.gateways), ordered)


def _fallback_move(
    before: ModelState | None, now: ModelState, region: str
) -> tuple[float, float, float]:
    """The fallback share of the region's users in effect, the one it is going to, and their
    demand before the fallback (0.0 without one): the fallback keeps its place before
    refusal, so refusal only covers what it will not take."""
    if now.fallback is None:
        return 0.0, 0.0, 0.0
    state = now.fallback.regions.get(region)
    if state is None:
        return 0.0, 0.0, 0.0
    old = (
        before.fallback.regions[region].share.published
        if before and before.fallback and region in before.fallback.regions
        else 0.0
    )
    goal = max(state.share.published, state.target if state.engaged else 0.0)
    return old, goal, state.demand


def _fallback_reach(model: Model, now: ModelState, region: str) -> float:
    """The share of the region's users the fallback may still rise to: its largest
    (`fallback.max_fallback`) unless it proved it has no room (`fallback.NO_ROOM`, or no
    spare endpoints), then what it goes to this tick; 0.0 without a fallback."""
    if now.fallback is None:
        return 0.0
    state = now.fallback.regions.get(region)
    if state is None:
        return 0.0
    if state.state == fallback.NO_ROOM or (state.room is not None and state.room <= 0.0):
        return max(state.share.published, state.target if state.engaged else 0.0)
    return fallback.max_fallback(model)


def _balanced(clusters: Iterable[ClusterView], lb: Balancing | None) -> list[ClusterView]:
    """The model's clusters with its load-balancer choice (`affinity`), if it has one."""
    if lb is None:
        return list(clusters)
    return [dataclasses.replace(c, balancing=lb) for c in clusters]


def _dt(model: Model, previous: ControlState | None, now: float) -> float:
    """The model's time step: since the last tick, its interval on the first, at most MAX_DT_S."""
    dt = model.signals.interval if previous is None else now - previous.now
    return min(max(dt, 0.0), MAX_DT_S)


def _fallback_views(model: str, states: FallbackStates, region: str | None) -> list[FallbackView]:
    """The view's own fallback share (its region's, or the neutral one) and every tenant's."""
    own = states.neutral if region is None else states.regions[region]
    views = [FallbackView(model, states.model, own.share.published, None, own.reason)]
    for tenant, state in sorted(states.tenants.items()):
        views.append(FallbackView(model, states.model, state.share.published, tenant, state.reason))
    return views


def _endpoints(
    model: Model,
    keys: Sequence[EndpointKey],
    signals: list[Sample | None],
    previous: ControlState | None,
    before: ModelState | None,
    column: SteadyColumn | None,
    gateways: GatewayLoad,
    now: float,
    dt: float,
    drained: frozenset[EndpointKey],
    hashing: bool,
) -> tuple[
    dict[str, tuple[EndpointView, ...]],
    Mapping[str, ServiceState],
    dict[str, overflow.Supply],
    bool,
    SteadyColumn,
    tuple[float | None, ...],
]:
    """Every endpoint's tick (`keys` and `signals` in the model's endpoint order; `column`:
    the last tick's, if `_column` found it); their views by region; service rates; each
    region's supply; the endpoints' new columns; each row's known capacity (`capacity.known`)."""
    static = not any(signal is not None for signal in signals)  # stops at the first one
    service_before = before.service if before else {}
    gain = weights.alpha(dt)
    priors: Sequence[EndpointState | None]
    if column is not None:  # the last tick's records, as they are: no lookup, no allocation
        priors = column.states
        # and what each showed its peers, kept in a column: sums, not a pass over records
        peers = column_peers(
            column.regions,
            column.peer_levels,
            model.endpoints,
            service_before,
            before.known if before is not None else None,
        )
    else:
        endpoints_before = previous.endpoints if previous else {}
        priors = list(map(endpoints_before.get, keys))
        peers = peers_of(model.endpoints, priors, service_before)
    slots_all: list[int | None]
    observed_all: Sequence[ServiceState | None]
    service: Mapping[str, ServiceState]
    rows: _Rows | None = None
    reads = sample_reads(signals)  # each sample's time and queue, read once for both
    if service_before or _teaches(signals):
        slots_all = _slots(model, reads)
        # One estimator (`capacity`): the region's supply and the endpoint's tier both read
        # it. With success counters it learns from every endpoint of the fleet on every
        # tick: its states are columns (`ServiceColumns`), kept from tick to tick and
        # updated with whole-column operations, as the supply reads them.
        samples = capacity.read_samples(signals, reads.scraped, reads.waiting)
        before_columns = capacity.aligned(service_before, tuple(keys))
        room = capacity.rooms(slots_all)  # for the estimator and the supply alike
        columns = capacity.observe_columns(samples, slots_all, before_columns, dt, room)
        service = columns  # kept while it is down: what it taught still holds
        observed_all = ServiceRows(columns)
        ratio, is_known = capacity.known_columns(columns)
        known = _known_list(ratio, is_known)
        rows = _Rows(columns, samples, slots_all, ratio, is_known, room)
    else:  # `capacity.observe` of every row would be None: nothing learnt, nothing to learn
        slots_all, observed_all, service = [None] * len(keys), [None] * len(keys), {}
        known = [None] * len(keys)
    advanced_from = column
    column = advance(
        model,
        keys,
        signals,
        observed_all,
        priors,
        column,
        now,
        gain,
        drained,
        static,
        hashing,
        peers,
        known,
        (rows.known, rows.is_known) if rows is not None else None,
        reads,
    )
    derived = _derive(column, advanced_from)
    column = dataclasses.replace(column, derived=derived)
    members, live, pressures = derived.members, derived.live, derived.pressures
    supply, rates = _supply(model, live, pressures, rows, derived.at)
    if hashing and rates:
        supply = _with_prefill(supply, live, signals)
    return members, service, supply, rates, column, tuple(known)


class _Derived(NamedTuple):
    """What `_endpoints` reads off a model's records (`SteadyColumn.derived`): every row's
    view and pressure, each region's tuple of views (one tuple per region, shared by every
    view's locality of it and their batch and derived clusters: translation joins a
    locality's endpoints once per tuple, and finds a tuple it joined by its identity) and
    its live rows, in order (those that count towards its supply: a pressure is set)."""

    views: list[EndpointView]
    pressures: list[float | None]
    members: dict[str, tuple[EndpointView, ...]]
    live: dict[str, list[int]]
    at: dict[str, npt.NDArray[np.intp]]  # each region's live rows as an array
    region_of: dict[int, str]  # row -> its region
    # each region's `assemble.routable_weight` of its tuple (the neutral view's locality
    # weight), redone only for a region whose tuple is new
    routable: dict[str, int]


def _derive(column: SteadyColumn, before: SteadyColumn | None) -> _Derived:
    """`_Derived` of the column's records: from `before`'s (the column it was advanced
    from) where it carries them, redoing only what the rows that moved touch; a region
    none of whose views or liveness changed keeps its very tuple and live rows."""
    carried = before.derived if before is not None else None
    moved = column.moved
    if not isinstance(carried, _Derived) or moved is None or before is None:
        return _derive_all(column)
    if not moved:
        return carried
    if len(moved) * _MOST > len(column.states):  # most rows moved: read them all, in C
        return _derive_all(column, carried.region_of)
    return _patched(column, carried, moved)


def _patched(column: SteadyColumn, carried: _Derived, moved: Sequence[int]) -> _Derived:
    """`carried` with the `moved` rows' views and pressures from the column's records, and
    the tuples and live rows of the regions they changed redone."""
    states = column.states
    views, pressures = carried.views.copy(), carried.pressures.copy()
    # each touched region's routable weight moves by what its moved rows' views moved it
    # (integers: the carried sum plus the differences is the sum, exactly)
    touched: dict[str, int] = {}
    relive: set[str] = set()
    region_of = carried.region_of
    routable_of = assemble.routable_of
    for row in moved:
        record = states[row]
        view, pressure = record.view, record.pressure
        old = views[row]
        if view is not old:
            views[row] = view
            region = region_of[row]
            touched[region] = touched.get(region, 0) + routable_of(view) - routable_of(old)
        if (pressure is None) is not (pressures[row] is None):
            relive.add(region_of[row])
        pressures[row] = pressure
    members, live, at, routable = carried.members, carried.live, carried.at, carried.routable
    if touched:
        members, routable = dict(members), dict(routable)
        for region, indices in column.regions:
            if region in touched:
                members[region] = tuple(map(views.__getitem__, indices))
                routable[region] += touched[region]
    if relive:
        live, at = dict(live), dict(at)
        for region, indices in column.regions:
            if region in relive:
                _set_live(live, at, region, indices, pressures)
    return _Derived(views, pressures, members, live, at, region_of, routable)


def _derive_all(column: SteadyColumn, region_of: dict[int, str] | None = None) -> _Derived:
    """`_Derived` read off every record (`region_of`: each row's region, when known)."""
    views = list(map(_VIEW, column.states))
    pressures = list(map(_PRESSURE, column.states))
    members: dict[str, tuple[EndpointView, ...]] = {}
    live: dict[str, list[int]] = {}  # rows, in order
    at: dict[str, npt.NDArray[np.intp]] = {}
    if region_of is None:
        region_of = {}
        for region, indices in column.regions:
            region_of.update(zip(indices, repeat(region)))
    routable: dict[str, int] = {}
    for region, indices in column.regions:
        members[region] = tuple(map(views.__getitem__, indices))
        routable[region] = assemble.routable_weight(members[region])
        _set_live(live, at, region, indices, pressures)
    return _Derived(views, pressures, members, live, at, region_of, routable)


# Beyond one row in _MOST moving, the derivation reads every record (C passes) rather than
# patching the moved rows one by one (a Python loop).
_MOST = 4


def _set_live(
    live: dict[str, list[int]],
    at: dict[str, npt.NDArray[np.intp]],
    region: str,
    indices: Sequence[int],
    pressures: Sequence[float | None],
) -> None:
    """The region's live rows (a pressure is set), in order; none: the region is left out."""
    counted = list(
        compress(indices, map(is_not, map(pressures.__getitem__, indices), repeat(None)))
    )
    if counted:
        live[region] = counted
        at[region] = np.array(counted, dtype=np.intp)
    else:
        live.pop(region, None)
        at.pop(region, None)


def _with_prefill(
    supply: dict[str, overflow.Supply],
    live: Mapping[str, list[int]],
    signals: Sequence[Sample | None],
) -> dict[str, overflow.Supply]:
    """Each region's supply with its engines' mean prefill time and prefix-cache hit rate
    (`Supply.prefill`, `hit_rate`): over its live endpoints that report them, each weighted
    by what it completes (a region's requests are prefilled where they are served; 1 where
    unknown). Only for a model whose prompts are hashed to replicas by prefix: there the
    caches, and the prefill, differ by region; elsewhere every prompt is prefilled alike."""
    result = dict(supply)
    for region, rows in live.items():
        prefill = hits = weight = hit_weight = 0.0
        for row in rows:
            signal = signals[row]
            if signal is None:
                continue
            served = signal.served_rate
            w = served if served is not None and served > 0.0 else 1.0
            if signal.prefill_s is not None:
                prefill += w * signal.prefill_s
                weight += w
            if signal.prefix_hit_rate is not None:
                hits += w * signal.prefix_hit_rate
                hit_weight += w
        if weight > 0.0 or hit_weight > 0.0:
            result[region] = dataclasses.replace(
                supply[region],
                prefill=prefill / weight if weight > 0.0 else None,
                hit_rate=hits / hit_weight if hit_weight > 0.0 else None,
            )
    return result


def _slots(model: Model, reads: SampleReads) -> list[int | None]:
    """Each row's slots: its endpoint's, else its sample's `max_num_seqs` (None without
    a sample); read in C when no endpoint of the model sets its own."""
    if not any(map(_SLOTS, model.endpoints)):
        return list(map(_MAX_NUM_SEQS, reads.present))
    return [
        e.slots or getattr(s, "max_num_seqs", None)
        for e, s in zip(model.endpoints, reads.present, strict=True)
    ]


_SLOTS = operator.attrgetter("slots")
_MAX_NUM_SEQS = operator.attrgetter("max_num_seqs")


def _teaches(signals: Sequence[Sample | None]) -> bool:
    """Whether some sample counts its engine's completions: only those teach a service rate
    (`capacity.observe`). Read in C (`getattr` with a default reads None off a missing
    sample), as it runs over every endpoint of the fleet on every tick."""
    for field in ("served_total", "served_rate"):
        values = map(getattr, signals, repeat(field), repeat(None))
        if any(map(is_not, values, repeat(None))):
            return True
    return False


def _keys(model: Model) -> tuple[EndpointKey, ...]:
    return tuple((model.name, e.address) for e in model.endpoints)


def _column(
    model: Model, previous: ControlState | None, before: ModelState | None
) -> SteadyColumn | None:
    """The model's columns from the last tick, when they are its previous states as the
    caller handed them back (the same policy model, and `previous.endpoints` reads them)."""
    column = before.steady if before is not None else None
    if column is None or previous is None or column.model is not model:
        return None
    endpoints = previous.endpoints
    if not isinstance(endpoints, EndpointStates) or endpoints.column(model.name) is not column:
        return None
    return column


_ADDRESS = operator.itemgetter(1)
_VIEW = operator.attrgetter("view")
_PRESSURE = operator.attrgetter("pressure")


def _waiting(signal: Sample | None) -> float:
    return (signal.waiting or 0.0) if signal is not None else 0.0


class _Rows(NamedTuple):
    """The model's endpoints as their regions' supply sees them, as columns by row: the
    estimator's states and the samples' readings as it keeps them, each row's slots, and
    its `capacity.known` (the ratio, where `is_known`) and its slots as floats (`room`)."""

    service: ServiceColumns
    samples: capacity.SampleColumns
    slots: Sequence[int | None]
    known: Floats
    is_known: Flags
    room: Floats  # `capacity.rooms(slots)`


def _known_list(ratio: Floats, is_known: Flags) -> list[float | None]:
    """Each row's `capacity.known` as a list (None where unknown), for the endpoints' tiers
    and the next tick's peers."""
    known: list[float | None] = list(ratio.tolist())
    if not is_known.all():
        for row in np.flatnonzero(~is_known).tolist():
            known[row] = None
    return known


def _supply(
    model: Model,
    live: Mapping[str, list[int]],
    pressures: Sequence[float | None],
    rows: _Rows | None,
    arrays: Mapping[str, npt.NDArray[np.intp]] | None = None,
) -> tuple[dict[str, overflow.Supply], bool]:
    """Each region's supply, in requests/s once some live endpoint's capacity is known
    (rates mode, the second value), else in endpoint units (`live`: each region's live
    endpoints, rows of `pressures` and `rows`, `arrays` the same as arrays when kept;
    `rows` None: no service state at all)."""
    # Every endpoint of the model that was ever observed informs the prior (the same model on
    # the same kind of replica): one that died still says what a slot serves. (The rows'
    # services are the model's `service`, in row order: its addresses are distinct.)
    if rows is None or not rows.is_known.any():
        return {r: _unit_supply(live[r], pressures) for r in sorted(live)}, False
    known = rows.known[rows.is_known]
    room = rows.room
    prior = _per_slot_prior(rows.known, rows.is_known, room)
    at = arrays if arrays is not None else {r: np.array(m, dtype=np.intp) for r, m in live.items()}
    eligible = rows.is_known | (room != 0.0) if prior is not None else rows.is_known
    if not any(eligible[members].any() for members in at.values()):
        return {r: _unit_supply(live[r], pressures) for r in sorted(live)}, False
    mean = sum(known.tolist()) / len(known)  # `sum` as before: in row order
    ttft = model.slo.ttft_ms / 1000.0
    drain = overflow.drain_time(ttft)
    pressure = _pressure_column(pressures)
    terms = _terms(rows, pressure, room, prior, mean)
    return {
        r: _rate_supply(_column_totals(live[r], at[r], terms, rows.slots), ttft, drain)
        for r in sorted(live)
    }, True


def _pressure_column(pressures: Sequence[float | None]) -> Floats:
    """Each row's pressure as a column, read in one pass in C: numpy reads a row that is not
    live (None) as nan, which no term reads (`_terms` is read only at live rows)."""
    return np.fromiter(pressures, dtype=np.float64, count=len(pressures))


def _per_slot_prior(known: Floats, is_known: Flags, room: Floats) -> float | None:
    """`capacity.per_slot_prior` over the columns: the median of known / slots where both
    are (statistics.median's pick, or the mean of the two middle values, here found by a
    partition: equal values are the same float, as neither 0.0 nor -0.0 is a known
    capacity; with a NaN among them statistics.median itself, whose order NaN makes
    arbitrary)."""
    chosen = is_known & (room != 0.0)
    if not chosen.any():
        return None
    with np.errstate(all="ignore"):
        values = known[chosen] / room[chosen]
    if np.isnan(values).any():
        return float(statistics.median(values.tolist()))
    middle = len(values) // 2
    if len(values) % 2 == 1:
        return float(np.partition(values, middle)[middle])
    low, high = np.partition(values, (middle - 1, middle))[middle - 1 : middle + 1].tolist()
    return float((low + high) / 2)


class _Terms(NamedTuple):
    """What each row adds to its region's sums in `rate_totals`, as columns."""

    used: Floats
    level: Floats
    own: Floats
    arriving: Floats
    backlog: Floats
    seen_full: Flags
    free: Floats  # slots free now: its room less its occupancy at the last scrape (0: unknown)
    estimated: Flags  # its capacity is the prior, not yet observed


def _terms(
    rows: _Rows,
    pressure: Floats,
    room: Floats,
    prior: float | None,
    mean: float,
) -> _Terms:
    """Each row's terms of `rate_totals` (read only at live rows, whose pressure is set)."""
    service, samples = rows.service, rows.samples
    values, has, present = service.optional, service.has, service.present
    with np.errstate(all="ignore"):
        capped = np.where(pressure < 1.0, pressure, 1.0)  # `min(1.0, pressure)`, nan too
        used = np.where(present & has["busyness"], values["busyness"], capped)
        level = np.where(present & has["level"], values["level"], capped)
        if prior is None:
            unknown = np.full(len(room), mean)
        else:
            unknown = np.where(room != 0.0, prior * room, mean)
        own = np.where(rows.is_known, rows.known, unknown)
        rate = values["served"] + service.growth  # `capacity.arrivals`
        arrivals = np.where(rate > 0.0, rate, 0.0)
        arriving = np.where(present & has["served"], arrivals, pressure * own)
        waiting = samples.waiting  # `_waiting`: `waiting or 0.0` (-0.0 is falsy, nan is not)
        backlog = np.where(samples.has_waiting & (waiting != 0.0), waiting, 0.0)
        free = np.where(
            present & has["occupancy"] & (room != 0.0), room * (1.0 - values["occupancy"]), 0.0
        )
    seen_full = present & (service.seen_full >= SEEN_FULL)
    return _Terms(used, level, own, arriving, backlog, seen_full, free, ~rows.is_known)


class _Totals(NamedTuple):
    """A region's live endpoints added up (`rate_totals`)."""

    endpoints: int
    raw: float
    load: float
    backlog: float
    used: float
    level: float
    seen_full: bool
    slots: int | None
    free: float  # slots free now (`_Terms.free`)
    estimated: bool  # some endpoint's capacity is the prior


def _column_totals(
    members: list[int], at: npt.NDArray[np.intp], terms: _Terms, slots: Sequence[int | None]
) -> _Totals:
    """`rate_totals` over the columns (`at`: `members` as an array): each sum in row order
    (`_ordered_sum`), to the bit."""
    rooms = list(map(slots.__getitem__, members))
    return _Totals(
        len(members),
        _ordered_sum(terms.own[at]),
        _ordered_sum(terms.arriving[at]),
        _ordered_sum(terms.backlog[at]),
        _ordered_sum(terms.used[at]),
        _ordered_sum(terms.level[at]),
        bool(terms.seen_full[at].all()),
        sum(cast(list[int], rooms)) if all(rooms) else None,
        _ordered_sum(terms.free[at]),
        bool(terms.estimated[at].any()),
    )


def _ordered_sum(values: Floats) -> float:
    """`total = 0.0; total += v` for each value in order, to the bit: `cumsum` adds in order
    (`sum` and numpy's reductions do not: compensated in Python 3.12, pairwise in numpy);
    its first partial sum is the first value itself, so a -0.0 there stays -0.0 where
    0.0 + -0.0 is 0.0, which adding 0.0 at the end gives back (a sum from 0.0 is never
    -0.0)."""
    if not len(values):
        return 0.0
    with np.errstate(all="ignore"):  # inf - inf is nan, as in the loop, silently
        return float(np.cumsum(values)[-1]) + 0.0


def rate_totals(
    members: Sequence[int],
    pressures: Sequence[float | None],
    services: Sequence[ServiceState | None],
    slots: Sequence[int | None],
    signals: Sequence[Sample | None],
    known: Sequence[float | None],
    prior: float | None,
    mean: float,
) -> _Totals:
    """A region's live endpoints (`members`, rows of the other columns) added up, row by row:
    the specification of `_column_totals` (a property test holds them together)."""
    raw = load = backlog = used = level = free = 0.0
    seen_full, estimated = True, False
    total: int | None = 0
    for row in members:
        pressure, observed, room, own = pressures[row], services[row], slots[row], known[row]
        assert pressure is not None  # a live row
        total = total + room if total is not None and room else None
        seen_full = seen_full and observed is not None and observed.seen_full >= SEEN_FULL
        if observed is not None and observed.busyness is not None:
            used += observed.busyness
        else:  # no slot count: its pressure against the thresholds says as much
            used += min(1.0, pressure)
        if observed is not None and observed.level is not None:
            level += observed.level
        else:
            level += min(1.0, pressure)
        if observed is not None and observed.occupancy is not None and room:
            free += room * (1.0 - observed.occupancy)
        if own is None:
            estimated = True
            own = prior * room if prior is not None and room else mean
        raw += own
        arriving = capacity.arrivals(observed) if observed is not None else None
        load += arriving if arriving is not None else pressure * own
        backlog += _waiting(signals[row])
    return _Totals(len(members), raw, load, backlog, used, level, seen_full, total, free, estimated)


def _unit_supply(members: list[int], pressures: Sequence[float | None]) -> overflow.Supply:
    """A region's supply in endpoint units: each live endpoint carries 1.0 at its thresholds."""
    load = sum(cast(list[float], list(map(pressures.__getitem__, members))))
    count = float(len(members))
    return overflow.Supply(len(members), count, count, load, occupancy=min(1.0, load / count))


def _rate_supply(totals: _Totals, ttft: float, drain: float) -> overflow.Supply:
    """A region's supply in requests/s: what its endpoints serve when full (the prior for one
    not yet observed), what arrives at them, their backlog and how busy they are."""
    count, raw, load, backlog, used, level, seen_full, slots, free, estimated = totals
    # Planned to what its slots carry with waits the SLO tolerates; what its own users bring
    # beyond it, up to the level that serves the most of them within the SLO, it still
    # admits when no neighbour has room (`queueing`). Late there means a wait past the TTFT
    # itself (prefill is short beside it): this level errs towards admitting, as refusing
    # costs goodput for sure (with three quarters of the TTFT the planet's flash crowd,
    # request by request, refused 29% and met the SLO for 69.6%, with all of it 27%, 71.7%).
    ceiling = queueing.utilisation(slots, raw, overflow.QUEUE_SHARE * ttft, overflow.UTILISATION)
    admit = queueing.admission(slots, raw, ttft, overflow.UTILISATION)
    return overflow.Supply(
        count,
        overflow.planning_capacity(raw, backlog, ttft, drain, ceiling),
        raw,
        load,
        backlog,
        used / count,
        rates=True,
        measured_full=seen_full,
        utilisation=ceiling,
        strain=max(0.0, admit - ceiling) * raw,
        level=level / count,
        slots=slots or None,
        free=free,
        estimated=estimated,
    )
