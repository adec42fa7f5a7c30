"""The routing benchmark's measures of what the gateways let in, on hand-made client records."""

from __future__ import annotations

from bench.routing_measure import by_phase, measure
from heliostat.sim.loadgen import Report, Result, Shot
from heliostat.wire import REPLICA_ID_HEADER

SLO_MS = 500.0
TIMEOUT_S = 30.0


def _result(at: float, status: int, *, ttft: float | None, latency: float, replica: bool) -> Result:
    headers = {REPLICA_ID_HEADER: "r1"} if replica else {}
    return Result(
        shot=Shot(at=at, url="http://gw", headers={}, body={}, label="na"),
        status=status,
        replica="r1" if replica else None,
        replica_region="na" if replica else None,
        headers=headers,
        started=at,
        ttft=ttft,
        latency=latency,
    )


def _report() -> Report:
    served = [_result(0.1 * i, 200, ttft=0.1, latency=1.0, replica=True) for i in range(8)]
    late = _result(0.9, 200, ttft=0.9, latency=2.0, replica=True)
    fast_refusal = _result(1.0, 429, ttft=None, latency=0.01, replica=False)
    # The gateway's own 429, answered late on a loaded machine: a failure, never admitted.
    slow_refusal = _result(1.5, 429, ttft=None, latency=0.2, replica=False)
    # A replica's 503: admitted, failed, counted at the client's timeout.
    replica_error = _result(1.6, 503, ttft=None, latency=0.3, replica=True)
    return Report(results=[*served, late, fast_refusal, slow_refusal, replica_error])


def test_a_slow_refusal_by_the_gateway_is_neither_refused_nor_admitted() -> None:
    entry = measure(_report(), {}, SLO_MS, seconds=2.0, timeout_s=TIMEOUT_S)
    assert entry["refused"] == 1
    assert entry["errors"] == 2  # the slow refusal and the replica's error
    # Admitted: 8 on time, 1 late, the replica's error at the timeout (10 in all): the
    # nearest-rank p99 of ten is the largest, the timeout; without the error it is 900 ms.
    assert entry["admitted_ttft_p99_ms"] == 1000 * TIMEOUT_S
    without_error = Report(results=_report().results[:-1])
    assert measure(without_error, {}, SLO_MS, 2.0, TIMEOUT_S)["admitted_ttft_p99_ms"] == 900.0


def test_each_phase_says_how_many_admitted_requests_were_late() -> None:
    phases = by_phase(_report(), lambda at: 0 if at < 0.85 else 1, 2, SLO_MS, TIMEOUT_S)
    first, second = phases[0]["na"], phases[1]["na"]
    assert first == {
        "requests": 8,
        "slo_attainment": 1.0,
        "refused": 0,
        "admitted_late": 0.0,
        "admitted_ttft_p99_ms": 100.0,
    }
    # Second phase: the late one and the replica's error admitted (both late), one fast
    # and one slow refusal, neither admitted.
    assert second["requests"] == 4
    assert second["refused"] == 1
    assert second["admitted_late"] == 1.0
    assert second["admitted_ttft_p99_ms"] == 1000 * TIMEOUT_S
