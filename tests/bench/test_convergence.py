"""Smoke test: the convergence benchmark runs end to end at its tiny size (real heliostat
serve, real Envoys, a simulated fleet) and reports the documented fields. No timing is
asserted beyond ordering: benchmarks report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import convergence

pytestmark = pytest.mark.envoy


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_convergence_reports_samples_and_percentiles_at_tiny_size(tmp_path: Path) -> None:
    result = convergence.run("tiny", tmp_path)

    assert {"interval_s", "samples", "p50_ms", "p99_ms"} <= set(result)
    assert _number(result["interval_s"]) and result["interval_s"] > 0
    samples = result["samples"]
    pairs = convergence.PLAN["tiny"][1]
    assert len(samples) == 2 * pairs  # one forward and one back per pair, none missed
    assert all(_number(s) and s > 0 for s in samples)
    assert result["p99_ms"] >= result["p50_ms"] >= 0
    assert result["p99_ms"] <= max(samples)
    for mode in convergence.MODES:
        for direction in ("forward", "back"):
            assert result["by_direction"][mode][direction]["samples"] == pairs
    assert result["notes"]
    json.dumps(result)  # the runner writes it as JSON
    assert "p99" in convergence.summary(result)
