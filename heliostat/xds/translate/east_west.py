"""The east-west hop: requests one region lends to another are placed by the rescuer's gateway,
by the same in-flight counts as the rescuer's own users.

When the control law lends a share of region A's users to region B, A's gateways used to
list B's replicas inside B's locality and place the lent requests themselves, by their own
in-flight counts: blind to B's own users on the same replicas (a lent key hashed onto the
replica its own traffic was on, and B's replicas held 6-8 requests against 4 slots). As
Istio's east-west gateway does between clusters, a region with east-west addresses
(`spec.regions.<B>.east_west`) is listed in every other region's clusters by those addresses
instead of its replicas: the lender's Envoy still splits by the published share (the
locality's weight is untouched, and the gateways of one locality are alike, so a hashing
cluster's ring share of the locality is exactly the share too), and B's gateway places the
request on its own replicas.

B's gateways serve an east-west listener (its port: the node's `east_west_port` metadata,
else the port of the region's first east-west address) whose routes send each model to the
model's own cluster, the one B's users' routes send to, so Envoy counts lent and local
requests on the same hosts (Envoy keeps in-flight counts per cluster's host: a cluster of
the hop's own, as first built, saw only the lent requests). The routes carry a
`metadata_match` on B's region and the cluster subsets its hosts by region (Envoy's subset
balancer, `clusters.add_region_subsets`; every endpoint carries its region under `envoy.lb`
while any region has east-west addresses, `endpoints.SUBSET_NAMESPACE`): a lent request
reaches B's own replicas only (the selector's NO_FALLBACK: with none listed, a 503, never
another region; no onward lending, so no loops), while B's users' unmatched route falls back
to the whole cluster with its locality weights (`locality_weight_aware`), balanced as without
subsets. Within B's subset the request is hashed with the same key (a ring of its own, whose
bound counts the whole cluster's in-flight requests, so it is looser than the users') or
picked by least request. The hop refuses nothing (the lender's gateway has refused what its
region refuses), adds no origin header (the lender's `x-heliostat-origin-region` travels on:
the replicas charge the cross-region round trip by it), and runs no Lua (the lender derived
the prefix key and applied any fallback).

Demand: the rescuer's gateway reports the lent requests over LRS under its model cluster,
beside its users'; `load_reports` counts them as the rescuer's demand too (the lender has
counted them, at their origin), so `heliostat.xds.grpc.load_reports` takes off what other
regions issued to the rescuer's locality: without that the routing benchmark lost with the
hop on (README, "the east-west hop").

A gateway endpoint's health is its region's best (healthy while one replica is), its weight
1 (the gateways of a region are alike). Version clusters (`<model>@<version>`) keep the
replicas: the east-west routes choose by model only. A region without east-west addresses
is listed as before, and a policy without any builds nothing of the hop (no labels, no
subsets: the same resources). Pure: the addresses come from the policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView, TrafficClass
from heliostat.balance.view import endpoint_view
from heliostat.planning.plan import ModelPlan, Target
from heliostat.policy import Model, Policy
from heliostat.xds.translate.endpoints import REGION_KEY, SUBSET_NAMESPACE
from heliostat.xds.translate.routes import route_configuration

EAST_WEST_ROUTE_CONFIG_NAME = "heliostat_east_west"
EAST_WEST_STAT_PREFIX = "heliostat_east_west"
GATEWAY_STATE = "east_west"
"""The reason state of a gateway endpoint (its EDS metadata code)."""

_REASON = {"state": GATEWAY_STATE}
_BEST = (Health.HEALTHY, Health.DEGRADED, Health.UNHEALTHY, Health.DRAINING)

# Gateway endpoint tuples by (region, addresses, health): a pure function of the key, and
# the same tuple object round after round, so the assignment caches (by identity) and the
# LEDS collections hold. Bounded: it can only be too small, never wrong.
_GATEWAYS: dict[tuple[str, tuple[str, ...], Health], tuple[EndpointView, ...]] = {}
_GATEWAYS_LIMIT = 1 << 12


def east_west_addresses(policy: Policy, region: str | None) -> dict[str, tuple[str, ...]]:
    """The east-west addresses of every region but `region` (whose own gateways are not
    a hop away), for the regions that have some."""
    return {
        name: spec.east_west
        for name, spec in policy.spec.regions.items()
        if spec.east_west and name != region
    }


def east_west_port(policy: Policy, region: str | None, announced: int | None) -> int | None:
    """The port of the node group's east-west listener: the node's own, else the port of
    its region's first east-west address; None: no such listener."""
    if announced is not None:
        return announced
    spec = policy.spec.regions.get(region) if region else None
    if spec is None or not spec.east_west:
        return None
    return int(spec.east_west[0].rpartition(":")[2])


