"""Translate a region's view into the Envoy resources of one node group. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from heliostat.balance import ClusterView, RegionView
from heliostat.balance.view import LbPolicy, ReasonValue
from heliostat.planning.plan import Derivation, ModelPlan, plan
from heliostat.policy import Model, Policy
from heliostat.xds.resources.nodes import NodeGroup
from heliostat.xds.resources.snapshot import Resource, Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate.affinity import host_count, ring_size
from heliostat.xds.translate.clusters import model_cluster
from heliostat.xds.translate.east_west import (
    EAST_WEST_ROUTE_CONFIG_NAME,
    EAST_WEST_STAT_PREFIX,
    east_west_addresses,
    east_west_plans,
    east_west_port,
    east_west_routes,
    serves,
    through_gateways,
)
from heliostat.xds.translate.endpoints import assignment_resource
from heliostat.xds.translate.leds import endpoint_map, leds_forms
from heliostat.xds.translate.listeners import ROUTE_CONFIG_NAME, gateway_listener, listener_name
from heliostat.xds.translate.memo import TranslationMemo
from heliostat.xds.translate.refusal import retry_after
from heliostat.xds.translate.routes import route_configuration

__all__ = [
    "ROUTE_CONFIG_NAME",
    "TranslationMemo",
    "build_snapshot",
    "listener_name",
]


def build_snapshot(
    policy: Policy,
    view: RegionView,
    group: NodeGroup,
    memo: TranslationMemo | None = None,
    *,
    leds: bool = False,
) -> Snapshot:
    """The resources of one node group. The snapshot is checked for consistency.

    `memo` is what the caller's earlier rounds built (the publisher keeps one and starts a
    new round per publish); without one, everything is built and serialized afresh.

    Besides the view's own clusters, the traffic policy derives per-tenant and per-version
    clusters from them (`plan.py`); routes send each kind of request to its clusters.

    With `leds` the snapshot also carries the LEDS form of every assignment for delta-xDS
    nodes (`leds.py`): one endpoint's change is then one small resource on their wire.

    Other regions with east-west addresses are listed by them (`east_west.py`), and a group
    with an east-west port gets that listener, its routes and its local clusters.
    """
    if memo is None:
        memo = TranslationMemo()
    traffic = plan(policy, view, memo.picks)
    gateways = east_west_addresses(policy, group.region)
    clusters: dict[str, Message] = {}
    assignments: list[Resource] = []  # serialized by endpoints.py from cached parts
    cluster_views: list[ClusterView] = []
    cluster_items = [
        (name, (_listed(cluster_view, traffic.derivations.get(name), gateways), model))
        for name, (cluster_view, model) in traffic.clusters.items()
    ]
    ew_port = east_west_port(policy, group.region, group.east_west_port)
    port = group.listener_port or policy.spec.gateway.port
    # Endpoints carry their region (`envoy.lb`) while any region has east-west addresses:
    # the encoded endpoints are shared by every node group's snapshot.
    memo.label_regions(any(spec.east_west for spec in policy.spec.regions.values()))
    locals_: list[Model] = []  # the models the east-west listener routes
    if ew_port is not None and ew_port != port and group.region is not None:
        listed = dict(cluster_items)
        for model in policy.spec.models:
            own = listed.get(model.name)
            if own is not None and own[1] is model and serves(own[0], group.region):
                locals_.append(model)
    subsetted = {model.name for model in locals_}
    for name, (cluster_view, model) in cluster_items:
        subsets = name in subsetted
        clusters[name] = _reused(
            memo,
            (
                "cluster",
                id(model),
                name,
                _balancing_key(cluster_view),
                cluster_view.max_requests,
                subsets,
            ),
            model,
            lambda: model_cluster(cluster_view, model, region_subsets=subsets),  # noqa: B023
        )
        assignments.append(assignment_resource(cluster_view, memo))
        cluster_views.append(cluster_view)
    lua = any((m.affinity and m.affinity.prefix_chars) or m.fallback for m in policy.spec.models)
    after = retry_after([m.signals.interval for m in policy.spec.models])
    address = policy.spec.gateway.address
    listener = _reused(
        memo,
        ("listener", address, port, bool(lua), tuple(map(id, traffic.tenants)), after),
        traffic.tenants,
        lambda: gateway_listener(
            address, port, lua=bool(lua), tenants=traffic.tenants, retry_after_s=after
        ),
    )
    routes = _reused(
        memo,
        ("routes", group.region, tuple(map(id, traffic.tenants)), _plans_key(traffic.models)),
        (traffic.tenants, [p.model for p in traffic.models]),
        lambda: route_configuration(traffic.models, traffic.tenants, group.region),
    )
    listeners: dict[str, Message] = {listener.name: listener}
    route_configs: dict[str, Message] = {routes.name: routes}
    if locals_ and ew_port is not None:
        ew_listener = _reused(
            memo,
            ("ew-listener", address, ew_port, after),
            None,
            lambda: gateway_listener(
                address,
                ew_port,
                retry_after_s=after,
                route_config=EAST_WEST_ROUTE_CONFIG_NAME,
                stat_prefix=EAST_WEST_STAT_PREFIX,
            ),
        )
        region = group.region
        assert region is not None  # locals_ is empty without one
        ew_routes = _reused(
            memo,
            ("ew-routes", region, tuple(id(m) for m in locals_)),
            locals_,
            lambda: east_west_routes(east_west_plans(locals_), region),
        )
        listeners[ew_listener.name] = ew_listener
        route_configs[ew_routes.name] = ew_routes
    leds_endpoints: Mapping[str, Resource] = {}
    leds_assignments: list[Resource] = []
    members: dict[str, tuple[str, ...]] = {}
    if leds:  # after the plain assignments: their endpoints' bytes are this round's
        forms = leds_forms(cluster_views, memo)
        leds_assignments = [form.assignment for form in forms]
        members = {view.name: form.names for view, form in zip(cluster_views, forms, strict=True)}
        made = endpoint_map(forms, memo.endpoint_maps.get(group.key), memo)
        memo.endpoint_maps.put(group.key, made)
        leds_endpoints = made[1]
    snapshot = Snapshot.from_messages(
        {
            TypeUrl.CLUSTER: clusters,
            TypeUrl.LISTENER: listeners,
            TypeUrl.ROUTE: route_configs,
        },
        resources={TypeUrl.ENDPOINT: assignments},
        serialized=memo.serialized,
        delta=(
            {TypeUrl.ENDPOINT: leds_assignments, TypeUrl.LB_ENDPOINT: leds_endpoints}
            if leds
            else None
        ),
        members=members,
    )
    snapshot.check_consistency()
    return snapshot


M = TypeVar("M", bound=Message)


def _reused(memo: TranslationMemo, key: Hashable, pins: object, build: Callable[[], M]) -> M:
    """The message built for `key` this round or the last (the same object, so the
    snapshot finds it serialized in `memo.serialized`), else `build()`. Keys hold ids of
    policy objects; `pins` keeps those objects alive while the entry lives."""
    hit = memo.messages.get(key)
    if hit is not None:
        message = hit[1]
    else:
        message = build()
        memo.messages.put(key, (pins, message))
    return message  # type: ignore[return-value]


def _reason_key(reason: Mapping[str, ReasonValue]) -> tuple[tuple[str, ReasonValue], ...]:
    return tuple(sorted(reason.items()))


def _balancing_key(view: ClusterView) -> Hashable:
    """What a cluster's load-balancer choice puts in its resource (None: plain), with the
    ring's size for a ring-hash cluster (it follows the endpoint count)."""
    lb = view.balancing
    if lb is None:
        return None
    size = ring_size(host_count(view)) if lb.policy is LbPolicy.RING_HASH else None
    return (lb.policy, lb.hash_balance_factor, size, _reason_key(lb.reason))


def _plans_key(plans: Sequence[ModelPlan]) -> Hashable:
    """Everything of the traffic plan the routes are made of: per model (by identity, a
    policy object) its targets and the fallbacks in effect."""
    return tuple(
        (
            id(p.model),
            tuple(p.targets.items()),
            tuple(
                (tenant, id(f.model), id(f.target), f.share, _reason_key(f.reason))
                for tenant, f in p.fallbacks.items()
            ),
        )
        for p in plans
    )


def _listed(
    view: ClusterView, derivation: Derivation | None, gateways: Mapping[str, tuple[str, ...]]
) -> ClusterView:
    """`view` as the gateway lists it: other regions by their east-west gateways, except in
    a version cluster (`<model>@<version>`), whose east-west routes could not pick it."""
    if derivation is not None and derivation.version is not None:
        return view
    return through_gateways(view, gateways)
