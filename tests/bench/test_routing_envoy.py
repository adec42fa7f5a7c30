"""The static gateways' bootstraps: what each compared policy tells Envoy.

Built without sockets; one test asks Envoy itself (`--mode validate`, nothing is bound) to
accept them, and the smoke test (`test_routing.py`) proves it by sending traffic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import routing_fleet as fleet
from bench.routing import SCENARIOS
from bench.routing_envoy import (
    LOAD_AWARE_LOCALITY,
    STATIC_POLICIES,
    endpoint_cluster,
    failover_cluster,
    orca_cluster,
    static_bootstrap,
)
from bench.routing_picker import PICKED_ENDPOINT_HEADER
from bench.scenario import load_scenario
from heliostat.lab.mesh import mesh_document
from heliostat.lab.processes import validate_bootstrap as validate
from heliostat.policy import Model, parse_policy
from heliostat.sim.orca import FORMAT_HEADER
from heliostat.wire import LUA_FILTER_NAME, ORIGIN_HEADER, PREFIX_KEY_HEADER
from heliostat.xds.translate.prefix_key import SOURCE

REPLICAS = {
    "us-east": ["127.0.0.1:9101", "127.0.0.1:9102"],
    "eu-west": ["127.0.0.1:9201"],
    "ap-southeast": ["127.0.0.1:9301"],
}
PORTS = {
    "round_robin": 20001,
    "least_request": 20002,
    "ring_hash": 20003,
    "envoy_orca": 20004,
    "picker": 20005,
}
CHAT = load_scenario(SCENARIOS / "chat.yaml")
EDGE = load_scenario(SCENARIOS / "edge_pop.yaml")
EDGE_REPLICAS = {**REPLICAS, "sa-east": []}


def model(**overrides: Any) -> Model:
    document = mesh_document(
        10000,
        REPLICAS,
        slots=4,
        speed=1.0,
        model_overrides={**fleet.model_overrides(CHAT), **overrides},
    )
    return parse_policy(yaml.safe_dump(document)).spec.models[0]


def bootstrap(region: str = "ap-southeast") -> dict[str, Any]:
    return static_bootstrap(
        region, PORTS, 20000, REPLICAS, CHAT.rtt_ms, model(), CHAT.within_budget
    )


def edge_bootstrap(region: str = "sa-east") -> dict[str, Any]:
    return static_bootstrap(
        region, PORTS, 20000, EDGE_REPLICAS, EDGE.rtt_ms, model(), EDGE.within_budget
    )


def localities(cluster_: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (x["locality"]["region"], x["priority"]) for x in cluster_["load_assignment"]["endpoints"]
    ]


def listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in config["static_resources"]["listeners"] if x["name"] == name)


def manager(config: dict[str, Any], name: str) -> dict[str, Any]:
    chain = listener(config, name)["filter_chains"][0]
    return dict(chain["filters"][0]["typed_config"])


def route(config: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(manager(config, name)["route_config"]["virtual_hosts"][0]["routes"][0])


def cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in config["static_resources"]["clusters"] if c["name"] == name)


def test_one_listener_per_policy_on_its_port() -> None:
    config = bootstrap()
    for policy, port in PORTS.items():
        address = listener(config, policy)["address"]["socket_address"]
        assert address == {"address": "127.0.0.1", "port_value": port}
    assert config["admin"]["address"]["socket_address"]["port_value"] == 20000


@pytest.mark.parametrize("policy", STATIC_POLICIES)
def test_every_route_names_the_gateways_region_as_heliostat_does(policy: str) -> None:
    headers = route(bootstrap("eu-west"), policy)["request_headers_to_add"]
    assert headers[0] == {
        "header": {"key": ORIGIN_HEADER, "value": "eu-west"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    asked = {h["header"]["key"]: h["header"]["value"] for h in headers[1:]}
    # only envoy_orca asks the replicas for their load, as vLLM wants to be asked
    assert asked == ({FORMAT_HEADER: "TEXT"} if policy == "envoy_orca" else {})


def test_failover_cluster_orders_localities_by_rtt_from_the_gateway() -> None:
    built = failover_cluster(
        "least_request", "LEAST_REQUEST", "ap-southeast", REPLICAS, CHAT.rtt_ms
    )
    assert localities(built) == [
        ("ap-southeast", 0),
        ("eu-west", 1),  # 160 ms
        ("us-east", 2),  # 210 ms
    ]
    addresses = [
        f"{e['endpoint']['address']['socket_address']['address']}:"
        f"{e['endpoint']['address']['socket_address']['port_value']}"
        for x in built["load_assignment"]["endpoints"]
        for e in x["lb_endpoints"]
    ]
    assert sorted(addresses) == sorted(a for v in REPLICAS.values() for a in v)
    assert built["lb_policy"] == "LEAST_REQUEST"
    assert "http_protocol_options" in str(built["typed_extension_protocol_options"])


@pytest.mark.parametrize(
    ("policy", "lb"),
    [
        ("round_robin", "ROUND_ROBIN"),
        ("least_request", "LEAST_REQUEST"),
        ("ring_hash", "RING_HASH"),
    ],
)
def test_each_static_policy_has_its_lb_policy(policy: str, lb: str) -> None:
    config = bootstrap()
    assert cluster(config, policy)["lb_policy"] == lb
    assert route(config, policy)["route"]["cluster"] == policy


def test_ring_hash_hashes_on_heliostats_prefix_key_without_bounded_load() -> None:
    config = bootstrap()
    built = cluster(config, "ring_hash")
    assert "common_lb_config" not in built  # no hash_balance_factor: plain consistent hashing
    action = route(config, "ring_hash")["route"]
    assert action["hash_policy"] == [
        {"header": {"header_name": "x-session-id"}},
        {"header": {"header_name": PREFIX_KEY_HEADER}},
    ]
    settings = route(config, "ring_hash")["metadata"]["filter_metadata"][LUA_FILTER_NAME]
    assert settings["prefix_chars"] == fleet.PREFIX_CHARS
    assert settings["key_header"] == PREFIX_KEY_HEADER
    filters = manager(config, "ring_hash")["http_filters"]
    assert filters[0]["name"] == LUA_FILTER_NAME
    assert filters[0]["typed_config"]["default_source_code"]["inline_string"] == SOURCE
    assert filters[-1]["name"] == "envoy.filters.http.router"


def test_only_the_ring_hash_listener_runs_the_lua_program() -> None:
    config = bootstrap()
    for policy in ("round_robin", "least_request", "envoy_orca", "picker"):
        names = [f["name"] for f in manager(config, policy)["http_filters"]]
        assert names == ["envoy.filters.http.router"], policy


def test_picker_route_takes_its_cluster_from_the_pickers_header() -> None:
    config = bootstrap()
    action = route(config, "picker")["route"]
    assert action["cluster_header"] == PICKED_ENDPOINT_HEADER
    for addresses in REPLICAS.values():
        for address in addresses:
            assert cluster(config, address) == endpoint_cluster(address)


def test_requests_are_never_timed_out_and_buffers_fit_long_prompts() -> None:
    config = bootstrap()
    for policy in STATIC_POLICIES:
        assert route(config, policy)["route"]["timeout"] == "0s"
        assert listener(config, policy)["per_connection_buffer_limit_bytes"] >= 1 << 20


def test_envoy_orca_weighs_the_regions_within_budget_by_load_and_fails_over_beyond() -> None:
    built = cluster(bootstrap("eu-west"), "envoy_orca")
    # load_aware_locality looks at priority 0 only: the regions within 170 ms, own first
    assert localities(built) == [("eu-west", 0), ("us-east", 0), ("ap-southeast", 0)]
    assert localities(cluster(bootstrap("us-east"), "envoy_orca")) == [
        ("us-east", 0),
        ("eu-west", 0),
        ("ap-southeast", 1),  # 210 ms: beyond the budget, failover only
    ]
    assert "lb_policy" not in built
    policy = built["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert policy["name"] == LOAD_AWARE_LOCALITY
    child = policy["typed_config"]["endpoint_picking_policy"]["policies"][0]
    assert child["typed_extension_config"]["name"].endswith("least_request")


def test_an_edge_gateway_has_no_locality_of_its_own() -> None:
    config = edge_bootstrap()
    assert localities(cluster(config, "least_request")) == [
        ("us-east", 0),  # 120 ms
        ("eu-west", 1),  # 190 ms
        ("ap-southeast", 2),  # 320 ms
    ]
    assert localities(cluster(config, "envoy_orca")) == [
        ("us-east", 0),
        ("eu-west", 1),
        ("ap-southeast", 2),
    ]
    assert config["node"]["locality"] == {"region": "sa-east"}
    # and a GPU region's gateway never lists the edge region, which has no replicas
    assert "sa-east" not in str(localities(cluster(edge_bootstrap("us-east"), "round_robin")))


def test_with_no_region_within_budget_the_nearest_is_envoy_orcas_priority_0() -> None:
    built = orca_cluster("o", "sa-east", EDGE_REPLICAS, EDGE.rtt_ms, lambda _: ["sa-east"])
    assert localities(built)[0] == ("us-east", 0)


def test_ring_hash_needs_a_model_with_a_prefix_key() -> None:
    plain = model(affinity={"bounded_load": 1.5})
    with pytest.raises(ValueError, match="prefix_chars"):
        static_bootstrap("us-east", {"ring_hash": 1}, 2, REPLICAS, CHAT.rtt_ms, plain)


def test_unknown_policies_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="maglev"):
        static_bootstrap("us-east", {"maglev": 1}, 2, REPLICAS, CHAT.rtt_ms, model())


@pytest.mark.envoy
def test_envoy_accepts_every_regions_bootstrap(tmp_path: Path) -> None:
    for region in REPLICAS:
        assert validate(bootstrap(region), tmp_path / f"{region}.json") == "", region
    for region in EDGE_REPLICAS:
        assert validate(edge_bootstrap(region), tmp_path / f"e-{region}.json") == "", region


@pytest.mark.envoy
def test_envoy_validation_reports_a_broken_bootstrap(tmp_path: Path) -> None:
    config = bootstrap()
    config["static_resources"]["clusters"][0]["lb_policy"] = "NOT_A_POLICY"
    assert "NOT_A_POLICY" in validate(config, tmp_path / "broken.json")
