"""The control law: policy + signals + previous state + time -> views + new state.

`compute` is called once per tick (signals.interval, 0.5 s to a few seconds). It is pure: no
clocks (time is the `now` argument, in the same wall-clock seconds as `Signal.scraped_at`), no
I/O, no randomness, and every output is built in a sorted or policy-given order, so two
replicas with the same inputs publish byte-identical views. Per model:

1. every endpoint gets its state, health, weight and reason (`endpoints`, `weights`);
2. its live endpoints add up to each region's capacity and load (`saturation`);
3. each region decides its bounded overflow to in-budget neighbours (`overflow`), and each
   share travels from target to Envoy through a dead zone, an EWMA and 5% levels (`shares`);
4. each view decides how much batch traffic to shed (`shedding`);
5. the views are assembled with priorities and locality weights (`assemble`).

The time step dt is `now - previous.now` (the model's signals.interval on the first tick),
clamped to [0, MAX_DT_S] so a stalled loop does not jump the smoothing on its next tick.
"""

from __future__ import annotations

from collections.abc import Mapping

from heliostat.balance import assemble, overflow, shedding, weights
from heliostat.balance.endpoints import step
from heliostat.balance.priorities import within_budget
from heliostat.balance.state import ControlState, EndpointKey, EndpointState, ModelState
from heliostat.balance.view import ClusterView, EndpointView, RegionView, Views
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
        dt = model.signals.interval if previous is None else now - previous.now
        dt = min(max(dt, 0.0), MAX_DT_S)
        before = previous.models.get(model.name) if previous else None
        views_by_region, states, loads = _endpoints(model, signals, previous, now, dt, drained)
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
        model_states[model.name] = ModelState(regions=regions, shed=shed, neutral_shed=neutral_shed)
        for r in region_names:
            per_view[r].extend(
                assemble.clusters(policy, model, r, views_by_region, regions, shed[r].percent)
            )
        per_view[None].extend(
            assemble.clusters(policy, model, None, views_by_region, regions, neutral_shed.percent)
        )
    views = Views(
        by_region={r: RegionView(r, tuple(per_view[r])) for r in region_names},
        neutral=RegionView(None, tuple(per_view[None])),
    )
    return views, ControlState(now=now, endpoints=endpoint_states, models=model_states)


def _endpoints(
    model: Model,
    signals: Mapping[EndpointKey, Signal],
    previous: ControlState | None,
    now: float,
    dt: float,
    drained: frozenset[EndpointKey],
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
    for endpoint in model.endpoints:
        key = (name, endpoint.address)
        state = step(
            endpoint, model, signals.get(key), before.get(key), now, gain, key in drained, static
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
