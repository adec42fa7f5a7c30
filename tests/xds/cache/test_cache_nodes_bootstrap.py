"""The snapshot cache, node grouping from Envoy's node identity, and the Envoy bootstrap."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - for Any
from google.protobuf import json_format

from heliostat.bootstrap import XDS_CLUSTER, BootstrapOptions, bootstrap
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup, NodeIdentityError, Role, group_of
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl
from tests.xds.helpers import snapshot

ENDPOINT, LB_ENDPOINT = TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT

US = NodeGroup(Role.GATEWAY, "us-east")
EU = NodeGroup(Role.GATEWAY, "eu-west")


def copy_of(snap: Snapshot) -> Snapshot:
    delta = snap.for_delta()
    return Snapshot(
        {t: list(snap.resources(t).values()) for t in PUSH_ORDER},
        delta=(
            None
            if delta is snap
            else {t: list(delta.resources(t).values()) for t in (ENDPOINT, LB_ENDPOINT)}
        ),
        members=snap.members,
    )


# -- SnapshotCache ----------------------------------------------------------------------------


def test_cache_notifies_watchers_only_when_the_version_changes() -> None:
    cache = SnapshotCache()
    seen: list[Snapshot] = []
    cache.watch(US, seen.append)
    first = snapshot()
    assert cache.set(US, first) is True
    assert seen == [first]
    assert cache.get(US) is first
    # The same content again, even as another object: no news.
    assert cache.set(US, copy_of(first)) is False
    assert cache.set(US, first) is False
    assert seen == [first]
    assert cache.get(US) is first
    changed = snapshot(llama_port=9105)
    assert cache.set(US, changed) is True
    assert seen == [first, changed]
    assert cache.get(US) is changed


def test_cache_notifies_only_the_groups_watchers() -> None:
    cache = SnapshotCache()
    us: list[Snapshot] = []
    eu: list[Snapshot] = []
    cache.watch(US, us.append)
    cache.watch(EU, eu.append)
    cache.set(EU, snapshot())
    assert us == [] and len(eu) == 1
    assert cache.get(US) is None
    # Groups differ by port too.
    moved = NodeGroup(Role.GATEWAY, "eu-west", 10443)
    cache.set(moved, snapshot())
    assert len(eu) == 1


def test_cache_cancel_stops_notifications() -> None:
    cache = SnapshotCache()
    kept: list[Snapshot] = []
    dropped: list[Snapshot] = []
    cache.watch(US, kept.append)
    cancel = cache.watch(US, dropped.append)
    assert cache.watched(US) == 2
    cancel()
    assert cache.watched(US) == 1
    cancel()  # twice is harmless
    assert cache.watched(US) == 1
    cache.set(US, snapshot())
    assert len(kept) == 1 and dropped == []


def test_cache_cancel_of_the_last_watcher() -> None:
    cache = SnapshotCache()
    cancel = cache.watch(US, lambda _: None)
    cancel()
    assert cache.watched(US) == 0
    cancel()
    cache.set(US, snapshot())  # nobody to tell; no error


def test_a_watcher_may_cancel_itself_while_being_notified() -> None:
    cache = SnapshotCache()
    calls: list[str] = []
    cancels: dict[str, Any] = {}

    def once(_: Snapshot) -> None:
        calls.append("once")
        cancels["once"]()

    cancels["once"] = cache.watch(US, once)
    cache.watch(US, lambda _: calls.append("always"))
    cache.set(US, snapshot())
    cache.set(US, snapshot(llama_port=9105))
    assert sorted(calls) == ["always", "always", "once"]


def test_cache_lists_groups_by_key() -> None:
    cache = SnapshotCache()
    groups = [EU, US, NodeGroup(Role.SIDECAR, None), NodeGroup(Role.GATEWAY, "eu-west", 10443)]
    for group in groups:
        cache.set(group, snapshot())
    assert cache.groups() == sorted(groups, key=lambda g: g.key)
    assert [g.key for g in cache.groups()] == [
        "gateway/eu-west/10443",
        "gateway/eu-west/default",
        "gateway/us-east/default",
        "sidecar/-/default",
    ]


# -- group_of ---------------------------------------------------------------------------------


def node(node_id: str = "gw-1", region: str = "", **metadata: Any) -> base_pb2.Node:
    result = base_pb2.Node(id=node_id, locality=base_pb2.Locality(region=region))
    if metadata:
        result.metadata.update(metadata)
    return result


def test_group_of_reads_region_role_and_port() -> None:
    group = group_of(node(region="eu-west", role="sidecar", listener_port=10443))
    assert group == NodeGroup(Role.SIDECAR, "eu-west", 10443)
    assert group.key == "sidecar/eu-west/10443"


def test_group_of_defaults() -> None:
    assert group_of(node(region="us-east")) == NodeGroup(Role.GATEWAY, "us-east", None)
    assert group_of(node()) == NodeGroup(Role.GATEWAY, None, None)
    assert group_of(node()).key == "gateway/-/default"
    assert group_of(node(role="gateway")) == NodeGroup(Role.GATEWAY, None, None)


def test_group_of_accepts_a_port_written_as_text() -> None:
    assert group_of(node(listener_port="10443")).listener_port == 10443


def test_nodes_of_one_region_share_a_group() -> None:
    assert group_of(node("a", "us-east")) == group_of(node("b", "us-east"))
    assert hash(group_of(node("a", "us-east"))) == hash(group_of(node("b", "us-east")))


@pytest.mark.parametrize("role", ["router", "GATEWAY", "", 3])
def test_bad_role_names_the_node(role: object) -> None:
    with pytest.raises(NodeIdentityError) as info:
        group_of(node("gw-eu-7", "eu-west", role=role))
    message = str(info.value)
    assert message.startswith("node 'gw-eu-7': metadata role ")
    assert "is not one of gateway, sidecar" in message


@pytest.mark.parametrize("port", [0, 65536, -1, "http", 10443.5, True, [1], {"a": 1}])
def test_bad_listener_port_names_the_node(port: object) -> None:
    with pytest.raises(NodeIdentityError) as info:
        group_of(node("gw-eu-7", "eu-west", listener_port=port))
    message = str(info.value)
    assert message.startswith("node 'gw-eu-7': metadata listener_port ")
    assert message.endswith("is not a port (1-65535)")


def test_unreadable_metadata_is_a_node_identity_error() -> None:
    bad = node("gw-eu-7")
    bad.metadata.fields["listener_port"].number_value = float("inf")
    with pytest.raises(NodeIdentityError, match="node 'gw-eu-7'"):
        group_of(bad)


# -- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_node_identity() -> None:
    config = bootstrap(BootstrapOptions(node_id="gw-us-1", region="us-east"))
    assert config["node"] == {
        "id": "gw-us-1",
        "cluster": "heliostat-gateway",
        "locality": {"region": "us-east"},
        "metadata": {"role": "gateway"},
    }


def test_bootstrap_metadata_carries_role_and_listener_port() -> None:
    config = bootstrap(
        BootstrapOptions(node_id="sc-1", region="eu-west", role=Role.SIDECAR, listener_port=10443)
    )
    assert config["node"]["cluster"] == "heliostat-sidecar"
    assert config["node"]["metadata"] == {"role": "sidecar", "listener_port": 10443}


@pytest.mark.parametrize(("delta", "api_type"), [(False, "GRPC"), (True, "DELTA_GRPC")])
def test_bootstrap_ads(delta: bool, api_type: str) -> None:
    config = bootstrap(BootstrapOptions(node_id="gw", region="us-east", delta=delta))
    dynamic = config["dynamic_resources"]
    ads = dynamic["ads_config"]
    assert ads["api_type"] == api_type
    assert ads["transport_api_version"] == "V3"
    (service,) = ads["grpc_services"]
    assert service["envoy_grpc"]["cluster_name"] == XDS_CLUSTER
    for source in ("cds_config", "lds_config"):
        assert dynamic[source] == {"ads": {}, "resource_api_version": "V3"}


def _xds_cluster(config: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["name"] == XDS_CLUSTER == "heliostat_xds"
    return cluster


def test_bootstrap_xds_cluster_address() -> None:
    config = bootstrap(
        BootstrapOptions(node_id="gw", region="us-east", xds_host="10.0.0.5", xds_port=18001)
    )
    cluster = _xds_cluster(config)
    assert cluster["type"] == "STATIC"
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {
        "socket_address": {"address": "10.0.0.5", "port_value": 18001}
    }
    # gRPC needs HTTP/2 to the control plane.
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]


def test_bootstrap_xds_cluster_by_name_resolves_dns() -> None:
    config = bootstrap(BootstrapOptions(node_id="gw", region="us-east", xds_host="heliostat.svc"))
    assert _xds_cluster(config)["type"] == "STRICT_DNS"


def test_bootstrap_admin_address() -> None:
    config = bootstrap(
        BootstrapOptions(node_id="gw", region="us-east", admin_host="0.0.0.0", admin_port=19902)
    )
    assert config["admin"]["address"] == {
        "socket_address": {"address": "0.0.0.0", "port_value": 19902}
    }


@pytest.mark.parametrize("delta", [False, True])
def test_bootstrap_is_a_valid_envoy_bootstrap_and_groups_back(delta: bool) -> None:
    """Every field name is one Envoy knows, and the node lands in the group it asked for."""
    options = BootstrapOptions(
        node_id="gw-eu-1",
        region="eu-west",
        role=Role.SIDECAR,
        listener_port=10443,
        delta=delta,
        xds_host="127.0.0.1",
        xds_port=18000,
    )
    message = json_format.ParseDict(bootstrap(options), bootstrap_pb2.Bootstrap())
    assert message.node.id == "gw-eu-1"
    ads = message.dynamic_resources.ads_config
    assert ads.api_type == (
        ads.DELTA_GRPC if delta else ads.GRPC  # type: ignore[attr-defined]
    )
    assert group_of(message.node) == NodeGroup(Role.SIDECAR, "eu-west", 10443)
    (cluster,) = message.static_resources.clusters
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        18000,
    )


def test_bootstrap_without_listener_port_groups_on_the_policy_port() -> None:
    config = bootstrap(BootstrapOptions(node_id="gw", region="us-east"))
    message = json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
    assert group_of(message.node) == NodeGroup(Role.GATEWAY, "us-east", None)
