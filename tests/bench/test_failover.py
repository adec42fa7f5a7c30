"""The failover benchmark: its recovery definition on hand-made records, and a smoke test
at tiny size through the real three-region mesh (a fleet really is killed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import failover
from heliostat.sim import loadgen

KILL = 100.0


class _Watch:
    out_at = None
    eds_at = None
    flags: dict[str, str] = {}  # noqa: RUF012 - a read-only stand-in


def _result(region: str, started: float, ok: bool, served_by: str | None = None) -> Any:
    shot = loadgen.Shot(0.0, "http://127.0.0.1:1/v1/completions", {}, {}, region)
    return loadgen.Result(
        shot=shot,
        status=200 if ok else 0,
        replica=None,
        replica_region=served_by if ok else None,
        headers={},
        started=started,
        ttft=0.1 if ok else None,
        latency=0.3,
        error=None if ok else "ClientPayloadError",
    )


def _analyse(results: list[Any]) -> dict[str, Any]:
    report = loadgen.Report(sorted(results, key=lambda r: r.started))
    return failover._analyse(report, KILL, _Watch())  # type: ignore[arg-type]


def test_recovery_starts_after_the_last_failure_of_the_killed_regions_gateway() -> None:
    killed = failover.KILLED
    results = [
        _result(killed, KILL - 0.2, ok=False),  # in flight at the kill, cut
        _result(killed, KILL + 0.1, ok=True, served_by="us-east"),
        _result(killed, KILL + 0.5, ok=False),  # a later failure resets the recovery
        _result(killed, KILL + 0.9, ok=True, served_by="us-east"),
        _result(killed, KILL + 1.4, ok=True, served_by="us-east"),
        _result("us-east", KILL + 0.6, ok=False),  # other gateways do not count for it
    ]
    analysed = _analyse(results)

    assert analysed["recovered"] is True
    assert analysed["recover_ms"] == pytest.approx(1000.0)  # started at +0.9, first token 0.1
    assert analysed["first_elsewhere_ms"] == pytest.approx(200.0)
    assert analysed["requests"] == 6
    assert analysed["failed_requests"] == 3
    local = analysed["killed_region"]
    assert local["in_flight_at_kill"] == 1
    assert local["failed_in_flight_at_kill"] == 1
    assert local["failed_started_after_kill"] == 1


def test_a_gateway_still_failing_at_the_end_is_not_recovered() -> None:
    killed = failover.KILLED
    analysed = _analyse(
        [
            _result(killed, KILL + 0.1, ok=True, served_by="us-east"),
            _result(killed, KILL + 0.5, ok=False),
        ]
    )

    assert analysed["recovered"] is False
    assert analysed["recover_ms"] == pytest.approx(800.0)  # the whole observed window


@pytest.mark.envoy
def test_failover_reports_requests_failures_and_recovery_at_tiny_size(tmp_path: Path) -> None:
    result = failover.run("tiny", tmp_path)

    assert {"requests", "failed_requests", "recover_ms"} <= set(result)
    for field in ("requests", "failed_requests", "recover_ms"):
        value = result[field]
        assert isinstance(value, int | float) and not isinstance(value, bool), field
    assert result["requests"] > 0
    assert 0 <= result["failed_requests"] <= result["requests"]
    assert result["recover_ms"] >= 0
    trial = result["trials"][0]
    local = trial["killed_region"]
    assert 0 < local["requests"] < result["requests"]
    # after the kill the killed region's gateway was served, and only by other regions
    assert set(local["served_after_kill_by"]) - {"failed"}
    assert failover.KILLED not in local["served_after_kill_by"]
    assert result["notes"]
    json.dumps(result)
    assert "recover" in failover.summary(result)
