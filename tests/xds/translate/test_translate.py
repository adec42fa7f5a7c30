"""Policy + region view -> Envoy resources: clusters, endpoints, listener, routes, versions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from heliostat.balance import static_views
from heliostat.policy import Policy, parse_policy
from heliostat.wire import ENDPOINT_REASON_KEY, METADATA_NAMESPACE, MODEL_HEADER, ORIGIN_HEADER
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import InconsistentSnapshot, Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl
from heliostat.xds.translate import (
    ROUTE_CONFIG_NAME,
    build_snapshot,
    listener_name,
)

REPO = Path(__file__).resolve().parents[3]

POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: t}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}
    eu-west: {rtt_ms: {ap-southeast: 160}}
    ap-southeast: {}
  gateway: {port: 10000, address: 127.0.0.1}
  models:
    - name: llama-70b
      slo: {network_budget_ms: 150}
      connect_timeout: 250ms
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east, version: v1}
        - {address: 127.0.0.1:9102, region: us-east, version: v1}
        - {address: 127.0.0.1:9201, region: eu-west, version: v2}
        - {address: 127.0.0.1:9301, region: ap-southeast}
    - name: qwen-7b
      protocol: http2
      slo: {network_budget_ms: 1000}
      endpoints:
        - {address: 127.0.0.1:9111, region: us-east}
        - {address: 127.0.0.1:9311, region: ap-southeast}
"""

MODELS = ["llama-70b", "qwen-7b"]
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def policy_of(text: str = POLICY) -> Policy:
    return parse_policy(text, "t.yaml")


def snapshot_for(
    region: str | None, policy: Policy | None = None, listener_port: int | None = None
) -> Snapshot:
    policy = policy or policy_of()
    group = NodeGroup(Role.GATEWAY, region, listener_port)
    return build_snapshot(policy, static_views(policy).for_region(region), group)


def clusters(snapshot: Snapshot) -> dict[str, cluster_pb2.Cluster]:
    return {n: r.message for n, r in snapshot.resources(TypeUrl.CLUSTER).items()}  # type: ignore[misc]


def cla(snapshot: Snapshot, name: str) -> endpoint_pb2.ClusterLoadAssignment:
    message = snapshot.resources(TypeUrl.ENDPOINT)[name].message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    return message


def only_listener(snapshot: Snapshot) -> listener_pb2.Listener:
    (resource,) = snapshot.resources(TypeUrl.LISTENER).values()
    assert isinstance(resource.message, listener_pb2.Listener)
    return resource.message


def only_routes(snapshot: Snapshot) -> route_pb2.RouteConfiguration:
    (resource,) = snapshot.resources(TypeUrl.ROUTE).values()
    assert isinstance(resource.message, route_pb2.RouteConfiguration)
    return resource.message


def priorities(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[str, int]]:
    return [(loc.locality.region, loc.priority) for loc in assignment.endpoints]


