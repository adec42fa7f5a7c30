"""What one (workload, policy) run measured, from the client's records and the replicas' stats.

The client (the load generator) knows each request's status, TTFT (first streamed content
byte), which replica answered and in which region (response headers `x-replica-id`,
`x-replica-region`); the replicas (`/sim/stats`, reset before every run) know their prefix
cache: prompt tokens looked up and found. Nothing is taken from the router under test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from bench.common import percentile
from heliostat.sim.loadgen import Report

FIELDS = (
    "requests",
    "errors",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "slo_attainment",
    "prefix_hit_rate",
    "cross_region_share",
    "throughput_rps",
)


def measure(
    report: Report, replica_stats: Mapping[str, Mapping[str, Any]], slo_ttft_ms: float
) -> dict[str, float | int]:
    """The benchmark's eight figures for one run.

    - errors: non-200 answers and transport errors (timeouts included);
    - ttft percentiles over the successful requests;
    - slo_attainment: share of ALL requests with a TTFT within the SLO (errors miss it);
    - prefix_hit_rate: prompt tokens found in the replicas' prefix caches / looked up;
    - cross_region_share: successful requests served outside their gateway's region;
    - throughput_rps: successful requests / wall time (first send to last answer).
    """
    results = report.results
    ok = [r for r in results if r.ok]
    ttfts_ms = [1000 * r.ttft for r in ok if r.ttft is not None]
    within = sum(1 for t in ttfts_ms if t <= slo_ttft_ms)
    hits = sum(s["prefix_cache"]["hits"] for s in replica_stats.values())
    queries = sum(s["prefix_cache"]["queries"] for s in replica_stats.values())
    cross = sum(1 for r in ok if r.replica_region != r.shot.label)
    if results:
        wall = max(r.started + r.latency for r in results) - min(r.started for r in results)
    else:
        wall = 0.0
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "ttft_p50_ms": round(percentile(ttfts_ms, 50), 1),
        "ttft_p99_ms": round(percentile(ttfts_ms, 99), 1),
        "slo_attainment": round(within / len(results), 4) if results else 0.0,
        "prefix_hit_rate": round(hits / queries, 4) if queries else 0.0,
        "cross_region_share": round(cross / len(ok), 4) if ok else 0.0,
        "throughput_rps": round(len(ok) / wall, 2) if wall > 0 else 0.0,
    }


def served_by(report: Report) -> dict[str, dict[str, int]]:
    """origin region -> region (or `status-N`) that answered -> requests."""
    table: dict[str, Counter[str]] = {}
    for r in report.results:
        where = r.replica_region if r.ok and r.replica_region else f"status-{r.status}"
        table.setdefault(r.shot.label, Counter())[where] += 1
    return {origin: dict(sorted(c.items())) for origin, c in sorted(table.items())}


def per_origin_ttft_p99(report: Report) -> dict[str, float]:
    """TTFT p99 per origin region: where a policy's tail comes from."""
    by_origin: dict[str, list[float]] = {}
    for r in report.results:
        if r.ok and r.ttft is not None:
            by_origin.setdefault(r.shot.label, []).append(1000 * r.ttft)
    return {o: round(percentile(v, 99), 1) for o, v in sorted(by_origin.items())}
