"""Views straight from the policy, before any signal arrives.

Every endpoint gets the same neutral weight and is assumed healthy; only the locality
priorities differ per region. This is what heliostat serves at start-up and whenever it has
no signals, and it is the frame the control law later fills with weights.
"""

from __future__ import annotations

from heliostat.balance.priorities import region_priorities
from heliostat.balance.view import (
    ClusterView,
    EndpointView,
    Health,
    LocalityView,
    RegionView,
    Views,
)
from heliostat.policy import Model, Policy

NEUTRAL_WEIGHT = 100
_STATIC_REASON = {"state": "static", "detail": "no signals yet: neutral weight"}


def static_views(policy: Policy) -> Views:
    by_region = {region: _region_view(policy, region) for region in policy.spec.regions}
    return Views(by_region=by_region, neutral=_region_view(policy, None))


def _region_view(policy: Policy, region: str | None) -> RegionView:
    return RegionView(
        region=region,
        clusters=tuple(_cluster_view(policy, model, region) for model in policy.spec.models),
    )


def _cluster_view(policy: Policy, model: Model, region: str | None) -> ClusterView:
    priorities = region_priorities(policy, model, region)
    localities = []
    for locality_region, priority in sorted(priorities.items(), key=lambda kv: (kv[1], kv[0])):
        endpoints = tuple(
            EndpointView(
                address=e.address,
                region=e.region,
                version=e.version,
                weight=NEUTRAL_WEIGHT,
                health=Health.HEALTHY,
                reason=_STATIC_REASON,
            )
            for e in model.endpoints
            if e.region == locality_region
        )
        if endpoints:
            localities.append(LocalityView(locality_region, priority, endpoints))
    return ClusterView(name=model.name, model=model.name, localities=_dense(localities))


def _dense(localities: list[LocalityView]) -> tuple[LocalityView, ...]:
    """Renumber priorities 0..N without gaps, as Envoy requires (regions may be empty)."""
    ranks = {p: i for i, p in enumerate(sorted({loc.priority for loc in localities}))}
    return tuple(
        LocalityView(loc.region, ranks[loc.priority], loc.endpoints, loc.weight)
        for loc in localities
    )