def manager_of(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    manager = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(manager)
    return manager


# -- clusters ---------------------------------------------------------------------------------


def test_one_eds_cluster_per_model_with_least_request() -> None:
    snapshot = snapshot_for("us-east")
    found = clusters(snapshot)
    assert sorted(found) == sorted(MODELS)
    for name, cluster in found.items():
        assert cluster.name == name
        assert cluster.type == cluster_pb2.Cluster.EDS
        assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
        # ... as a typed policy that scans every host (xds.translate.clusters), which Envoy
        # uses instead of lb_policy; locality weights with it.
        (policy,) = cluster.load_balancing_policy.policies
        assert policy.typed_extension_config.name == "envoy.load_balancing_policies.least_request"
        config = least_request_pb2.LeastRequest()
        assert policy.typed_extension_config.typed_config.Unpack(config)
        assert config.selection_method == least_request_pb2.LeastRequest.FULL_SCAN
        assert config.locality_lb_config.HasField("locality_weighted_lb_config")
        assert not cluster.common_lb_config.HasField("locality_weighted_lb_config")
        assert cluster.eds_cluster_config.service_name == name
        assert cluster.eds_cluster_config.eds_config.HasField("ads")
        assert cluster.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3
    assert found["llama-70b"].connect_timeout.ToNanoseconds() == 250_000_000
    assert found["qwen-7b"].connect_timeout.ToNanoseconds() == 1_000_000_000


def _protocol(cluster: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    return options


def test_http2_protocol_option_when_the_policy_says_http2() -> None:
    found = clusters(snapshot_for("us-east"))
    qwen = _protocol(found["qwen-7b"]).explicit_http_config
    llama = _protocol(found["llama-70b"]).explicit_http_config
    assert qwen.HasField("http2_protocol_options")
    assert not qwen.HasField("http_protocol_options")
    assert llama.HasField("http_protocol_options")
    assert not llama.HasField("http2_protocol_options")


# -- endpoints --------------------------------------------------------------------------------


def test_own_region_first_then_others_by_rtt() -> None:
    # From us-east: eu-west is 80 ms (within 150), ap-southeast 210 ms (beyond, last).
    # Alphabetical order would put ap-southeast before eu-west.
    assert priorities(cla(snapshot_for("us-east"), "llama-70b")) == [
        ("us-east", 0),
        ("eu-west", 1),
        ("ap-southeast", 2),
    ]
    # From ap-southeast both peers are beyond 150 ms: still ordered by RTT (160 < 210).
    assert priorities(cla(snapshot_for("ap-southeast"), "llama-70b")) == [
        ("ap-southeast", 0),
        ("eu-west", 1),
        ("us-east", 2),
    ]
    assert priorities(cla(snapshot_for("eu-west"), "llama-70b")) == [
        ("eu-west", 0),
        ("us-east", 1),
        ("ap-southeast", 2),
    ]


def test_regions_beyond_the_network_budget_come_after_those_within() -> None:
    # A budget of 50 puts both of eu-west's peers beyond it: still in RTT order, after
    # the own region, and not dropped.
    tight = policy_of(POLICY.replace("network_budget_ms: 150", "network_budget_ms: 50"))
    assert priorities(cla(snapshot_for("eu-west", tight), "llama-70b")) == [
        ("eu-west", 0),
        ("us-east", 1),
        ("ap-southeast", 2),
    ]
    # ap-southeast's closest peer is eu-west (160); with a budget of 200 it stays within,
    # and us-east (210) goes beyond, i.e. last.
    wide = policy_of(POLICY.replace("network_budget_ms: 150", "network_budget_ms: 200"))
    assert priorities(cla(snapshot_for("ap-southeast", wide), "llama-70b")) == [
        ("ap-southeast", 0),
        ("eu-west", 1),
        ("us-east", 2),
    ]


def test_priorities_are_dense_when_a_region_has_no_endpoints() -> None:
    # qwen-7b has no endpoints in eu-west: from eu-west, us-east is priority 0.
    assert priorities(cla(snapshot_for("eu-west"), "qwen-7b")) == [
        ("us-east", 0),
        ("ap-southeast", 1),
    ]


def test_localities_hold_their_region_endpoints_with_weight_and_metadata() -> None:
    assignment = cla(snapshot_for("us-east"), "llama-70b")
    assert assignment.cluster_name == "llama-70b"
    addresses = {
        loc.locality.region: [
            (
                e.endpoint.address.socket_address.address,
                e.endpoint.address.socket_address.port_value,
            )
            for e in loc.lb_endpoints
        ]
        for loc in assignment.endpoints
    }
    assert addresses == {
        "us-east": [("127.0.0.1", 9101), ("127.0.0.1", 9102)],
        "eu-west": [("127.0.0.1", 9201)],
        "ap-southeast": [("127.0.0.1", 9301)],
    }
    for locality in assignment.endpoints:
        for lb_endpoint in locality.lb_endpoints:
            assert lb_endpoint.load_balancing_weight.value >= 1
            assert lb_endpoint.health_status == health_check_pb2.HEALTHY
            fields = lb_endpoint.metadata.filter_metadata[METADATA_NAMESPACE].fields
            # Only the reason code travels (a few bytes); the explanation is in /debug/state.
            assert set(fields) == {ENDPOINT_REASON_KEY}
            assert fields[ENDPOINT_REASON_KEY].string_value == "static"  # no signals yet
    assert METADATA_NAMESPACE == "heliostat"


def test_zero_weight_in_a_view_is_sent_as_one() -> None:
    """Envoy rejects an endpoint weight of 0; the translator must clamp it."""
    import dataclasses

    policy = policy_of()
    view = static_views(policy).for_region("us-east")
    llama = view.cluster("llama-70b")
    assert llama is not None
    zeroed = dataclasses.replace(
        llama,
        localities=tuple(
            dataclasses.replace(
                loc, endpoints=tuple(dataclasses.replace(e, weight=0) for e in loc.endpoints)
            )
            for loc in llama.localities
        ),
    )
    view = dataclasses.replace(
        view, clusters=tuple(zeroed if c.name == "llama-70b" else c for c in view.clusters)
    )
    snapshot = build_snapshot(policy, view, NodeGroup(Role.GATEWAY, "us-east"))
    weights = [
        e.load_balancing_weight.value
        for loc in cla(snapshot, "llama-70b").endpoints
        for e in loc.lb_endpoints
    ]
    assert weights == [1, 1, 1, 1]


# -- listener ---------------------------------------------------------------------------------


def test_listener_on_the_gateway_port_with_rds() -> None:
    listener = only_listener(snapshot_for("us-east"))
    assert listener.name == listener_name(10000) == "heliostat_http_10000"
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 10000
    manager = manager_of(listener)
    assert manager.rds.route_config_name == ROUTE_CONFIG_NAME
    assert manager.rds.config_source.HasField("ads")
    assert [f.name for f in manager.http_filters][-1] == "envoy.filters.http.router"


def test_node_group_listener_port_overrides_the_gateway_port() -> None:
    default = snapshot_for("us-east")
    moved = snapshot_for("us-east", listener_port=10443)
    listener = only_listener(moved)
    assert listener.name == "heliostat_http_10443"
    assert listener.address.socket_address.port_value == 10443
    assert listener.address.socket_address.address == "127.0.0.1"
    # Only the listener differs.
    for type_url in (TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.ROUTE):
        assert _versions(moved, type_url) == _versions(default, type_url)


def test_gateway_address_and_port_come_from_the_policy() -> None:
    policy = policy_of(POLICY.replace("{port: 10000, address: 127.0.0.1}", "{port: 8080}"))
    listener = only_listener(snapshot_for("us-east", policy))
    assert listener.name == "heliostat_http_8080"
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 8080


# -- routes -----------------------------------------------------------------------------------


def _model_routes(config: route_pb2.RouteConfiguration) -> list[route_components_pb2.Route]:
    (host,) = config.virtual_hosts
    return [r for r in host.routes if r.HasField("route")]


def test_routes_match_the_model_header_exactly() -> None:
    config = only_routes(snapshot_for("eu-west"))
    assert config.name == ROUTE_CONFIG_NAME
    (host,) = config.virtual_hosts
    assert list(host.domains) == ["*"]
    # The plain route of each model: by header, interactive, unary (the traffic policy adds
    # batch, streamed and body-model variants: tests/xds/translate/test_traffic_policy.py).
    routes = [r for r in _model_routes(config) if r.name in {f"model:{m}" for m in MODELS}]
    assert [r.route.cluster for r in routes] == MODELS
    for route, model in zip(routes, MODELS, strict=True):
        (matcher,) = route.match.headers
        assert matcher.name == MODEL_HEADER == "x-model"
        assert matcher.string_match.exact == model
        assert route.match.prefix == "/"
        (header,) = route.request_headers_to_add
        assert header.header.key == ORIGIN_HEADER == "x-heliostat-origin-region"
        assert header.header.value == "eu-west"


def test_unknown_or_missing_model_gets_a_json_404_naming_the_models() -> None:
    config = only_routes(snapshot_for("us-east"))
    (host,) = config.virtual_hosts
    routes = list(host.routes)
    # GET /v1/models, then the model routes: Envoy takes the first route that matches; then
    # the gateway's own answers (a body that is not JSON, unknown or missing models).
    kinds = [r.HasField("route") for r in routes]
    assert kinds == [False] + [True] * (len(routes) - 5) + [False] * 4
    assert routes[0].match.path == "/v1/models"
    assert json.loads(routes[0].direct_response.body.inline_string)["data"][0]["id"] == MODELS[0]
    assert routes[-4].direct_response.status == 400
    unknown, missing = routes[-3], routes[-1]
    # Header present but no model route matched.
    (present,) = unknown.match.headers
    assert present.name == MODEL_HEADER and present.present_match
    # No header at all: a catch-all.
    assert not missing.match.headers and missing.match.prefix == "/"
    for route in (unknown, missing):
        assert route.direct_response.status == 404
        body = json.loads(route.direct_response.body.inline_string)
        assert body["error"]["type"] == "model_not_found"
        assert body["error"]["models"] == MODELS
        assert MODEL_HEADER in body["error"]["message"]
        headers = {h.header.key: h.header.value for h in route.response_headers_to_add}
        assert headers == {"content-type": "application/json"}


def test_every_model_route_points_at_a_cluster_in_the_snapshot() -> None:
    snapshot = snapshot_for("us-east")
    targets = {r.route.cluster for r in _model_routes(only_routes(snapshot))}
    assert targets == set(snapshot.resources(TypeUrl.CLUSTER))
    assert set(snapshot.resources(TypeUrl.ENDPOINT)) == set(snapshot.resources(TypeUrl.CLUSTER))


# -- nodes of no or unknown region ------------------------------------------------------------


def test_unknown_region_gets_the_neutral_view() -> None:
    snapshot = snapshot_for("mars")
    for model in MODELS:
        assert {p for _, p in priorities(cla(snapshot, model))} == {0}
    llama_regions = {r for r, _ in priorities(cla(snapshot, "llama-70b"))}
    assert llama_regions == {"us-east", "eu-west", "ap-southeast"}
    # The neutral view's endpoints are the same as for no region at all.
    assert _versions(snapshot, TypeUrl.ENDPOINT) == _versions(snapshot_for(None), TypeUrl.ENDPOINT)


def test_no_region_means_neutral_view_and_no_origin_header() -> None:
    snapshot = snapshot_for(None)
    for model in MODELS:
        assert {p for _, p in priorities(cla(snapshot, model))} == {0}
    for route in _model_routes(only_routes(snapshot)):
        assert not route.request_headers_to_add


# -- versions ---------------------------------------------------------------------------------


def _versions(snapshot: Snapshot, type_url: TypeUrl) -> dict[str, str]:
    return {n: r.version for n, r in snapshot.resources(type_url).items()}


def test_versions_are_deterministic() -> None:
    first, second = snapshot_for("us-east"), snapshot_for("us-east", policy_of())
    assert first.version == second.version
    for type_url in PUSH_ORDER:
        a, b = first.resources(type_url), second.resources(type_url)
        assert list(a) == list(b)
        for name in a:
            assert a[name].version == b[name].version
            assert a[name].packed.SerializeToString() == b[name].packed.SerializeToString()
            assert a[name].packed.type_url == type_url.value


def test_versions_agree_across_processes() -> None:
    """Replicas of the control plane are separate processes with their own hash seeds."""
    script = textwrap.dedent(
        f"""
        from heliostat.balance import static_views
        from heliostat.policy import parse_policy
        from heliostat.xds.resources.nodes import NodeGroup, Role
        from heliostat.xds.translate import build_snapshot
        policy = parse_policy({POLICY!r})
        snap = build_snapshot(
            policy, static_views(policy).for_region("us-east"), NodeGroup(Role.GATEWAY, "us-east")
        )
        print(snap.version)
        """
    )
    outputs = set()
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            timeout=60,
            check=True,
        )
        outputs.add(result.stdout.strip())
    assert outputs == {snapshot_for("us-east").version}


def test_regions_get_different_endpoint_versions_but_share_the_rest() -> None:
    us, eu = snapshot_for("us-east"), snapshot_for("eu-west")
    assert us.version != eu.version
    assert _versions(us, TypeUrl.ENDPOINT) != _versions(eu, TypeUrl.ENDPOINT)
    assert _versions(us, TypeUrl.CLUSTER) == _versions(eu, TypeUrl.CLUSTER)
    assert _versions(us, TypeUrl.LISTENER) == _versions(eu, TypeUrl.LISTENER)


def test_changing_one_endpoint_changes_only_that_eds_resource() -> None:
    before = snapshot_for("us-east")
    after = snapshot_for("us-east", policy_of(POLICY.replace("127.0.0.1:9102", "127.0.0.1:9105")))
    assert before.version != after.version
    old, new = _versions(before, TypeUrl.ENDPOINT), _versions(after, TypeUrl.ENDPOINT)
    assert old["llama-70b"] != new["llama-70b"]
    assert old["qwen-7b"] == new["qwen-7b"]
    for type_url in (TypeUrl.CLUSTER, TypeUrl.LISTENER, TypeUrl.ROUTE):
        assert _versions(before, type_url) == _versions(after, type_url)


def test_changing_a_models_protocol_changes_only_its_cluster() -> None:
    before = snapshot_for("us-east")
    after = snapshot_for("us-east", policy_of(POLICY.replace("protocol: http2", "protocol: http1")))
    old, new = _versions(before, TypeUrl.CLUSTER), _versions(after, TypeUrl.CLUSTER)
    assert old["qwen-7b"] != new["qwen-7b"]
    assert old["llama-70b"] == new["llama-70b"]
    for type_url in (TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE):
        assert _versions(before, type_url) == _versions(after, type_url)


def test_snapshot_version_does_not_depend_on_resource_order() -> None:
    policy = policy_of()
    group = NodeGroup(Role.GATEWAY, "us-east")
    snapshot = build_snapshot(policy, static_views(policy).for_region("us-east"), group, leds=True)
    assert snapshot.for_delta() is not snapshot
    messages = {t: {n: r.message for n, r in snapshot.resources(t).items()} for t in PUSH_ORDER}
    reversed_messages = {
        t: dict(reversed(list(items.items()))) for t, items in reversed(list(messages.items()))
    }
    delta = snapshot.for_delta()
    reversed_delta = {
        t: list(reversed(list(delta.resources(t).values())))
        for t in (TypeUrl.LB_ENDPOINT, TypeUrl.ENDPOINT)
    }
    rebuilt = Snapshot.from_messages(reversed_messages, delta=reversed_delta)
    assert rebuilt.version == snapshot.version


# -- consistency ------------------------------------------------------------------------------


def _good_messages() -> dict[TypeUrl, dict[str, object]]:
    snapshot = snapshot_for("us-east")
    return {t: {n: r.message for n, r in snapshot.resources(t).items()} for t in PUSH_ORDER}


def test_consistent_snapshot_passes() -> None:
    Snapshot.from_messages(_good_messages()).check_consistency()  # type: ignore[arg-type]


def test_cluster_without_load_assignment_is_inconsistent() -> None:
    messages = _good_messages()
    del messages[TypeUrl.ENDPOINT]["qwen-7b"]
    with pytest.raises(
        InconsistentSnapshot, match=r"cluster 'qwen-7b' has no ClusterLoadAssignment"
    ):
        Snapshot.from_messages(messages).check_consistency()  # type: ignore[arg-type]


def test_listener_whose_route_configuration_is_missing_is_inconsistent() -> None:
    messages = _good_messages()
    messages[TypeUrl.ROUTE] = {}
    with pytest.raises(
        InconsistentSnapshot, match=r"listener 'heliostat_http_10000' needs RouteConfiguration"
    ):
        Snapshot.from_messages(messages).check_consistency()  # type: ignore[arg-type]


def test_route_to_a_missing_cluster_is_inconsistent() -> None:
    messages = _good_messages()
    del messages[TypeUrl.CLUSTER]["llama-70b"]
    del messages[TypeUrl.ENDPOINT]["llama-70b"]
    with pytest.raises(InconsistentSnapshot, match=r"unknown cluster 'llama-70b'"):
        Snapshot.from_messages(messages).check_consistency()  # type: ignore[arg-type]


def test_weighted_route_to_a_missing_cluster_is_inconsistent() -> None:
    routes = route_pb2.RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="v",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(
                            weighted_clusters=route_components_pb2.WeightedCluster(
                                clusters=[
                                    route_components_pb2.WeightedCluster.ClusterWeight(name="ghost")
                                ]
                            )
                        ),
                    )
                ],
            )
        ],
    )
    snapshot = Snapshot.from_messages({TypeUrl.ROUTE: {ROUTE_CONFIG_NAME: routes}})
    with pytest.raises(InconsistentSnapshot, match="ghost"):
        snapshot.check_consistency()


