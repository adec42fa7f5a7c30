"""What one (scenario, policy) run measured, from the client's records and the replicas' stats.

The client (the load generator) knows each request's status, TTFT (first streamed content
byte), its response headers, which replica answered and in which region (`x-replica-id`,
`x-replica-region`); the replicas (`/sim/stats`, reset before every run) know their prefix
cache: prompt tokens looked up and found. Nothing is taken from the router under test.

Every request ends in one of three ways:
- **served**: HTTP 200 with a first token (its TTFT);
- **refused**: a fast refusal by the gateway itself: 429 or 503, no replica named in the answer
  (Envoy's `drop_overloads`, a local rate limit or any local reply), in under REFUSAL_MAX_S;
  what "degrade on purpose" looks like to a client, who can retry elsewhere at once;
- **failed**: anything else (a replica's error, a reset, a timeout, a slow 503).
Refused and failed requests both miss the SLO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.common import percentile
from heliostat.sim.loadgen import Report, Result
from heliostat.sim.orca import REPORT_HEADER
from heliostat.wire import REPLICA_ID_HEADER

REFUSAL_STATUSES = frozenset({429, 503})
REFUSAL_MAX_S = 0.05

# Today's keys (kept), then the scenario benchmark's.
FIELDS = (
    "requests",
    "errors",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "slo_attainment",
    "prefix_hit_rate",
    "cross_region_share",
    "throughput_rps",
    "goodput_rps",
    "refused",
    "admitted_ttft_p99_ms",
    "orca_reports",
)
ORIGIN_FIELDS = (
    "requests",
    "slo_attainment",
    "ttft_p99_ms",
    "cross_region_share",
    "refused",
    "errors",
)


def refused(result: Result) -> bool:
    """A fast refusal answered by the gateway itself (see the module docstring)."""
    return (
        result.error is None
        and result.status in REFUSAL_STATUSES
        and REPLICA_ID_HEADER not in result.headers
        and result.latency < REFUSAL_MAX_S
    )


def gateway_answered(result: Result) -> bool:
    """Answered 429 or 503 by the gateway itself (no replica named), however long it took: a
    request the gateway did not let in. Fast, it is `refused`; slow (the gateway's own
    answer delayed past REFUSAL_MAX_S, on a loaded machine) it is a failure, not a refusal,
    but it was not admitted either: it has no place in the admitted requests' TTFT."""
    return (
        result.error is None
        and result.status in REFUSAL_STATUSES
        and REPLICA_ID_HEADER not in result.headers
    )


def served(result: Result) -> bool:
    return result.ok and result.ttft is not None


def met_slo(result: Result, slo_ttft_ms: float) -> bool:
    return served(result) and result.ttft is not None and 1000 * result.ttft <= slo_ttft_ms


def measure(
    report: Report,
    replica_stats: Mapping[str, Mapping[str, Any]],
    slo_ttft_ms: float,
    seconds: float,
    timeout_s: float,
) -> dict[str, Any]:
    """The figures of one run, plus `by_origin` (per origin region).

    - errors: failed requests (not refusals): non-200 answers, transport errors, timeouts;
    - refused: fast refusals (module docstring);
    - ttft percentiles over the served requests;
    - slo_attainment: share of ALL requests served within the SLO (refused, failed miss it);
    - goodput_rps: requests served within the SLO / the seconds over which they were sent
      (the scenario's length at this size, the same for every policy);
    - admitted_ttft_p99_ms: TTFT p99 of the requests the gateway let in (not answered by
      the gateway itself, `gateway_answered`), a failed one counting as the client's
      timeout (what the users the gateway let in got);
    - prefix_hit_rate: prompt tokens found in the replicas' prefix caches / looked up;
    - cross_region_share: served requests answered outside their origin region;
    - throughput_rps: served requests / wall time (first send to last answer);
    - orca_reports: answers carrying an ORCA load report (`endpoint-load-metrics`).
    """
    results = report.results
    entry = _figures(results, slo_ttft_ms, seconds)
    ok = [r for r in results if served(r)]
    admitted = _admitted_ttfts_ms(results, timeout_s)
    hits = sum(s["prefix_cache"]["hits"] for s in replica_stats.values())
    queries = sum(s["prefix_cache"]["queries"] for s in replica_stats.values())
    if results:
        wall = max(r.started + r.latency for r in results) - min(r.started for r in results)
    else:
        wall = 0.0
    by_origin: dict[str, list[Result]] = {}
    for r in results:
        by_origin.setdefault(r.shot.label, []).append(r)
    return {
        "requests": entry["requests"],
        "errors": entry["errors"],
        "ttft_p50_ms": entry["ttft_p50_ms"],
        "ttft_p99_ms": entry["ttft_p99_ms"],
        "slo_attainment": entry["slo_attainment"],
        "prefix_hit_rate": round(hits / queries, 4) if queries else 0.0,
        "cross_region_share": entry["cross_region_share"],
        "throughput_rps": round(len(ok) / wall, 2) if wall > 0 else 0.0,
        "goodput_rps": entry["goodput_rps"],
        "refused": entry["refused"],
        "admitted_ttft_p99_ms": round(percentile(admitted, 99), 1),
        "orca_reports": sum(1 for r in results if REPORT_HEADER in r.headers),
        "by_origin": {
            origin: _figures(mine, slo_ttft_ms, seconds)
            for origin, mine in sorted(by_origin.items())
        },
    }


