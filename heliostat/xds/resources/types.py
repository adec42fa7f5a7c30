"""The xDS resource types heliostat serves, in make-before-break order."""

from __future__ import annotations

from enum import StrEnum


class TypeUrl(StrEnum):
    CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
    ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    # LEDS: one endpoint per resource, in glob collections a ClusterLoadAssignment's
    # locality names (delta xDS only; see heliostat.xds.translate.leds).
    LB_ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint"

    @property
    def short(self) -> str:
        return _SHORT[self]

    @property
    def wildcard_by_default(self) -> bool:
        """CDS and LDS are subscribed to as a whole; EDS and RDS name their resources."""
        return self in (TypeUrl.CLUSTER, TypeUrl.LISTENER)


_SHORT = {
    TypeUrl.CLUSTER: "CDS",
    TypeUrl.ENDPOINT: "EDS",
    TypeUrl.LISTENER: "LDS",
    TypeUrl.ROUTE: "RDS",
    TypeUrl.LB_ENDPOINT: "LEDS",
}

# Clusters before their endpoints (assignments, then the LEDS endpoints they refer to),
# both before the listeners and routes that point at them,
# so Envoy never routes to a cluster it does not have yet.
PUSH_ORDER: tuple[TypeUrl, ...] = (
    TypeUrl.CLUSTER,
    TypeUrl.ENDPOINT,
    TypeUrl.LB_ENDPOINT,
    TypeUrl.LISTENER,
    TypeUrl.ROUTE,
)


def parse_type_url(value: str) -> TypeUrl | None:
    try:
        return TypeUrl(value)
    except ValueError:
        return None
