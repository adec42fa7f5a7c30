"""Translate a region's view into the Envoy resources of one node group. Pure: no I/O."""

from __future__ import annotations

from google.protobuf.message import Message

from heliostat.balance import RegionView, TrafficClass
from heliostat.policy import Policy
from heliostat.xds.nodes import NodeGroup
from heliostat.xds.snapshot import Snapshot
from heliostat.xds.translate.clusters import model_cluster
from heliostat.xds.translate.endpoints import METADATA_NAMESPACE, load_assignment
from heliostat.xds.translate.listeners import ROUTE_CONFIG_NAME, gateway_listener, listener_name
from heliostat.xds.translate.routes import MODEL_HEADER, ORIGIN_HEADER, route_configuration
from heliostat.xds.types import TypeUrl

__all__ = [
    "METADATA_NAMESPACE",
    "MODEL_HEADER",
    "ORIGIN_HEADER",
    "ROUTE_CONFIG_NAME",
    "build_snapshot",
    "listener_name",
]


def build_snapshot(policy: Policy, view: RegionView, group: NodeGroup) -> Snapshot:
    """The resources of one node group. The snapshot is checked for consistency."""
    clusters: dict[str, Message] = {}
    assignments: dict[str, Message] = {}
    for cluster_view in view.clusters:
        model = policy.model(cluster_view.model)
        if model is None:  # a view always comes from this policy; guard against misuse
            raise ValueError(f"view names model {cluster_view.model!r} the policy lacks")
        clusters[cluster_view.name] = model_cluster(cluster_view, model)
        assignments[cluster_view.name] = load_assignment(cluster_view)
    port = group.listener_port or policy.spec.gateway.port
    listener = gateway_listener(policy.spec.gateway.address, port)
    batch = {c.model: c.name for c in view.clusters if c.traffic_class is TrafficClass.BATCH}
    routes = route_configuration([m.name for m in policy.spec.models], group.region, batch)
    snapshot = Snapshot.from_messages(
        {
            TypeUrl.CLUSTER: clusters,
            TypeUrl.ENDPOINT: assignments,
            TypeUrl.LISTENER: {listener.name: listener},
            TypeUrl.ROUTE: {routes.name: routes},
        }
    )
    snapshot.check_consistency()
    return snapshot
