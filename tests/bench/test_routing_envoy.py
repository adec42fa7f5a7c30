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
from bench.routing_envoy import (
    STATIC_POLICIES,
    endpoint_cluster,
    failover_cluster,
    static_bootstrap,
    validate,
)
from bench.routing_picker import PICKED_ENDPOINT_HEADER
from heliostat.lab.mesh import mesh_document
from heliostat.policy import Model, parse_policy
from heliostat.xds.translate.affinity import PREFIX_KEY_HEADER
from heliostat.xds.translate.prefix_key import LUA_FILTER_NAME, SOURCE
from heliostat.xds.translate.routes import ORIGIN_HEADER

REPLICAS = {
    "us-east": ["127.0.0.1:9101", "127.0.0.1:9102"],
    "eu-west": ["127.0.0.1:9201"],
    "ap-southeast": ["127.0.0.1:9301"],
}
PORTS = {"round_robin": 20001, "least_request": 20002, "ring_hash": 20003, "picker": 20004}


def model(**overrides: Any) -> Model:
    document = mesh_document(
        10000,
        REPLICAS,
        slots=4,
        speed=1.0,
        model_overrides={**fleet.model_overrides(), **overrides},
    )
    return parse_policy(yaml.safe_dump(document)).spec.models[0]


def bootstrap(region: str = "ap-southeast") -> dict[str, Any]:
    return static_bootstrap(region, PORTS, 20000, REPLICAS, fleet.rtt_ms, model())


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
    assert headers == [
        {
            "header": {"key": ORIGIN_HEADER, "value": "eu-west"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def test_failover_cluster_orders_localities_by_rtt_from_the_gateway() -> None:
    built = failover_cluster(
        "least_request", "LEAST_REQUEST", "ap-southeast", REPLICAS, fleet.rtt_ms
    )
    localities = built["load_assignment"]["endpoints"]
    assert [(x["locality"]["region"], x["priority"]) for x in localities] == [
        ("ap-southeast", 0),
        ("eu-west", 1),  # 160 ms
        ("us-east", 2),  # 210 ms
    ]
    addresses = [
        f"{e['endpoint']['address']['socket_address']['address']}:"
        f"{e['endpoint']['address']['socket_address']['port_value']}"
        for x in localities
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
    for policy in ("round_robin", "least_request", "picker"):
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


def test_ring_hash_needs_a_model_with_a_prefix_key() -> None:
    plain = model(affinity={"bounded_load": 1.5})
    with pytest.raises(ValueError, match="prefix_chars"):
        static_bootstrap("us-east", {"ring_hash": 1}, 2, REPLICAS, fleet.rtt_ms, plain)


def test_unknown_policies_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="maglev"):
        static_bootstrap("us-east", {"maglev": 1}, 2, REPLICAS, fleet.rtt_ms, model())


@pytest.mark.envoy
def test_envoy_accepts_every_regions_bootstrap(tmp_path: Path) -> None:
    for region in REPLICAS:
        assert validate(bootstrap(region), tmp_path / f"{region}.json") == "", region


@pytest.mark.envoy
def test_envoy_validation_reports_a_broken_bootstrap(tmp_path: Path) -> None:
    config = bootstrap()
    config["static_resources"]["clusters"][0]["lb_policy"] = "NOT_A_POLICY"
    assert "NOT_A_POLICY" in validate(config, tmp_path / "broken.json")
