"""The east-west hop in translation: a lender lists a rescuer's east-west gateways in the
rescuer's locality, with the share's weight, and the rescuer's east-west listener routes to
its own replicas only, in the very cluster its users' route uses (one set of in-flight
counts), held to its region's subset (heliostat/xds/translate/east_west.py)."""

from __future__ import annotations

import dataclasses

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from heliostat.balance import Health, RegionView, TrafficClass, static_views
from heliostat.balance.view import Balancing, LbPolicy
from heliostat.policy import Policy, parse_policy
from heliostat.wire import ENDPOINT_REASON_KEY, METADATA_NAMESPACE, ORIGIN_HEADER
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import TranslationMemo, build_snapshot, listener_name
from heliostat.xds.translate.clusters import SUBSET_POLICY
from heliostat.xds.translate.east_west import EAST_WEST_ROUTE_CONFIG_NAME
from heliostat.xds.translate.endpoints import REGION_KEY, SUBSET_NAMESPACE
from heliostat.xds.translate.memo import TranslationMemo as Memo

POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: t}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}
    eu-west: {rtt_ms: {ap-southeast: 160}, east_west: ["127.0.0.1:15443"]}
    ap-southeast: {east_west: ["127.0.0.1:15444", "127.0.0.1:15445"]}
  gateway: {port: 10000, address: 127.0.0.1}
  models:
    - name: llama-70b
      slo: {network_budget_ms: 170}
      affinity: {prefix_chars: 200}
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
        - {address: 127.0.0.1:9102, region: us-east}
        - {address: 127.0.0.1:9201, region: eu-west}
        - {address: 127.0.0.1:9202, region: eu-west}
        - {address: 127.0.0.1:9203, region: eu-west}
        - {address: 127.0.0.1:9301, region: ap-southeast}
