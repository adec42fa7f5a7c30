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
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import NamedTuple, cast

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
from heliostat.balance.endpoints import advance, column_peers, peers_of
from heliostat.balance.state import (
    ControlState,
    EndpointKey,
    EndpointState,
    EndpointStates,
    FallbackStates,
    ModelState,
    ServiceState,
    SteadyColumn,
)
from heliostat.balance.view import (
    Balancing,
    ClusterView,
    EndpointView,
    FallbackView,
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
    for model in policy.spec.models:
        dt = _dt(model, previous, now)
        before = previous.models.get(model.name) if previous else None
        # Each endpoint's key and signal, looked up once per tick (in C) for every pass; the
        # keys are the last tick's while the policy's model holds.
        column = _column(model, previous, before)
        keys = column.keys if column is not None else _keys(model)
        found = list(map(signals.get, keys))
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
            r: refusal.admits(r, s.slots, s.raw, ttft, s.rates) for r, s in supply.items()
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
        lb = None
        if own.affinity is not None and model.affinity is not None:
            lb = affinity.balancing(model.affinity, own.affinity)
        for r in region_names:
            per_view[r].extend(
                _balanced(
                    assemble.clusters(policy, model, r, views_by_region, own.regions, refusals[r]),
                    lb,
                )
            )
        per_view[None].extend(
            _balanced(
                assemble.clusters(policy, model, None, views_by_region, own.regions, neutral),
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
    dict[str, ServiceState],
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
    addresses = list(map(_ADDRESS, keys))
    slots_all: list[int | None]
    observed_all: list[ServiceState | None]
    service: dict[str, ServiceState]
    if service_before or _teaches(signals):
        slots_all = [
            e.slots or (s.max_num_seqs if s is not None else None)
            for e, s in zip(model.endpoints, signals, strict=True)
        ]
        # One estimator (`capacity`): the region's supply and the endpoint's tier both read
        # it. (`observe` of every row in one loop: with success counters this runs over
        # every endpoint of the fleet on every tick.)
        observed_all = capacity.observe_all(
            signals, slots_all, map(service_before.get, addresses), dt
        )
        # kept while it is down: what it taught still holds (in C: this runs over every row)
        present = map(is_not, observed_all, repeat(None))
        kept = compress(zip(addresses, observed_all, strict=True), present)
        service = cast(dict[str, ServiceState], dict(kept))
    else:  # `capacity.observe` of every row would be None: nothing learnt, nothing to learn
        slots_all, observed_all, service = [None] * len(keys), [None] * len(keys), {}
    known = _known(observed_all, service)
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
    )
    views = list(map(_VIEW, column.states))
    pressures = list(map(_PRESSURE, column.states))
    # One tuple per region, shared by every view's locality of it (and their batch and
    # derived clusters): translation joins a locality's endpoints once per tuple.
    members: dict[str, tuple[EndpointView, ...]] = {}
    live: dict[str, list[int]] = {}  # rows, in order
    for region, indices in column.regions:
        members[region] = tuple(map(views.__getitem__, indices))
        # live: counts towards its supply
        counted = list(
            compress(indices, map(is_not, map(pressures.__getitem__, indices), repeat(None)))
        )
        if counted:
            live[region] = counted
    rows = _Rows(pressures, observed_all, slots_all, signals, known)
    supply, rates = _supply(model, live, rows)
    return members, service, supply, rates, column, tuple(known)


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
    """The model's endpoints as their regions' supply sees them, as columns by row (read only
    at the rows of live endpoints, whose pressure is set): no record per live endpoint."""

    pressure: Sequence[float]
    service: Sequence[ServiceState | None]
    slots: Sequence[int | None]
    signal: Sequence[Sample | None]
    known: Sequence[float | None]  # `capacity.known` of each row's service, worked out once


def _known(
    observed: Sequence[ServiceState | None], service: Mapping[str, ServiceState]
) -> Sequence[float | None]:
    """Each row's `capacity.known`, once per tick (the supply reads it several times over);
    none to work out when no endpoint was ever observed."""
    if not service:
        return [None] * len(observed)
    return list(map(capacity.known, observed))


def _supply(
    model: Model,
    live: Mapping[str, list[int]],
    rows: _Rows,
) -> tuple[dict[str, overflow.Supply], bool]:
    """Each region's supply, in requests/s once some live endpoint's capacity is known
    (rates mode, the second value), else in endpoint units (`live`: each region's live
    endpoints, rows of `rows`)."""
    # Every endpoint of the model that was ever observed informs the prior (the same model on
    # the same kind of replica): one that died still says what a slot serves. (The rows'
    # services are the model's `service`, in row order: its addresses are distinct.)
    known = [k for k in rows.known if k is not None]
    prior = None
    if known:
        prior = capacity.per_slot_prior(rows.known, rows.slots)
    rates = bool(known) and any(
        rows.known[i] is not None or (prior is not None and rows.slots[i])
        for members in live.values()
        for i in members
    )
    if not rates:
        return {r: _unit_supply(live[r], rows.pressure) for r in sorted(live)}, False
    mean = sum(known) / len(known)
    ttft = model.slo.ttft_ms / 1000.0
    drain = overflow.drain_time(ttft)
    return {r: _rate_supply(live[r], rows, prior, mean, ttft, drain) for r in sorted(live)}, True


def _unit_supply(members: list[int], pressures: Sequence[float]) -> overflow.Supply:
    """A region's supply in endpoint units: each live endpoint carries 1.0 at its thresholds."""
    load = sum(map(pressures.__getitem__, members))
    count = float(len(members))
    return overflow.Supply(len(members), count, count, load, occupancy=min(1.0, load / count))


def _rate_supply(
    members: list[int], rows: _Rows, prior: float | None, mean: float, ttft: float, drain: float
) -> overflow.Supply:
    """A region's supply in requests/s: what its endpoints serve when full (the prior for one
    not yet observed), what arrives at them, their backlog and how busy they are."""
    raw = load = backlog = used = level = 0.0
    seen_full = True
    slots: int | None = 0
    # The members' rows of each column, gathered in C; sums in row order as before.
    gathered = zip(
        map(rows.pressure.__getitem__, members),
        map(rows.service.__getitem__, members),
        map(rows.slots.__getitem__, members),
        map(rows.signal.__getitem__, members),
        map(rows.known.__getitem__, members),
        strict=True,
    )
    for pressure, observed, room, signal, own in gathered:
        slots = slots + room if slots is not None and room else None
        seen_full = seen_full and observed is not None and observed.seen_full >= SEEN_FULL
        if observed is not None and observed.busyness is not None:
            used += observed.busyness
        else:  # no slot count: its pressure against the thresholds says as much
            used += min(1.0, pressure)
        if observed is not None and observed.level is not None:
            level += observed.level
        else:
            level += min(1.0, pressure)
        if own is None:
            own = prior * room if prior is not None and room else mean
        raw += own
        arriving = capacity.arrivals(observed) if observed is not None else None
        load += arriving if arriving is not None else pressure * own
        backlog += _waiting(signal)
    # Planned to what its slots carry with waits the SLO tolerates; what its own users bring
    # beyond it, up to the level that serves the most of them within the SLO, it still
    # admits when no neighbour has room (`queueing`). Late there means a wait past the TTFT
    # itself (prefill is short beside it): this level errs towards admitting, as refusing
    # costs goodput for sure (with three quarters of the TTFT the planet's flash crowd,
    # request by request, refused 29% and met the SLO for 69.6%, with all of it 27%, 71.7%).
    ceiling = queueing.utilisation(slots, raw, overflow.QUEUE_SHARE * ttft, overflow.UTILISATION)
    admit = queueing.admission(slots, raw, ttft, overflow.UTILISATION)
    return overflow.Supply(
        len(members),
        overflow.planning_capacity(raw, backlog, ttft, drain, ceiling),
        raw,
        load,
        backlog,
        used / len(members),
        rates=True,
        measured_full=seen_full,
        utilisation=ceiling,
        strain=max(0.0, admit - ceiling) * raw,
        level=level / len(members),
        slots=slots or None,
    )
