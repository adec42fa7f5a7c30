"""Translate a region's view into the Envoy resources of one node group. Pure: no I/O."""

from __future__ import annotations

from google.protobuf.message import Message

from heliostat.balance import RegionView
from heliostat.planning.plan import plan
from heliostat.policy import Policy
from heliostat.xds.cache.nodes import NodeGroup
from heliostat.xds.cache.snapshot import Resource, Snapshot
from heliostat.xds.protocol.types import TypeUrl
from heliostat.xds.translate.clusters import model_cluster
from heliostat.xds.translate.endpoints import assignment_resource
from heliostat.xds.translate.leds import leds_assignment
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
    traffic = plan(policy, view)
    clusters: dict[str, Message] = {}
    assignments: list[Resource] = []  # serialized by endpoints.py from cached parts
    leds_assignments: list[Resource] = []
    leds_endpoints: list[Resource] = []
    members: dict[str, tuple[str, ...]] = {}
    for name, (cluster_view, model) in traffic.clusters.items():
        clusters[name] = model_cluster(cluster_view, model)
        assignments.append(assignment_resource(cluster_view, memo))
        if leds:
            form = leds_assignment(cluster_view, memo)
            leds_assignments.append(form.assignment)
            leds_endpoints.extend(form.endpoints)
            members[name] = tuple(r.name for r in form.endpoints)
    port = group.listener_port or policy.spec.gateway.port
    lua = any((m.affinity and m.affinity.prefix_chars) or m.fallback for m in policy.spec.models)
    listener = gateway_listener(
        policy.spec.gateway.address,
        port,
        lua=bool(lua),
        tenants=traffic.tenants,
        retry_after_s=retry_after([m.signals.interval for m in policy.spec.models]),
    )
    routes = route_configuration(traffic.models, traffic.tenants, group.region)
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
