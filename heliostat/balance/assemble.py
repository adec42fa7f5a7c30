"""A model's two clusters in one region's view: localities, priorities, locality weights.

Priorities come from `priorities.region_priorities` (own region 0, others by RTT, beyond the
budget last, or not at all with `overflow.beyond_budget: never`). Overflow is expressed inside
priority 0: the rescuers of region r are lifted into r's priority 0 and Envoy's
locality-weighted LB splits r's traffic by locality weight, out of LOCALITY_TOTAL:

    r: LOCALITY_TOTAL * (1 - sum of shares),   rescuer q: LOCALITY_TOTAL * share(r -> q)

Shares are published in thousandths, so a weight is exactly the share. An edge region (no
endpoints of the model, or none routable) has no locality of its own in priority 0: its
rescuers share it, and its own dead hosts, if any, come after every region within budget
(regions beyond it stay last). Each locality of priority 0 carries the reason for its
weight (EDS locality metadata).

With locality-weighted LB on, a locality without a weight gets no traffic at all, so every
locality of every view carries one: LOCALITY_TOTAL when alone in its priority. In the neutral
view (nodes of unknown regions: every region at priority 0, no overflow) a locality weighs the
sum of its routable endpoints' weights, which splits traffic as host weights alone would.

Each model gets two clusters with the same localities: the interactive one (named after the
model) and `<model>.batch`; each carries the view's refusal of its class (`refusal`) as a
drop percentage.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from itertools import compress

from heliostat.balance.priorities import region_priorities, within_budget
from heliostat.balance.state import RefusalState, RegionState
from heliostat.balance.view import (
    ClusterView,
    EndpointView,
    Health,
    InFlight,
    LocalityView,
    ReasonValue,
    TrafficClass,
)
from heliostat.policy import BeyondBudget, Model, Policy

LOCALITY_TOTAL = 1000
BATCH_SUFFIX = ".batch"

_ROUTABLE = frozenset({Health.HEALTHY, Health.DEGRADED})
_HEALTH = operator.attrgetter("health")
_WEIGHT = operator.attrgetter("weight")


def clusters(
    policy: Policy,
    model: Model,
    region: str | None,
    endpoints: Mapping[str, Sequence[EndpointView]],
    regions: Mapping[str, RegionState],
    refused: RefusalState,
    in_flight: InFlight | None = None,
    weights: Mapping[str, int] | None = None,
) -> tuple[ClusterView, ClusterView]:
    """The interactive and batch clusters of `model` in the view of `region` (None: neutral);
    `in_flight` says what the interactive cluster's cap was sized from, while it has one;
    `weights`, each region's `routable_weight` of its `endpoints` when the caller keeps
    them (the law does, redoing only the regions whose endpoints changed), for the neutral
    view's localities."""
    if region is None or region not in policy.spec.regions:
        localities = _neutral(policy, model, endpoints, weights)
    else:
        localities = _regional(policy, model, region, endpoints, regions)
    return (
        ClusterView(
            name=model.name,
            model=model.name,
            localities=localities,
            drop_overload_percent=_percent(refused.interactive.published),
            drop_reason=refused.interactive.reason,
            max_requests=refused.in_flight,
            in_flight=in_flight if refused.in_flight is not None else None,
        ),
        ClusterView(
            name=model.name + BATCH_SUFFIX,
            model=model.name,
            localities=localities,
            drop_overload_percent=_percent(refused.batch.published),
            traffic_class=TrafficClass.BATCH,
            drop_reason=refused.batch.reason,
        ),
    )


def _neutral(
    policy: Policy,
    model: Model,
    endpoints: Mapping[str, Sequence[EndpointView]],
    weights: Mapping[str, int] | None = None,
) -> tuple[LocalityView, ...]:
    result = []
    for region in sorted(region_priorities(policy, model, None)):
        members = endpoints.get(region)
        if members:
            known = weights.get(region) if weights is not None else None
            weight = known if known is not None else routable_weight(members)
            result.append(LocalityView(region, 0, tuple(members), max(1, weight)))
    return tuple(result)


def routable_weight(members: Sequence[EndpointView]) -> int:
    """The summed weight of the routable `members` (a neutral locality's weight)."""
    routable = map(_ROUTABLE.__contains__, map(_HEALTH, members))
    return sum(compress(map(_WEIGHT, members), routable))  # in C: every endpoint


def routable_of(view: EndpointView) -> int:
    """What one endpoint adds to `routable_weight`: its weight while routable, else 0."""
    return view.weight if view.health in _ROUTABLE else 0


def _percent(fraction: float) -> float:
    """A refused fraction (thousandths) as Envoy's drop percentage, exactly."""
    return round(fraction * 100.0, 1)


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
    lending = state.lending if state else {}
    shares = {  # nearest first, as they were chosen
        q: lending[q]
        for q in sorted(
            (state.shares if state else {}),
            key=lambda q: (priorities.get(q, len(priorities)), q),
        )
        if q in priorities and endpoints.get(q)
    }
    # Its own locality counts only with a routable endpoint: a region whose replicas are all
    # down is an edge for now. Left in priority 0 beside its rescuers, its dead hosts would
    # lower the priority's health and Envoy would spill the rest onto the next priority.
    home = any(e.health in _ROUTABLE for e in endpoints.get(region, ()))
    rank: dict[str, float] = dict(priorities)
    for q in shares:
        rank[q] = 0
    if not home and shares and region in rank:
        # After every other region within budget: a last resort. Not after the regions
        # beyond it (last_resort), which stay last in every view; its hosts are dead, so
        # Envoy gives its priority no load and spills past it anyway.
        near = set(within_budget(policy, model, region))
        rank[region] = max((priorities[q] for q in priorities if q in near), default=0) + 0.5
    present = sorted(
        (r for r in priorities if endpoints.get(r)), key=lambda r: (rank[r], priorities[r])
    )
    dense = {p: i for i, p in enumerate(sorted({rank[r] for r in present}))}
    lent = {q: max(1, round(LOCALITY_TOTAL * held.published)) for q, held in shares.items()}
    if not home and lent:  # an edge: its rescuers split everything
        total = sum(lent.values())
        lent = {q: max(1, round(LOCALITY_TOTAL * w / total)) for q, w in lent.items()}
    sent = ", ".join(f"{w / LOCALITY_TOTAL:.1%} to {q}" for q, w in lent.items())
    result = []
    for r in present:
        weight = LOCALITY_TOTAL
        reason: dict[str, ReasonValue] = {}
        if r in lent:
            weight = lent[r]
            reason = {"overflow": f"receives {weight / LOCALITY_TOTAL:.1%} of {region}"}
            if shares[r].reason:
                reason["why"] = shares[r].reason
        elif r == region and lent and home:
            weight = max(1, LOCALITY_TOTAL - sum(lent.values()))
            reason = {"overflow": f"sends {sent}"}
        result.append(LocalityView(r, dense[rank[r]], tuple(endpoints[r]), weight, reason))
    return tuple(result)
