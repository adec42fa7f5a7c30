"""scale.json at tiny size: the benchmark still runs and reports what it documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import scale
from bench.scale_policy import endpoint_count, fleet_policy, split
from heliostat.policy import Policy, semantics


def test_tiny_run_reports_every_case_with_numeric_tick_costs(tmp_path: Path) -> None:
    result = scale.run("tiny", tmp_path)
    json.dumps(result)  # the runner writes it as JSON
    cases = result["cases"]
    assert [(c["endpoints"], c["views"]) for c in cases] == scale.CASES["tiny"]
    for case in cases:
        for field in (
            "full_tick_ms",
            "incremental_tick_ms",
            "full_tick_mean_ms",
            "incremental_tick_mean_ms",
            "full_tick_leds_ms",  # as serve runs by default: the LEDS form built too
            "incremental_tick_leds_ms",
        ):
            assert isinstance(case[field], float)
            assert case[field] > 0
        # The full tick really changes every endpoint's EDS entry, the incremental one a
        # tenth of them: otherwise the figures would not measure what they claim.
        assert case["full_changed_share"] == pytest.approx(1.0)
        assert case["incremental_changed_share"] == pytest.approx(0.1, abs=0.01)
        assert case["groups_changed_per_tick"] == case["views"]
        assert case["ticks"] == scale.ticks_for("tiny", case["endpoints"])
        assert case["clusters_per_view"] > case["models"]
        assert case["eds_bytes_per_view"] > 0
    assert "200" in scale.summary(result)


@pytest.mark.parametrize(("endpoints", "regions"), [(30, 3), (1000, 6), (18, 6)])
def test_fleet_policy_is_valid_and_has_exactly_the_endpoints_asked_for(
    endpoints: int, regions: int
) -> None:
    document = fleet_policy(endpoints, regions)
    policy = Policy.model_validate(document)
    assert semantics.check(policy) == []
    assert endpoint_count(document) == endpoints
    assert len(policy.spec.regions) == regions
    used = {e.region for m in policy.spec.models for e in m.endpoints}
    assert used <= set(policy.spec.regions)


def test_split_keeps_the_total_and_gives_every_part_something() -> None:
    assert split(10, [3, 2, 1]) == [6, 3, 1]
    assert sum(split(1001, [3, 2, 1, 3, 2, 1])) == 1001
    assert min(split(6, [3, 2, 1, 3, 2, 1])) == 1
    with pytest.raises(ValueError, match="cannot cover"):
        split(2, [1, 1, 1])
    with pytest.raises(ValueError, match="cannot cover"):
        fleet_policy(7, 6)  # three models cannot each have an endpoint in six regions


def test_target_rows_say_whether_each_is_met() -> None:
    """Only measured cases yield rows; a figure above its limit is reported as missed."""
    cases = [
        {
            "endpoints": 10_000,
            "views": 3,
            "full_tick_ms": 120.0,
            "incremental_tick_ms": 15.0,
            "full_tick_leds_ms": 90.0,
            "incremental_tick_leds_ms": 25.0,
        },
        {"endpoints": 1_000, "views": 6, "full_tick_ms": 5.0, "incremental_tick_ms": 1.0},
        # an older scale.json, without the LEDS figures: no LEDS rows
        {"endpoints": 50_000, "views": 6, "full_tick_ms": 400.0, "incremental_tick_ms": 40.0},
    ]
    rows = scale.target_rows(cases)
    assert [(r["measure"], r["met"]) for r in rows] == [
        ("tick, 10,000 endpoints x 3 views, full", False),
        ("tick, 10,000 endpoints x 3 views, incremental", True),
        ("tick, 50,000 endpoints x 6 views, full", True),
        ("tick, 10,000 endpoints x 3 views, full, LEDS (serve's default)", True),
        ("tick, 10,000 endpoints x 3 views, incremental, LEDS (serve's default)", False),
    ]
    assert "NO" in scale.targets_table(rows)
