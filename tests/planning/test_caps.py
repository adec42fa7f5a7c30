"""A region's in-flight cap split over the clusters derived from its view (`planning.caps`):
every Envoy cluster has its own circuit breaker, so the caps of the clusters one gateway
routes a model's interactive requests to add up to the region's per-gateway cap (plus at
most one per cluster for rounding up), a version's cap follows its own slots, and nothing
is capped while the region is not."""

from __future__ import annotations

import dataclasses

import pytest

from heliostat.balance import ClusterView, InFlight, RegionView, TrafficClass, static_views
from heliostat.planning import caps
from heliostat.planning.plan import Plan, plan
from heliostat.policy import Policy, parse_policy

POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: caps}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80}}
    eu-west: {}
  tenants:
    - {name: acme, header: x-tenant, value: acme, regions: [us-east]}
    - {name: zeta, header: x-tenant, value: zeta, regions: [us-east, eu-west]}
    - {name: elsewhere, header: x-tenant, value: far, regions: [eu-west]}
  models:
    - name: m
      versions: {v1: 50, v2: 50}
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east, version: v1, slots: 4}
        - {address: 127.0.0.1:9102, region: us-east, version: v1, slots: 4}
        - {address: 127.0.0.1:9103, region: us-east, version: v2, slots: 2}
        - {address: 127.0.0.1:9201, region: eu-west, version: v1, slots: 4}
        - {address: 127.0.0.1:9202, region: eu-west, version: v2, slots: 4}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY, "caps.yaml")


def capped(policy: Policy, cap: int | None, info: InFlight | None, region: str) -> RegionView:
    """The static view of `region` with the law's cap on its interactive cluster, and a
    batch cluster of its own (the law's views have one)."""
    view = static_views(policy).for_region(region)
    interactive = tuple(
        dataclasses.replace(c, max_requests=cap, in_flight=info) for c in view.clusters
    )
    batch = tuple(
        dataclasses.replace(c, name=f"{c.name}.batch", traffic_class=TrafficClass.BATCH)
        for c in view.clusters
    )
    return dataclasses.replace(view, clusters=interactive + batch)


def routed_caps(traffic: Plan, tenant: str | None) -> dict[str, int | None]:
    """The caps of the clusters the interactive requests of `tenant` are routed to."""
    (model_plan,) = traffic.models
    target = model_plan.targets[tenant, TrafficClass.INTERACTIVE]
    return {name: traffic.clusters[name][0].max_requests for name, _ in target.clusters}


def test_each_version_gets_its_own_slots_and_the_backlog_by_its_traffic_share() -> None:
    """v1 has 8 of the region's 10 slots, v2 2, split 50/50: the region's cap of 14 (10
    slots and a backlog of 4, one gateway) is 8 + 2 for v1 and 2 + 2 for v2, not 14 each
    (v2 would queue 14 requests on its 2 slots, 12 of them past the SLO)."""
    view = ClusterView("m", "m", (), max_requests=14, in_flight=InFlight(1, (("v1", 8), ("v2", 2))))
    split = caps.split(view, [None], {"v1": 5000, "v2": 5000})
    assert split == {(None, "v1"): 10, (None, "v2"): 4}
    # Two gateways: the slots over both, the per-gateway backlog (7 - 10 / 2 = 2) shared.
    halves = dataclasses.replace(view, max_requests=7, in_flight=InFlight(2, view.in_flight.slots))  # type: ignore[union-attr]
    assert caps.split(halves, [None], {"v1": 5000, "v2": 5000}) == {
        (None, "v1"): 5,
        (None, "v2"): 2,
    }


def test_a_version_without_live_slots_in_the_region_is_not_capped_by_it() -> None:
    view = ClusterView("m", "m", (), max_requests=9, in_flight=InFlight(1, (("v1", 8),)))
    assert caps.split(view, [None], {"v1": 9000, "v2": 1000}) == {
        (None, "v1"): 9,  # 8 slots and the whole backlog's share it gets (0.9 of 1)
        (None, "v2"): None,  # its requests fail over to other regions' replicas
    }


def test_a_cluster_holding_slots_keeps_at_least_one_request() -> None:
    """Envoy refuses every request of a cluster whose max_requests is 0: each cluster with
    live slots keeps one, the only way the sum may pass the cap (by one per cluster)."""
    view = ClusterView("m", "m", (), max_requests=2, in_flight=InFlight(1, ((None, 2),)))
    split = caps.split(view, [None, "a", "b"], {})
    assert split == {(None, None): 1, ("a", None): 1, ("b", None): 1}
    assert sum(v for v in split.values() if v) <= 2 + len(split)


def test_the_clusters_a_gateway_routes_to_add_up_to_the_regions_cap(policy: Policy) -> None:
    """us-east's gateways route a model's interactive requests to the generic version
    clusters and to those of acme and zeta (both pinned to regions holding us-east): their
    caps add up to the law's 13, where each used to carry all 13 (six clusters: 78 on
    us-east's 10 slots). `elsewhere`'s clusters hold none of us-east's replicas: uncapped."""
    info = InFlight(1, (("v1", 8), ("v2", 2)))
    traffic = plan(policy, capped(policy, 13, info, "us-east"))
    routed = {t: routed_caps(traffic, t) for t in (None, "acme", "zeta")}
    values = [cap for by_cluster in routed.values() for cap in by_cluster.values()]
    assert all(cap is not None and cap >= 1 for cap in values)
    assert sum(values) <= 13 + len(values)  # type: ignore[arg-type]
    assert sum(values) >= 13 - 1  # type: ignore[arg-type]
    # The tenants split it equally (the law measures no per-tenant demand), versions by slots.
    for by_cluster in routed.values():
        v1, v2 = by_cluster.values()
        assert v1 is not None and v2 is not None and v1 > v2
    assert set(routed_caps(traffic, "elsewhere").values()) == {None}
    # The batch clusters stay uncapped: the law caps the interactive class only.
    (model_plan,) = traffic.models
    for name, _ in model_plan.targets[None, TrafficClass.BATCH].clusters:
        assert traffic.clusters[name][0].max_requests is None


def test_without_versions_or_tenants_the_laws_cluster_keeps_the_whole_cap() -> None:
    plain = parse_policy(
        POLICY.split("  tenants:")[0]
        + "  models:\n    - name: m\n      endpoints:\n"
        + "        - {address: 127.0.0.1:9101, region: us-east, slots: 4}\n",
        "plain.yaml",
    )
    traffic = plan(plain, capped(plain, 6, InFlight(1, ((None, 4),)), "us-east"))
    assert routed_caps(traffic, None) == {"m": 6}


def test_nothing_is_capped_while_the_region_is_not(policy: Policy) -> None:
    traffic = plan(policy, capped(policy, None, None, "us-east"))
    assert {view.max_requests for view, _ in traffic.clusters.values()} == {None}
    view = ClusterView("m", "m", ())
    assert caps.split(view, [None, "acme"], {"v1": 5000, "v2": 5000}) == {}
