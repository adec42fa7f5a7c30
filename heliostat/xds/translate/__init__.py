"""Translate a region's view into the Envoy resources of one node group. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from heliostat.balance import ClusterView, RegionView
from heliostat.balance.view import LbPolicy, ReasonValue
from heliostat.planning.plan import ModelPlan, plan
from heliostat.policy import Policy
from heliostat.xds.resources.nodes import NodeGroup
from heliostat.xds.resources.snapshot import Resource, Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate.affinity import host_count, ring_size
from heliostat.xds.translate.clusters import model_cluster
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
    """
    if memo is None:
        memo = TranslationMemo()
    traffic = plan(policy, view, memo.picks)
    clusters: dict[str, Message] = {}
    assignments: list[Resource] = []  # serialized by endpoints.py from cached parts
    cluster_views: list[ClusterView] = []
    for name, (cluster_view, model) in traffic.clusters.items():
        clusters[name] = _reused(
            memo,
            ("cluster", id(model), name, _balancing_key(cluster_view), cluster_view.max_requests),
            model,
            lambda: model_cluster(cluster_view, model),  # noqa: B023 (called at once)
        )
        assignments.append(assignment_resource(cluster_view, memo))
        cluster_views.append(cluster_view)
    port = group.listener_port or policy.spec.gateway.port
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
            TypeUrl.LISTENER: {listener.name: listener},
            TypeUrl.ROUTE: {routes.name: routes},
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
