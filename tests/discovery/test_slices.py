"""The pure mapping from EndpointSlices to a model's endpoints."""

from __future__ import annotations

import random

from heliostat.discovery.slices import endpoints_from_slices
from heliostat.policy.selector import KubernetesSelector
from tests.discovery.shapes import endpoint, endpoint_slice

REGIONS = {"us-east", "eu-west"}
SELECTOR = KubernetesSelector()


def addresses(found: object) -> list[str]:
    return [e.address for e in found.endpoints]  # type: ignore[attr-defined]


def test_conditions_map_to_serving_draining_and_left_out() -> None:
    found = endpoints_from_slices(
        [
            endpoint_slice(
                "a",
                [
                    endpoint("10.0.0.1"),  # ready
                    endpoint("10.0.0.2", ready=None),  # unknown reads as ready
                    endpoint("10.0.0.3", ready=False),  # starting: not yet in rotation
                    endpoint("10.0.0.4", ready=False, serving=True, terminating=True),
                    endpoint("10.0.0.5", ready=False, serving=False, terminating=True),
                    endpoint("10.0.0.6", ready=False, terminating=True),  # serving unknown: no
                ],
            )
        ],
        SELECTOR,
        REGIONS,
    )
    assert addresses(found) == ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.4:8000"]
    assert found.draining == {"10.0.0.4:8000"}
    assert {e.region for e in found.endpoints} == {"us-east"}


def test_region_and_version_come_from_labels_else_the_selector() -> None:
    slices = [
        endpoint_slice("eu", [endpoint("10.1.0.1")], region="eu-west", version="v2"),
        endpoint_slice("bare", [endpoint("10.2.0.1")], region=None),
    ]
    without = endpoints_from_slices(slices, SELECTOR, REGIONS)
    assert addresses(without) == ["10.1.0.1:8000"]
    assert without.endpoints[0].version == "v2"
    assert any("no topology.kubernetes.io/region label" in s for s in without.skipped)
    fallback = KubernetesSelector(region="us-east", slots=16)
    found = endpoints_from_slices(slices, fallback, REGIONS)
    assert [(e.address, e.region, e.slots) for e in found.endpoints] == [
        ("10.1.0.1:8000", "eu-west", 16),
        ("10.2.0.1:8000", "us-east", 16),
    ]
    custom = KubernetesSelector(region_label="example.com/site")
    site = endpoint_slice("site", [endpoint("10.3.0.1")], region=None)
    site["metadata"]["labels"]["example.com/site"] = "eu-west"
    assert addresses(endpoints_from_slices([site], custom, REGIONS)) == ["10.3.0.1:8000"]


def test_unknown_region_fqdn_and_ambiguous_ports_are_skipped_with_a_reason() -> None:
    slices = [
        endpoint_slice("mars", [endpoint("10.0.0.1")], region="mars"),
        endpoint_slice("dns", [endpoint("db.example")], address_type="FQDN"),
        endpoint_slice(
            "two",
            [endpoint("10.0.0.2")],
            ports=[{"name": "http", "port": 8000}, {"name": "metrics", "port": 9000}],
        ),
        endpoint_slice("none", [endpoint("10.0.0.3")], ports=[{"name": "http"}]),
    ]
    found = endpoints_from_slices(slices, SELECTOR, REGIONS)
    assert found.endpoints == ()
    assert [s.split(":")[0] for s in found.skipped] == [
        "EndpointSlice inference/mars",
        "EndpointSlice inference/dns",
        "EndpointSlice inference/two",
        "EndpointSlice inference/none",
    ]
    assert "region 'mars' is not in spec.regions" in found.skipped[0]
    named = endpoints_from_slices(slices[2:3], KubernetesSelector(port="metrics"), REGIONS)
    assert addresses(named) == ["10.0.0.2:9000"]
    numbered = endpoints_from_slices(slices[2:3], KubernetesSelector(port=8000), REGIONS)
    assert addresses(numbered) == ["10.0.0.2:8000"]
    assert (
        "no port 'grpc'"
        in endpoints_from_slices(slices[2:3], KubernetesSelector(port="grpc"), REGIONS).skipped[0]
    )


def test_ipv6_is_bracketed_and_canonical() -> None:
    found = endpoints_from_slices(
        [endpoint_slice("v6", [endpoint("2001:DB8::0001")], address_type="IPv6")],
        SELECTOR,
        REGIONS,
    )
    assert addresses(found) == ["[2001:db8::1]:8000"]


def test_a_replica_in_two_slices_is_one_endpoint_in_rotation_if_either_says_so() -> None:
    draining = endpoint("10.0.0.1", ready=False, serving=True, terminating=True)
    slices = [
        endpoint_slice("old", [draining]),
        endpoint_slice("new", [endpoint("10.0.0.1")]),
    ]
    for order in (slices, slices[::-1]):
        found = endpoints_from_slices(order, SELECTOR, REGIONS)
        assert addresses(found) == ["10.0.0.1:8000"]
        assert found.draining == frozenset()


def test_the_result_does_not_depend_on_the_order_slices_and_endpoints_arrive() -> None:
    slices = [
        endpoint_slice(
            f"s{n}",
            [endpoint(f"10.0.{n}.{i}") for i in range(1, 6)],
            region=("us-east", "eu-west")[n % 2],
        )
        for n in range(6)
    ]
    reference = endpoints_from_slices(slices, SELECTOR, REGIONS)
    generator = random.Random(7)
    for _ in range(20):
        shuffled = [dict(s, endpoints=generator.sample(s["endpoints"], 5)) for s in slices]
        generator.shuffle(shuffled)
        assert endpoints_from_slices(shuffled, SELECTOR, REGIONS) == reference
    assert len(reference.endpoints) == 30
