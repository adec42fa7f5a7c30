"""ClusterLoadAssignments: a view's localities, priorities, weights and health for Envoy."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.xds.memo import RoundMemo

METADATA_NAMESPACE = "heliostat"

_HEALTH = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.DEGRADED: health_check_pb2.DEGRADED,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
}


def load_assignment(view: ClusterView) -> endpoint_pb2.ClusterLoadAssignment:
    # Envoy 1.40 hands an EDS update to its workers only when hosts, locality weights or the
    # overprovisioning factor change: a new drop_overloads alone stays on the main thread
    # (config_dump shows it, requests never see it). Scaling every locality weight by
    # (100 + percent) keeps the split identical and makes each new drop percentage an update.
    scale = 100 + round(view.drop_overload_percent) if view.drop_overload_percent > 0 else 1
    localities = [_locality(locality, scale) for locality in view.localities]
    key = (view.name, view.drop_overload_percent, tuple(map(id, localities)))
    hit = _ASSIGNMENTS.get(key)
    if hit is not None:
        return hit[1]  # same localities: the same message, so its serialization is reused too
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=view.name, endpoints=localities)
    if view.drop_overload_percent > 0:
        assignment.policy.drop_overloads.append(
            endpoint_pb2.ClusterLoadAssignment.Policy.DropOverload(
                category="heliostat_shed",
                drop_percentage=percent_pb2.FractionalPercent(
                    numerator=round(view.drop_overload_percent * 10_000),
                    denominator=percent_pb2.FractionalPercent.MILLION,
                ),
            )
        )
    _ASSIGNMENTS.put(key, (localities, assignment))
    return assignment


LocalityKey = tuple[str, int, int | None, int, tuple[int, ...]]
_ASSIGNMENTS: RoundMemo[
    tuple[str, float, tuple[int, ...]],
    tuple[list[endpoint_components_pb2.LocalityLbEndpoints], endpoint_pb2.ClusterLoadAssignment],
] = RoundMemo()
# Built localities by what they are made of (the endpoints by identity): a locality whose
# endpoints all held this tick is not rebuilt. The endpoints tuple in the value pins the ids.
_LOCALITIES: RoundMemo[
    LocalityKey, tuple[tuple[EndpointView, ...], endpoint_components_pb2.LocalityLbEndpoints]
] = RoundMemo()


def _locality(locality: LocalityView, scale: int) -> endpoint_components_pb2.LocalityLbEndpoints:
    key = (
        locality.region,
        locality.priority,
        locality.weight,
        scale,
        tuple(map(id, locality.endpoints)),
    )
    hit = _LOCALITIES.get(key)
    if hit is not None:
        return hit[1]
    built = _build_locality(locality, scale)
    _LOCALITIES.put(key, (locality.endpoints, built))
    return built


def _build_locality(
    locality: LocalityView, scale: int
) -> endpoint_components_pb2.LocalityLbEndpoints:
    result = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region=locality.region),
        priority=locality.priority,
        lb_endpoints=[_endpoint(e) for e in locality.endpoints],
    )
    if locality.weight is not None:
        result.load_balancing_weight.CopyFrom(
            wrappers_pb2.UInt32Value(value=locality.weight * scale)
        )
    return result


# Built LbEndpoints by the identity of their EndpointView. The control law hands back the
# same EndpointView object while an endpoint's weight, health and reason hold, and one view
# object appears in every region's view, so most endpoints are built once, not every tick for
# every node group. Keeping the view in the value pins its id while cached; entries live
# for two publish rounds (see heliostat.xds.memo).
_BUILT: RoundMemo[int, tuple[EndpointView, endpoint_components_pb2.LbEndpoint]] = RoundMemo()


def _endpoint(view: EndpointView) -> endpoint_components_pb2.LbEndpoint:
    hit = _BUILT.get(id(view))
    if hit is not None and hit[0] is view:
        return hit[1]
    built = _build_endpoint(view)
    _BUILT.put(id(view), (view, built))
    return built


def _build_endpoint(view: EndpointView) -> endpoint_components_pb2.LbEndpoint:
    explanation = struct_pb2.Struct()
    explanation.update(
        {
            "region": view.region,
            **({"version": view.version} if view.version else {}),
            **{key: value for key, value in view.reason.items() if value is not None},
        }
    )
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(explanation)
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=view.host, port_value=view.port)
            )
        ),
        health_status=_HEALTH[view.health],
        load_balancing_weight=wrappers_pb2.UInt32Value(value=max(1, view.weight)),
        metadata=metadata,
    )