def _admitted_ttfts_ms(results: Sequence[Result], timeout_s: float) -> list[float]:
    """TTFT (ms) of every request the gateway let in; a failed one counts as the timeout."""
    return [
        1000 * r.ttft if served(r) and r.ttft is not None else 1000 * timeout_s
        for r in results
        if not gateway_answered(r)
    ]


def _figures(results: Sequence[Result], slo_ttft_ms: float, seconds: float) -> dict[str, Any]:
    """The figures every subset of requests has (a run's, an origin's, a phase's)."""
    ok = [r for r in results if served(r)]
    ttfts_ms = [1000 * r.ttft for r in ok if r.ttft is not None]
    met = sum(1 for r in results if met_slo(r, slo_ttft_ms))
    n_refused = sum(1 for r in results if refused(r))
    cross = sum(1 for r in ok if r.replica_region != r.shot.label)
    return {
        "requests": len(results),
        "slo_attainment": round(met / len(results), 4) if results else 0.0,
        "ttft_p50_ms": round(percentile(ttfts_ms, 50), 1),
        "ttft_p99_ms": round(percentile(ttfts_ms, 99), 1),
        "cross_region_share": round(cross / len(ok), 4) if ok else 0.0,
        "refused": n_refused,
        "errors": len(results) - len(ok) - n_refused,
        "goodput_rps": round(met / seconds, 2) if seconds > 0 else 0.0,
    }


def by_phase(
    report: Report,
    phase_of: Callable[[float], int],
    phases: int,
    slo_ttft_ms: float,
    timeout_s: float = 30.0,
) -> list[dict[str, dict[str, float | int]]]:
    """Per phase and origin region: requests, SLO attainment, fast refusals, and of the
    requests the gateway let in the share past the SLO (`admitted_late`, failed ones
    included) and their TTFT p99: where in a scenario the admitted requests miss (on a
    ramp, while the demand estimate lags, or at steady load). A request belongs to the
    phase of its scheduled send time (a late send stays in its phase)."""
    tables: list[dict[str, list[Result]]] = [{} for _ in range(phases)]
    for r in report.results:
        tables[phase_of(r.shot.at)].setdefault(r.shot.label, []).append(r)
    return [
        {o: _phase_figures(mine, slo_ttft_ms, timeout_s) for o, mine in sorted(table.items())}
        for table in tables
    ]


def _phase_figures(
    results: Sequence[Result], slo_ttft_ms: float, timeout_s: float
) -> dict[str, float | int]:
    admitted = _admitted_ttfts_ms(results, timeout_s)
    late = sum(1 for ttft in admitted if ttft > slo_ttft_ms)
    return {
        "requests": len(results),
        "slo_attainment": round(
            sum(1 for r in results if met_slo(r, slo_ttft_ms)) / len(results), 4
        ),
        "refused": sum(1 for r in results if refused(r)),
        "admitted_late": round(late / len(admitted), 4) if admitted else 0.0,
        "admitted_ttft_p99_ms": round(percentile(admitted, 99), 1),
    }


def served_by(report: Report) -> dict[str, dict[str, int]]:
    """origin region -> region (or `refused`, `status-N`) that answered -> requests."""
    table: dict[str, Counter[str]] = {}
    for r in report.results:
        if served(r) and r.replica_region:
            where = r.replica_region
        elif refused(r):
            where = f"refused-{r.status}"
        else:
            where = f"status-{r.status}"
        table.setdefault(r.shot.label, Counter())[where] += 1
    return {origin: dict(sorted(c.items())) for origin, c in sorted(table.items())}
