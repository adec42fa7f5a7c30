"""A model's two clusters in one region's view: localities, priorities, locality weights.

Priorities come from `priorities.region_priorities` (own region 0, others by RTT, beyond the
budget last, or not at all with `overflow.beyond_budget: never`). Overflow is expressed inside
priority 0: the rescuers of region r are lifted into r's priority 0 and Envoy's
locality-weighted LB splits r's traffic by locality weight, out of LOCALITY_TOTAL:

    r: LOCALITY_TOTAL * (1 - sum of shares),   rescuer q: LOCALITY_TOTAL * share(r -> q)

With locality-weighted LB on, a locality without a weight gets no traffic at all, so every
locality of every view carries one: LOCALITY_TOTAL when alone in its priority. In the neutral
view (nodes of unknown regions: every region at priority 0, no overflow) a locality weighs the
sum of its routable endpoints' weights, which splits traffic as host weights alone would.

Each model gets two clusters with the same localities: the interactive one (named after the
model) and `<model>.batch`, which carries the view's batch drop percentage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from heliostat.balance.priorities import region_priorities
from heliostat.balance.state import RegionState
from heliostat.balance.view import (
    ClusterView,
    EndpointView,
    Health,
    LocalityView,
    TrafficClass,
)
from heliostat.policy import BeyondBudget, Model, Policy

LOCALITY_TOTAL = 1000
BATCH_SUFFIX = ".batch"

_ROUTABLE = frozenset({Health.HEALTHY, Health.DEGRADED})


def clusters(
    policy: Policy,
    model: Model,
    region: str | None,
    endpoints: Mapping[str, Sequence[EndpointView]],
    regions: Mapping[str, RegionState],
    shed_percent: int,
) -> tuple[ClusterView, ClusterView]:
    """The interactive and batch clusters of `model` in the view of `region` (None: neutral)."""
    if region is None or region not in policy.spec.regions:
        localities = _neutral(policy, model, endpoints)
    else:
        localities = _regional(policy, model, region, endpoints, regions)
    return (
        ClusterView(name=model.name, model=model.name, localities=localities),
        ClusterView(
            name=model.name + BATCH_SUFFIX,
            model=model.name,
            localities=localities,
            drop_overload_percent=float(shed_percent),
            traffic_class=TrafficClass.BATCH,
        ),
    )


def _neutral(
    policy: Policy, model: Model, endpoints: Mapping[str, Sequence[EndpointView]]
) -> tuple[LocalityView, ...]:
    result = []
    for region in sorted(region_priorities(policy, model, None)):
        members = endpoints.get(region)
        if members:
            weight = sum(e.weight for e in members if e.health in _ROUTABLE)
            result.append(LocalityView(region, 0, tuple(members), max(1, weight)))
    return tuple(result)


def _regional(
    policy: Policy,
    model: Model,
    region: str,
    endpoints: Mapping[str, Sequence[EndpointView]],
    regions: Mapping[str, RegionState],
) -> tuple[LocalityView, ...]:
    last_resort = model.overflow.beyond_budget is BeyondBudget.LAST_RESORT
    priorities = region_priorities(policy, model, region, beyond_budget=last_resort)
    state = regions.get(region)
    shares = {  # nearest first, as they were chosen
        q: share
        for q, share in sorted(
            (state.shares if state else {}).items(),
            key=lambda kv: (priorities.get(kv[0], len(priorities)), kv[0]),
        )
        if q in priorities and endpoints.get(q) and endpoints.get(region)
    }
    rank = dict(priorities)
    for q in shares:
        rank[q] = 0
    present = sorted(
        (r for r in priorities if endpoints.get(r)), key=lambda r: (rank[r], priorities[r])
    )
    dense = {p: i for i, p in enumerate(sorted({rank[r] for r in present}))}
    lent = {q: max(1, round(LOCALITY_TOTAL * share)) for q, share in shares.items()}
    sent = ", ".join(f"{round(100 * share)}% to {q}" for q, share in shares.items())
    result = []
    for r in present:
        members = tuple(endpoints[r])
        weight = LOCALITY_TOTAL
        if r in lent:
            weight = lent[r]
            members = _noted(members, f"receives {round(100 * shares[r])}% of {region}")
        elif r == region and lent:
            weight = max(1, LOCALITY_TOTAL - sum(lent.values()))
            members = _noted(members, f"sends {sent}")
        result.append(LocalityView(r, dense[rank[r]], members, weight))
    return tuple(result)


def _noted(members: tuple[EndpointView, ...], note: str) -> tuple[EndpointView, ...]:
    """The endpoints with their locality's overflow decision added to their reason."""
    return tuple(
        EndpointView(
            address=e.address,
            region=e.region,
            version=e.version,
            weight=e.weight,
            health=e.health,
            reason={**e.reason, "overflow": note},
        )
        for e in members
    )