def through_gateways(view: ClusterView, gateways: Mapping[str, tuple[str, ...]]) -> ClusterView:
    """`view` with each locality of a region in `gateways` listing that region's east-west
    gateways instead of its replicas (weights, priorities and reasons as they were); the
    same object when none does."""
    if not gateways:
        return view
    localities: list[LocalityView] = []
    changed = False
    for locality in view.localities:
        addresses = gateways.get(locality.region)
        if addresses and locality.endpoints:
            members = gateway_endpoints(locality.region, addresses, locality.endpoints)
            localities.append(dataclasses.replace(locality, endpoints=members))
            changed = True
        else:
            localities.append(locality)
    return dataclasses.replace(view, localities=tuple(localities)) if changed else view


def gateway_endpoints(
    region: str, addresses: tuple[str, ...], replicas: Sequence[EndpointView]
) -> tuple[EndpointView, ...]:
    """The region's gateways as endpoints: each at weight 1, with the best health of the
    region's `replicas` (a gateway can place a request while one replica can take it)."""
    health = region_health(replicas)
    key = (region, addresses, health)
    found = _GATEWAYS.get(key)
    if found is None:
        found = tuple(endpoint_view(a, region, None, 1, health, _REASON) for a in addresses)
        if len(_GATEWAYS) >= _GATEWAYS_LIMIT:
            _GATEWAYS.clear()
        _GATEWAYS[key] = found
    return found


def region_health(replicas: Sequence[EndpointView]) -> Health:
    """The best health among `replicas` (HEALTHY, then DEGRADED, UNHEALTHY, DRAINING)."""
    present = {e.health for e in replicas}
    return next((h for h in _BEST if h in present), Health.UNHEALTHY)


def serves(view: ClusterView, region: str) -> bool:
    """Whether `region`'s east-west listener routes the model of `view` (the model's
    interactive cluster in the region's view): while the region's own locality lists
    replicas of it."""
    return any(loc.region == region and loc.endpoints for loc in view.localities)


def region_subset(region: str) -> base_pb2.Metadata:
    """The east-west routes' `metadata_match`: the region's own hosts of the cluster."""
    match = base_pb2.Metadata()
    match.filter_metadata[SUBSET_NAMESPACE].update({REGION_KEY: region})
    return match


def east_west_plans(models: Sequence[Model]) -> list[ModelPlan]:
    """Each model's requests, batch or interactive, to its own cluster (named as the model)."""
    return [
        ModelPlan(
            model,
            {
                (None, TrafficClass.BATCH): Target(((model.name, 1),)),
                (None, TrafficClass.INTERACTIVE): Target(((model.name, 1),)),
            },
        )
        for model in models
    ]


def east_west_routes(plans: Sequence[ModelPlan], region: str) -> route_pb2.RouteConfiguration:
    """The east-west listener's routes: by model (header, else body) to its cluster's
    `region` subset, with the model's hash, retries and priority classes, and no origin
    header of its own."""
    return route_configuration(
        plans, (), None, name=EAST_WEST_ROUTE_CONFIG_NAME, subset=region_subset(region)
    )
