"""Snapshots from small policies and hand-built discovery requests, for the stream tests."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from heliostat.balance import static_views
from heliostat.policy import parse_policy
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import ROUTE_CONFIG_NAME, build_snapshot

CDS, EDS, LDS, RDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE
ALL_MODELS = ("llama", "qwen", "mistral")
NODE = base_pb2.Node(id="gw-1", locality=base_pb2.Locality(region="us-east"))

_PORTS = {"llama": 9101, "qwen": 9201, "mistral": 9301}


@cache
def snapshot(
    models: tuple[str, ...] = ("llama", "qwen"),
    llama_port: int = 9101,
    gateway_port: int = 10000,
    qwen_port: int = 9201,
    leds: bool = False,
) -> Snapshot:
    """A one-region policy serving `models`; the ports vary endpoints and the listener.
    Plain EDS for delta nodes too unless `leds` (the protocol tests' mechanics are the
    same for every type; the LEDS form has its own tests)."""
    ports = {**_PORTS, "llama": llama_port, "qwen": qwen_port}
    model_text = "".join(
        f"    - name: {name}\n"
        f"      endpoints:\n"
        f"        - {{address: 127.0.0.1:{ports[name]}, region: us-east}}\n"
        f"        - {{address: 127.0.0.2:{ports[name]}, region: us-east}}\n"
        for name in models
    )
    policy = parse_policy(
        "apiVersion: heliostat/v1\n"
        "kind: InferencePolicy\n"
        "metadata: {name: t}\n"
        "spec:\n"
        "  regions: {us-east: {}}\n"
        f"  gateway: {{port: {gateway_port}, address: 127.0.0.1}}\n"
        "  models:\n" + model_text
    )
    return build_snapshot(
        policy,
        static_views(policy).for_region("us-east"),
        NodeGroup(Role.GATEWAY, "us-east"),
        leds=leds,
    )


def versions(snap: Snapshot, type_url: TypeUrl) -> dict[str, str]:
    return {name: r.version for name, r in snap.resources(type_url).items()}


def default_names(type_url: TypeUrl, models: Iterable[str] = ("llama", "qwen")) -> list[str]:
    """What an Envoy subscribes to: CDS/LDS wildcard, EDS its clusters, RDS the listener's."""
    if type_url is EDS:
        return sorted(models)
    if type_url is RDS:
        return [ROUTE_CONFIG_NAME]
    return []


def sotw_request(
    type_url: TypeUrl,
    names: Iterable[str] | None = None,
    *,
    version: str = "",
    nonce: str = "",
    error: str | None = None,
    node: base_pb2.Node | None = None,
) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url.value,
        version_info=version,
        response_nonce=nonce,
        resource_names=default_names(type_url) if names is None else list(names),
    )
    if node is not None:
        request.node.CopyFrom(node)
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def ack(
    response: discovery_pb2.DiscoveryResponse, names: Iterable[str] | None = None
) -> discovery_pb2.DiscoveryRequest:
    return sotw_request(
        TypeUrl(response.type_url), names, version=response.version_info, nonce=response.nonce
    )


def nack(
    response: discovery_pb2.DiscoveryResponse,
    previous_version: str = "",
    names: Iterable[str] | None = None,
    error: str = "rejected",
) -> discovery_pb2.DiscoveryRequest:
    return sotw_request(
        TypeUrl(response.type_url),
        names,
        version=previous_version,
        nonce=response.nonce,
        error=error,
    )


def delta_request(
    type_url: TypeUrl,
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    *,
    nonce: str = "",
    error: str | None = None,
    initial: dict[str, str] | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url.value,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return request


def route_clusters(packed_routes: Iterable[object]) -> set[str]:
    """Clusters named by the routes in packed RouteConfigurations."""
    clusters: set[str] = set()
    for packed in packed_routes:
        config = route_pb2.RouteConfiguration()
        assert packed.Unpack(config)  # type: ignore[attr-defined]
        for host in config.virtual_hosts:
            clusters.update(r.route.cluster for r in host.routes if r.HasField("route"))
    return clusters


def resource_names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    """The names of the resources in a SotW response (each type names itself its own way)."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.config.listener.v3 import listener_pb2

    kinds = {
        CDS.value: cluster_pb2.Cluster,
        EDS.value: endpoint_pb2.ClusterLoadAssignment,
        LDS.value: listener_pb2.Listener,
        RDS.value: route_pb2.RouteConfiguration,
    }
    names = []
    for packed in response.resources:
        message = kinds[response.type_url]()
        assert packed.Unpack(message)
        names.append(
            message.cluster_name
            if isinstance(message, endpoint_pb2.ClusterLoadAssignment)
            else message.name
        )
    return names
