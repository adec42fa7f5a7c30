"""Smoke test: the routing benchmark runs end to end at its tiny size, through real Envoys.

It proves every policy's gateways accept their configuration and carry requests, and that
the result has the shape the report reads. It asserts no timing (benchmarks report).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import routing
from bench.routing_measure import FIELDS
from bench.routing_workloads import WORKLOADS

pytestmark = pytest.mark.envoy

RATES = ("slo_attainment", "prefix_hit_rate", "cross_region_share")


def test_every_workload_and_policy_is_measured_at_tiny_size(tmp_path: Path) -> None:
    result = routing.run("tiny", tmp_path)

    assert set(result["workloads"]) == set(WORKLOADS)
    for workload, by_policy in result["workloads"].items():
        assert set(by_policy) == set(routing.POLICIES), workload
        for policy, entry in by_policy.items():
            where = f"{workload}/{policy}"
            assert set(entry) == set(FIELDS), where
            for field in FIELDS:
                value = entry[field]
                assert isinstance(value, int | float) and not isinstance(value, bool), where
            assert entry["requests"] > 0, where
            assert entry["errors"] <= max(1, entry["requests"] // 10), (where, entry)
            for rate in RATES:
                assert 0.0 <= entry[rate] <= 1.0, (where, rate, entry[rate])
            assert entry["throughput_rps"] > 0, where
    # Same work for every policy: the same number of requests per workload.
    for by_policy in result["workloads"].values():
        assert len({entry["requests"] for entry in by_policy.values()}) == 1
    # The picker really picked (its decisions are the requests it routed).
    for workload, by_policy in result["details"].items():
        assert (
            by_policy["picker"]["picker"]["decisions"]
            == (result["workloads"][workload]["picker"]["requests"])
        )
    assert result["setup"]["fleet"]["slo_ttft_ms"] > 0
    text = routing.summary(result)
    for workload in WORKLOADS:
        assert workload in text
