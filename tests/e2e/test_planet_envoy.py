"""The planet's model of Envoy against a real Envoy, on the same views.

A real `heliostat serve` (simulated replicas, a small policy) publishes views with the
features the planet models: priorities spilled by the overprovisioning factor (two of a
region's five replicas have no metrics and go UNHEALTHY, one is drained), unequal endpoint
weights (a second model whose stale replica gets the neutral weight 50 next to two at 100)
and locality weights with availability (a gateway of a region the policy does not know
gets the neutral view: every region at priority 0, weighted by its endpoints). Each view is
read back from /debug/state and handed to the planet's `Balancer`; requests sent one at a
time through the real Envoys must split over endpoints and localities as the model says,
within a few points.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.planet.envoy import Balancer, LbConfig
from tests.e2e.harness import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    SimFleet,
    free_port,
    http_get,
    request,
    wait_until,
    write_policy,
)

pytestmark = pytest.mark.envoy

REQUESTS = 600
POINTS = 0.06  # per endpoint and per locality, absolute (binomial sd <= 2 points)
RTT = {"us-east": {"eu-west": 80, "ap-southeast": 210}, "eu-west": {"ap-southeast": 160}}


def _endpoint(address: str, region: str) -> dict[str, Any]:
    return {
        "address": address,
        "region": region,
        "slots": 8,
        "sim": {"max_num_seqs": 8, "speed": 20.0},
    }


def _policy(
    main: dict[str, list[str]], second: dict[str, list[str]], drained: str
) -> dict[str, Any]:
    common = {
        "engine": "vllm",
        "slo": {"ttft_ms": 800, "network_budget_ms": 150},
        "signals": {"interval": "500ms", "timeout": "250ms", "stale_after": "1500ms"},
    }
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": "planet-envoy"},
        "spec": {
            "regions": {
                "us-east": {"rtt_ms": RTT["us-east"]},
                "eu-west": {"rtt_ms": RTT["eu-west"]},
                "ap-southeast": {},
            },
            "gateway": {"port": free_port(), "address": LOCALHOST},
            "models": [
                {
                    "name": "llama-70b",
                    **common,
                    "thresholds": {"failures": 2},
                    "drain": {"endpoints": [drained]},
                    "endpoints": [
                        _endpoint(a, r) for r, addresses in main.items() for a in addresses
                    ],
                },
                {
                    # Failures never reach the threshold: a replica without metrics goes stale
                    # (neutral weight 50) and stays HEALTHY.
                    "name": "llama-8b",
                    **common,
                    "thresholds": {"failures": 1000},
                    "endpoints": [
                        _endpoint(a, r) for r, addresses in second.items() for a in addresses
                    ],
                },
            ],
        },
    }


def _cluster(state: dict[str, Any], view: str | None, name: str) -> ClusterView:
    """The cluster as heliostat published it to a view, rebuilt from /debug/state."""
    views = state["views"]
    entry = views["neutral"][name] if view is None else views["regions"][view][name]
    localities: dict[tuple[str, int], list[tuple[EndpointView, int | None]]] = {}
    for e in entry["endpoints"]:
        endpoint = EndpointView(
            e["address"], e["region"], e["version"], e["weight"], Health(e["health"])
        )
        localities.setdefault((e["region"], e["priority"]), []).append(
            (endpoint, e["locality_weight"])
        )
    return ClusterView(
        name=name,
        model=entry["model"],
        localities=tuple(
            LocalityView(region, priority, tuple(e for e, _ in members), members[0][1])
            for (region, priority), members in localities.items()
        ),
    )


def _sent(port: int, model: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(REQUESTS):
        reply = request(port, model=model, body={"model": model, "prompt": "hi", "max_tokens": 1})
        assert reply.status == 200, reply.body
        seen[reply.headers["x-replica-id"]] += 1
    return seen


def _compare(cluster: ClusterView, seen: Counter[str]) -> None:
    expected = Balancer.of_view(cluster, LbConfig()).split({})
    observed = {a: n / REQUESTS for a, n in seen.items()}
    for address in set(expected) | set(observed):
        assert observed.get(address, 0.0) == pytest.approx(
            expected.get(address, 0.0), abs=POINTS
        ), (
            address,
            observed,
            expected,
        )
    region_of = {e.address: loc.region for loc in cluster.localities for e in loc.endpoints}
    by_region_expected: Counter[str] = Counter()
    by_region_observed: Counter[str] = Counter()
    for address, share in expected.items():
        by_region_expected[region_of[address]] += share  # type: ignore[assignment]
    for address, share in observed.items():
        by_region_observed[region_of[address]] += share  # type: ignore[assignment]
    for region in set(by_region_expected) | set(by_region_observed):
        assert by_region_observed[region] == pytest.approx(by_region_expected[region], abs=POINTS)


def test_the_planet_splits_traffic_as_real_envoy_does(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = lambda: f"{LOCALHOST}:{free_port()}"  # noqa: E731
    main = {
        "us-east": [port() for _ in range(5)],
        "eu-west": [port(), port()],
        "ap-southeast": [port()],
    }
    second = {"us-east": [port() for _ in range(3)], "eu-west": [port()]}
    silent = [main["us-east"][2], main["us-east"][3], second["us-east"][2]]
    drained = main["us-east"][4]
    policy = tmp_path / "policy.yaml"
    write_policy(policy, _policy(main, second, drained))

    fleet = SimFleet(policy, tmp_path, speed=None)
    processes.append(fleet)
    fleet.start()
    for address in silent:
        fleet.fault(address, kind="no_metrics")
    heliostat = Heliostat(policy, tmp_path)
    processes.append(heliostat)
    heliostat.start()
    gateways = {}
    for node, region in (("gw-us", "us-east"), ("gw-zz", "zz-nowhere")):
        listener = free_port()
        envoy = Envoy(
            tmp_path, heliostat, node_id=node, region=region, delta=False, listener_port=listener
        )
        processes.append(envoy)
        envoy.start()
        gateways[region] = (envoy, listener)

    def settled() -> bool:
        state = heliostat.state()
        us = {
            e["address"]: e for e in state["views"]["regions"]["us-east"]["llama-70b"]["endpoints"]
        }
        second_us = {
            e["address"]: e for e in state["views"]["regions"]["us-east"]["llama-8b"]["endpoints"]
        }
        envoy = gateways["us-east"][0]
        hosts = envoy.hosts("llama-70b")
        return (
            all(us[a]["health"] == "UNHEALTHY" for a in silent[:2])
            and us[drained]["health"] == "DRAINING"
            and second_us[silent[2]]["weight"] == 50
            and all("failed_eds_health" in hosts[a].get("health_flags", "") for a in silent[:2])
            and envoy.hosts("llama-8b")[silent[2]].get("weight") == "50"
        )

    wait_until(
        settled,
        timeout=30,
        interval=0.2,
        message="views with unhealthy, drained and stale endpoints",
    )
    state = heliostat.state()

    # Priorities: 2 healthy of 4 counted (the drained one is excluded) -> 140 * 2 / 4 = 70%
    # stays at us-east, 30% goes to eu-west (in budget), nothing to ap-southeast.
    us_cluster = _cluster(state, "us-east", "llama-70b")
    assert sum(
        v for k, v in Balancer.of_view(us_cluster).split({}).items() if k in main["eu-west"]
    ) == pytest.approx(0.3)
    _compare(us_cluster, _sent(gateways["us-east"][1], "llama-70b"))
    # Unequal weights (100, 100, 50): in proportion.
    _compare(_cluster(state, "us-east", "llama-8b"), _sent(gateways["us-east"][1], "llama-8b"))
    # The neutral view: localities weighted by their endpoints and their availability.
    _compare(_cluster(state, None, "llama-70b"), _sent(gateways["zz-nowhere"][1], "llama-70b"))

    # serve also exports the scaling signals.
    _, metrics = http_get(heliostat.url("/metrics"))
    assert 'heliostat_desired_replicas{model="llama-70b",region="us-east"}' in metrics