def test_every_dangling_reference_is_listed() -> None:
    messages = _good_messages()
    messages[TypeUrl.ENDPOINT] = {}
    messages[TypeUrl.ROUTE] = {}
    with pytest.raises(InconsistentSnapshot) as info:
        Snapshot.from_messages(messages).check_consistency()  # type: ignore[arg-type]
    text = str(info.value)
    assert "'llama-70b'" in text and "'qwen-7b'" in text and "RouteConfiguration" in text


def test_non_eds_cluster_needs_no_load_assignment() -> None:
    static = cluster_pb2.Cluster(name="static", type=cluster_pb2.Cluster.STATIC)
    Snapshot.from_messages({TypeUrl.CLUSTER: {"static": static}}).check_consistency()


def test_listener_without_rds_needs_no_routes() -> None:
    listener = listener_pb2.Listener(
        name="tcp",
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[listener_components_pb2.Filter(name="envoy.filters.network.echo")]
            )
        ],
    )
    Snapshot.from_messages({TypeUrl.LISTENER: {"tcp": listener}}).check_consistency()


def test_resources_unpack_to_their_messages() -> None:
    snapshot = snapshot_for("us-east")
    for type_url in PUSH_ORDER:
        for resource in snapshot.resources(type_url).values():
            assert resource.packed.type_url == type_url.value
            unpacked = type(resource.message)()
            assert resource.packed.Unpack(unpacked)
            assert unpacked == resource.message


def test_a_message_checked_again_is_read_from_the_table_and_still_judged() -> None:
    """The names a listener and a route configuration refer to are kept by the message's
    identity; what is missing is judged against each snapshot's own resources."""
    from heliostat.xds.resources import snapshot as snapshots

    messages = _good_messages()
    Snapshot.from_messages(messages).check_consistency()  # type: ignore[arg-type]
    reads: list[object] = []

    def counted(message: object) -> list[str]:
        reads.append(message)
        return ["elsewhere"]

    (routes,) = messages[TypeUrl.ROUTE].values()
    kept = snapshots._references(routes, counted)  # type: ignore[arg-type]
    assert kept == snapshots._route_clusters(routes)
    assert not reads  # found by identity: not walked again
    assert snapshots._references(object(), counted) == {"elsewhere"}  # type: ignore[arg-type]
    del messages[TypeUrl.CLUSTER]["llama-70b"]
    del messages[TypeUrl.ENDPOINT]["llama-70b"]
    with pytest.raises(InconsistentSnapshot, match=r"unknown cluster 'llama-70b'"):
        Snapshot.from_messages(messages).check_consistency()  # type: ignore[arg-type]
