"""The control law: policy + signals + previous state + time -> views + new state.

`compute` is called once per tick (signals.interval, 0.5 s to a few seconds). It is pure: no
clocks (time is the `now` argument, in the same wall-clock seconds as `Signal.scraped_at`), no
I/O, no randomness, and every output is built in a sorted or policy-given order, so two
replicas with the same inputs publish byte-identical views. Per model:

0. a model with affinity decides whether its clusters hash or balance by least request now,
   from the engines' prefix-cache hit rates (`affinity`);
1. every endpoint gets its state, health, weight and reason (`endpoints`, `weights`);
2. its live endpoints add up to each region's capacity and load (`saturation`);
3. each region decides its bounded overflow to in-budget neighbours (`overflow`), and each
   share travels from target to Envoy through a dead zone, an EWMA and 5% levels (`shares`);
4. each view decides how much batch traffic to shed (`shedding`);
5. the views are assembled with priorities and locality weights (`assemble`);
6. once every model's overflow is known, each model with a fallback decides, per view and
   per tenant, the share of its requests its fallback model serves (`fallback`).

The time step dt is `now - previous.now` (the model's signals.interval on the first tick),
clamped to [0, MAX_DT_S] so a stalled loop does not jump the smoothing on its next tick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from heliostat.balance import affinity, assemble, fallback, overflow, shedding, weights
from heliostat.balance.endpoints import region_peers, step
from heliostat.balance.priorities import within_budget
from heliostat.balance.state import (
    ControlState,
    EndpointKey,
    EndpointState,
    FallbackStates,
    ModelState,
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
from heliostat.signals.record import Signal

MAX_DT_S = 10.0


def compute(
    policy: Policy,
    signals: Mapping[EndpointKey, Signal],
    previous: ControlState | None,
    now: float,
    drained: frozenset[EndpointKey] = frozenset(),
) -> tuple[Views, ControlState]:
    """This tick's views of every region (and the neutral one), and the state to pass next."""
    region_names = sorted(policy.spec.regions)
    per_view: dict[str | None, list[ClusterView]] = {r: [] for r in region_names}
    per_view[None] = []
    endpoint_states: dict[EndpointKey, EndpointState] = {}
    model_states: dict[str, ModelState] = {}
    for model in policy.spec.models:
        dt = _dt(model, previous, now)
        before = previous.models.get(model.name) if previous else None
        chosen = affinity.step(
            model,
            (signals.get((model.name, e.address)) for e in model.endpoints),
            before.affinity if before else None,
            now,
            dt,
        )
        hashing = chosen is not None and chosen.hashing
        views_by_region, states, loads = _endpoints(
            model, signals, previous, now, dt, drained, hashing
        )
        endpoint_states.update(states)
        regions = overflow.step(policy, model, loads, before.regions if before else {}, dt)
        shed = {
            r: shedding.step(
                before.shed.get(r) if before else None,
                [r, *within_budget(policy, model, r)],
                regions,
                dt,
            )
            for r in region_names
        }
        neutral_shed = shedding.step(
            before.neutral_shed if before else None, sorted(regions), regions, dt
        )
        model_states[model.name] = ModelState(
            regions=regions, shed=shed, neutral_shed=neutral_shed, affinity=chosen
        )
        lb = None
        if chosen is not None and model.affinity is not None:
            lb = affinity.balancing(model.affinity, chosen)
        for r in region_names:
            per_view[r].extend(
                _balanced(
                    assemble.clusters(policy, model, r, views_by_region, regions, shed[r].percent),
                    lb,
                )
            )
        per_view[None].extend(
            _balanced(
                assemble.clusters(
                    policy, model, None, views_by_region, regions, neutral_shed.percent
                ),
                lb,
            )
        )
    fallbacks: dict[str | None, list[FallbackView]] = {r: [] for r in per_view}
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
        )
        model_states[model.name] = dataclasses.replace(own, fallback=decided)
        for view_region, scoped in fallbacks.items():
            scoped.extend(_fallback_views(model.name, decided, view_region))
    views = Views(
        by_region={r: RegionView(r, tuple(per_view[r]), tuple(fallbacks[r])) for r in region_names},
        neutral=RegionView(None, tuple(per_view[None]), tuple(fallbacks[None])),
    )
    return views, ControlState(now=now, endpoints=endpoint_states, models=model_states)


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
    signals: Mapping[EndpointKey, Signal],
    previous: ControlState | None,
    now: float,
    dt: float,
    drained: frozenset[EndpointKey],
    hashing: bool,
) -> tuple[
    dict[str, list[EndpointView]], dict[EndpointKey, EndpointState], dict[str, overflow.RegionLoad]
]:
    """Every endpoint's tick; their views by region; each region's live capacity and load."""
    name = model.name
    static = not any((name, e.address) in signals for e in model.endpoints)
    before = previous.endpoints if previous else {}
    gain = weights.alpha(dt)
    by_region: dict[str, list[EndpointView]] = {}
    states: dict[EndpointKey, EndpointState] = {}
    capacity: dict[str, int] = {}
    load: dict[str, float] = {}
    peers = region_peers(model.endpoints, name, before)
    for endpoint in model.endpoints:
        key = (name, endpoint.address)
        state = step(
            endpoint,
            model,
            signals.get(key),
            before.get(key),
            now,
            gain,
            key in drained,
            static,
            hashing,
            peers.get(endpoint.region),
        )
        states[key] = state
        region = endpoint.region
        if region not in by_region:
            by_region[region], capacity[region], load[region] = [], 0, 0.0
        by_region[region].append(state.view)
        if state.pressure is not None:  # live: counts towards the region's capacity
            capacity[region] += 1
            load[region] += state.pressure
    loads = {r: overflow.RegionLoad(capacity[r], load[r]) for r in sorted(capacity)}
    return by_region, states, loads