"""

MODEL = "llama-70b"
EU_GATEWAY = "127.0.0.1:15443"
HASHING = Balancing(LbPolicy.RING_HASH, 100, {"lb": "ring_hash"})


def policy_of(text: str = POLICY) -> Policy:
    return parse_policy(text, "t.yaml")


def lending(policy: Policy, share: int = 300) -> RegionView:
    """ap-southeast's view lending `share` thousandths to eu-west (in its priority 0), its
    clusters hashing, as the law publishes it (`balance.assemble`)."""
    view = static_views(policy).for_region("ap-southeast")
    clusters = []
    for cluster in view.clusters:
        localities = []
        for locality in cluster.localities:
            if locality.region == "ap-southeast":
                locality = dataclasses.replace(locality, priority=0, weight=1000 - share)
            elif locality.region == "eu-west":
                locality = dataclasses.replace(locality, priority=0, weight=share)
            else:
                locality = dataclasses.replace(locality, priority=1, weight=1000)
            localities.append(locality)
        lent = dataclasses.replace(cluster, localities=tuple(localities), balancing=HASHING)
        batch = dataclasses.replace(
            lent, name=lent.name + ".batch", traffic_class=TrafficClass.BATCH
        )
        clusters += [lent, batch]
    return dataclasses.replace(view, clusters=tuple(clusters))


def hashing(view: RegionView) -> RegionView:
    return dataclasses.replace(
        view, clusters=tuple(dataclasses.replace(c, balancing=HASHING) for c in view.clusters)
    )


def snapshot_for(
    policy: Policy,
    view: RegionView,
    region: str,
    east_west_port: int | None = None,
    *,
    leds: bool = False,
    memo: TranslationMemo | None = None,
) -> Snapshot:
    group = NodeGroup(Role.GATEWAY, region, None, east_west_port)
    return build_snapshot(policy, view, group, memo, leds=leds)


def cla(snapshot: Snapshot, name: str) -> endpoint_pb2.ClusterLoadAssignment:
    message = snapshot.resources(TypeUrl.ENDPOINT)[name].message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    return message


def by_region(
    assignment: endpoint_pb2.ClusterLoadAssignment,
) -> dict[str, endpoint_components_pb2.LocalityLbEndpoints]:
    return {loc.locality.region: loc for loc in assignment.endpoints}


def addresses(locality: endpoint_components_pb2.LocalityLbEndpoints) -> list[str]:
    return [
        f"{e.endpoint.address.socket_address.address}:"
        f"{e.endpoint.address.socket_address.port_value}"
        for e in locality.lb_endpoints
    ]


def test_a_lender_lists_the_rescuers_gateway_with_the_share_as_its_localitys_weight() -> None:
    policy = policy_of()
    snapshot = snapshot_for(policy, lending(policy), "ap-southeast")
    for name in (MODEL, MODEL + ".batch"):
        localities = by_region(cla(snapshot, name))
        eu = localities["eu-west"]
        assert addresses(eu) == [EU_GATEWAY]  # not eu-west's three replicas
        assert (eu.priority, eu.load_balancing_weight.value) == (0, 300)
        (gateway,) = eu.lb_endpoints
        assert gateway.health_status == 1  # HEALTHY
        reason = gateway.metadata.filter_metadata[METADATA_NAMESPACE]
        assert reason.fields[ENDPOINT_REASON_KEY].string_value == "east_west"
        home = localities["ap-southeast"]  # its own replica, at the rest of the split
        assert addresses(home) == ["127.0.0.1:9301"]
        assert (home.priority, home.load_balancing_weight.value) == (0, 700)
        # us-east has no east-west address: listed by its replicas, as before.
        assert addresses(localities["us-east"]) == ["127.0.0.1:9101", "127.0.0.1:9102"]
    # The hashing cluster weighs localities (ring hash ignores locality weights without it),
    # so the gateway's one host holds exactly the locality's share of the ring.
    cluster = snapshot.resources(TypeUrl.CLUSTER)[MODEL].message
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")


def test_the_gateway_is_as_healthy_as_its_regions_best_replica() -> None:
    policy = policy_of()
    view = lending(policy)

    def with_health(view: RegionView, healths: list[Health]) -> RegionView:
        clusters = []
        for cluster in view.clusters:
            localities = []
            for loc in cluster.localities:
                if loc.region == "eu-west":
                    members = tuple(
                        dataclasses.replace(e, health=h)
                        for e, h in zip(loc.endpoints, healths, strict=True)
                    )
                    loc = dataclasses.replace(loc, endpoints=members)
                localities.append(loc)
            clusters.append(dataclasses.replace(cluster, localities=tuple(localities)))
        return dataclasses.replace(view, clusters=tuple(clusters))

    for healths, expected in (
        ([Health.UNHEALTHY, Health.DRAINING, Health.HEALTHY], 1),  # HEALTHY
        ([Health.UNHEALTHY, Health.DEGRADED, Health.DRAINING], 5),  # DEGRADED
        ([Health.UNHEALTHY, Health.DRAINING, Health.UNHEALTHY], 2),  # UNHEALTHY
        ([Health.DRAINING] * 3, 3),  # DRAINING
    ):
        snapshot = snapshot_for(policy, with_health(view, healths), "ap-southeast")
        (gateway,) = by_region(cla(snapshot, MODEL))["eu-west"].lb_endpoints
        assert gateway.health_status == expected, healths


def test_every_gateway_of_a_region_is_listed_alike() -> None:
    policy = policy_of()
    snapshot = snapshot_for(policy, static_views(policy).for_region("eu-west"), "eu-west")
    ap = by_region(cla(snapshot, MODEL))["ap-southeast"]
    assert addresses(ap) == ["127.0.0.1:15444", "127.0.0.1:15445"]
    assert {e.load_balancing_weight.value for e in ap.lb_endpoints} == {1}


def region_label(endpoint: endpoint_components_pb2.LbEndpoint) -> str | None:
    labels = endpoint.metadata.filter_metadata.get(SUBSET_NAMESPACE)
    return None if labels is None else labels.fields[REGION_KEY].string_value


def model_routes(snapshot: Snapshot, name: str) -> list[route_pb2.Route]:
    routes = snapshot.resources(TypeUrl.ROUTE)[name].message
    assert isinstance(routes, route_pb2.RouteConfiguration)
    return [r for r in routes.virtual_hosts[0].routes if r.route.cluster]


def cluster_of(snapshot: Snapshot, name: str) -> cluster_pb2.Cluster:
    cluster = snapshot.resources(TypeUrl.CLUSTER)[name].message
    assert isinstance(cluster, cluster_pb2.Cluster)
    return cluster


def assert_region_subsets(config: cluster_pb2.Cluster.LbSubsetConfig) -> None:
    """ANY_ENDPOINT for the users' unmatched route, with locality weights; NO_FALLBACK for a
    route matching a region: never a host outside it."""
    assert config.fallback_policy == cluster_pb2.Cluster.LbSubsetConfig.ANY_ENDPOINT
    assert config.locality_weight_aware
    (selector,) = config.subset_selectors
    assert list(selector.keys) == [REGION_KEY]
    assert selector.fallback_policy == selector.NO_FALLBACK


def test_a_rescuer_serves_an_east_west_listener_to_its_own_replicas_only() -> None:
    policy = policy_of()
    view = hashing(static_views(policy).for_region("eu-west"))
    snapshot = snapshot_for(policy, view, "eu-west")
    listeners = snapshot.resources(TypeUrl.LISTENER)
    # The port of the region's east-west address, beside the gateway listener.
    assert sorted(listeners) == sorted([listener_name(10000), listener_name(15443)])
    listener = listeners[listener_name(15443)].message
    assert isinstance(listener, listener_pb2.Listener)
    assert listener.address.socket_address.port_value == 15443
    assert "lua" not in str(listener)  # the lender derived the key and applied any fallback
    assert EAST_WEST_ROUTE_CONFIG_NAME in str(listener)
    # No cluster of its own: the east-west routes send to the model's cluster, the one the
    # region's users' routes send to, so Envoy counts lent and local requests together.
    assert not any("|" in name for name in snapshot.resources(TypeUrl.CLUSTER))
    east_west = model_routes(snapshot, EAST_WEST_ROUTE_CONFIG_NAME)
    users = model_routes(snapshot, "heliostat_models")
    assert {r.route.cluster for r in east_west} == {MODEL}
    assert {r.route.cluster for r in users if "batch" not in r.name} == {MODEL}
    for route in east_west:
        # ... held to eu-west's own hosts of it: no onward lending of a lent request.
        match = route.route.metadata_match.filter_metadata[SUBSET_NAMESPACE]
        assert dict(match) == {REGION_KEY: "eu-west"}
        # The lender's origin header stays: the replica charges the round trip by it.
        assert ORIGIN_HEADER not in str(route.request_headers_to_add)
        assert [h.header.header_name for h in route.route.hash_policy] == [
            "x-session-id",
            "x-heliostat-prefix-key",
        ]
    for route in users:  # the users' routes match no subset: the whole cluster
        assert not route.route.HasField("metadata_match")
    cluster = cluster_of(snapshot, MODEL)
    assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert cluster.common_lb_config.consistent_hashing_lb_config.hash_balance_factor.value == 100
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    assert_region_subsets(cluster.lb_subset_config)
    # Every endpoint carries its region: eu-west's replicas, the other regions' gateways
    # and us-east's replicas (listed by them: it has no east-west address).
    labels = {
        loc.locality.region: {region_label(e) for e in loc.lb_endpoints}
        for loc in cla(snapshot, MODEL).endpoints
    }
    assert labels == {r: {r} for r in ("eu-west", "us-east", "ap-southeast")}
    (eu,) = (loc for loc in cla(snapshot, MODEL).endpoints if loc.locality.region == "eu-west")
    assert addresses(eu) == ["127.0.0.1:9201", "127.0.0.1:9202", "127.0.0.1:9203"]
    # The gateway's own routes still set the origin to eu-west, for its own users.
    main = snapshot.resources(TypeUrl.ROUTE)["heliostat_models"].message
    assert isinstance(main, route_pb2.RouteConfiguration)
    assert "eu-west" in str(main.virtual_hosts[0].routes[1].request_headers_to_add)


def test_a_least_request_cluster_wraps_its_typed_policy_in_the_typed_subset_policy() -> None:
    """Envoy refuses lb_subset_config beside a typed load_balancing_policy: the subset
    extension holds the least-request policy (full scan or two choices, locality weights)."""
    from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
    from envoy.extensions.load_balancing_policies.subset.v3 import subset_pb2

    policy = policy_of(POLICY.replace("      affinity: {prefix_chars: 200}\n", ""))
    snapshot = snapshot_for(policy, static_views(policy).for_region("eu-west"), "eu-west")
    cluster = cluster_of(snapshot, MODEL)
    assert not cluster.HasField("lb_subset_config")
    (outer,) = cluster.load_balancing_policy.policies
    assert outer.typed_extension_config.name == SUBSET_POLICY
    subset = subset_pb2.Subset()
    assert outer.typed_extension_config.typed_config.Unpack(subset)
    assert subset.fallback_policy == subset_pb2.Subset.ANY_ENDPOINT
    assert subset.locality_weight_aware
    (selector,) = subset.subset_selectors
    assert list(selector.keys) == [REGION_KEY]
    assert selector.fallback_policy == subset_pb2.Subset.LbSubsetSelector.NO_FALLBACK
    (inner,) = subset.subset_lb_policy.policies
    least = least_request_pb2.LeastRequest()
    assert inner.typed_extension_config.typed_config.Unpack(least)
    assert least.locality_lb_config.HasField("locality_weighted_lb_config")


def test_labelled_endpoints_are_protobufs_own_bytes_and_a_memo_follows_the_switch() -> None:
    """The hand-written wire form of a labelled endpoint (two metadata namespaces, in upb's
    map order) is what protobuf writes; a memo that saw the policy without east-west, then
    with, then without again, builds what a fresh memo builds each time."""
    policy = policy_of()
    plain = policy_of(
        POLICY.replace(', east_west: ["127.0.0.1:15443"]', "").replace(
            '{east_west: ["127.0.0.1:15444", "127.0.0.1:15445"]}', "{}"
        )
    )
    memo = Memo()
    for current in (plain, policy, plain, policy):
        view = lending(current)
        kept = snapshot_for(current, view, "ap-southeast", memo=memo, leds=True)
        fresh = snapshot_for(current, view, "ap-southeast", memo=Memo(), leds=True)
        assert kept.version == fresh.version
        expected = {None} if current is plain else {"us-east", "eu-west", "ap-southeast"}
        for resource in kept.resources(TypeUrl.ENDPOINT).values():
            message = resource.message
            assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
            assert resource.packed.value == message.SerializeToString(deterministic=True)
            labelled = {region_label(e) for loc in message.endpoints for e in loc.lb_endpoints}
            assert labelled == expected
        memo.new_round()


def test_a_nodes_announced_port_takes_precedence_and_a_region_without_addresses_has_none() -> None:
    policy = policy_of()
    snapshot = snapshot_for(
        policy, static_views(policy).for_region("eu-west"), "eu-west", east_west_port=17000
    )
    assert listener_name(17000) in snapshot.resources(TypeUrl.LISTENER)
    assert listener_name(15443) not in snapshot.resources(TypeUrl.LISTENER)
    plain = snapshot_for(policy, static_views(policy).for_region("us-east"), "us-east")
    assert list(plain.resources(TypeUrl.LISTENER)) == [listener_name(10000)]
    assert not cluster_of(plain, MODEL).HasField("lb_subset_config")  # no route matches
    # ... unless its gateway announces a port: the listener serves us-east's replicas.
    announced = snapshot_for(
        policy, static_views(policy).for_region("us-east"), "us-east", east_west_port=17001
    )
    assert listener_name(17001) in announced.resources(TypeUrl.LISTENER)
    for route in model_routes(announced, EAST_WEST_ROUTE_CONFIG_NAME):
        assert route.route.cluster == MODEL
        assert dict(route.route.metadata_match.filter_metadata[SUBSET_NAMESPACE]) == {
            REGION_KEY: "us-east"
        }
    assert_region_subsets(cluster_of(announced, MODEL).lb_subset_config)


def test_without_east_west_addresses_lenders_list_the_replicas_as_before() -> None:
    plain_text = POLICY.replace(', east_west: ["127.0.0.1:15443"]', "").replace(
        '{east_west: ["127.0.0.1:15444", "127.0.0.1:15445"]}', "{}"
    )
    policy = policy_of(plain_text)
    snapshot = snapshot_for(policy, lending(policy), "ap-southeast")
    eu = by_region(cla(snapshot, MODEL))["eu-west"]
    assert addresses(eu) == ["127.0.0.1:9201", "127.0.0.1:9202", "127.0.0.1:9203"]
    assert list(snapshot.resources(TypeUrl.LISTENER)) == [listener_name(10000)]
    # ... and nothing of the hop is built: no subsets, no region labels on endpoints.
    for region in ("ap-southeast", "eu-west"):
        each = snapshot_for(policy, static_views(policy).for_region(region), region)
        for cluster in each.resources(TypeUrl.CLUSTER).values():
            assert "subset" not in str(cluster.message)
        for assignment in each.resources(TypeUrl.ENDPOINT).values():
            assert SUBSET_NAMESPACE not in str(assignment.message)


def test_the_leds_form_names_a_collection_holding_the_gateway() -> None:
    policy = policy_of()
    memo = TranslationMemo()
    snapshot = snapshot_for(policy, lending(policy), "ap-southeast", leds=True, memo=memo)
    delta = snapshot.for_delta()
    assignment = delta.resources(TypeUrl.ENDPOINT)[MODEL].message
    assert isinstance(assignment, endpoint_pb2.ClusterLoadAssignment)
    eu = next(loc for loc in assignment.endpoints if loc.locality.region == "eu-west")
    prefix = eu.leds_cluster_locality_config.leds_collection_name.removesuffix("*")
    assert eu.load_balancing_weight.value == 300
    members = {
        name: r.message
        for name, r in delta.resources(TypeUrl.LB_ENDPOINT).items()
        if name.startswith(prefix)
    }
    assert len(members) == 1
    (member,) = members.values()
    assert isinstance(member, endpoint_components_pb2.LbEndpoint)
    assert member.endpoint.address.socket_address.port_value == 15443
    # A second round of the same view: the same resources (the gateway tuple is stable).
    again = snapshot_for(policy, lending(policy), "ap-southeast", leds=True, memo=memo)
    assert again.version == snapshot.version


def test_version_clusters_keep_the_replicas() -> None:
    text = POLICY.replace("region: us-east}", "region: us-east, version: v2}")
    text = text.replace("region: eu-west}", "region: eu-west, version: v2}")
    text = text.replace("region: ap-southeast}", "region: ap-southeast, version: v2}")
    text = text.replace(
        "      affinity: {prefix_chars: 200}\n",
        "      affinity: {prefix_chars: 200}\n      versions: {v2: 100}\n",
    )
    policy = policy_of(text)
    snapshot = snapshot_for(policy, lending(policy), "ap-southeast")
    version = by_region(cla(snapshot, MODEL + "@v2"))
    assert len(addresses(version["eu-west"])) == 3  # the east-west routes pick no version


def test_a_region_whose_locality_lists_no_replica_gets_no_east_west_route() -> None:
    """A lent request for a model the rescuer's own locality does not list finds no route
    (404), never the model's cluster without a subset (its other regions)."""
    policy = policy_of()
    view = static_views(policy).for_region("eu-west")
    clusters = tuple(
        dataclasses.replace(
            c,
            localities=tuple(
                dataclasses.replace(loc, endpoints=()) if loc.region == "eu-west" else loc
                for loc in c.localities
            ),
        )
        for c in view.clusters
    )
    snapshot = snapshot_for(policy, dataclasses.replace(view, clusters=clusters), "eu-west")
    assert listener_name(15443) not in snapshot.resources(TypeUrl.LISTENER)
    assert not cluster_of(snapshot, MODEL).HasField("lb_subset_config")
