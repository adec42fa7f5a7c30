"""The targets checked against a routing result, and what heliostat's state sampler reads.

Pure functions on JSON-shaped data: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import routing_targets as targets
from bench.routing_shares import Sample, read_view, reversals, summarise

POLICIES = ("heliostat", "round_robin", "least_request", "ring_hash", "envoy_orca", "picker")


def entry(**figures: float) -> dict[str, float]:
    base = {
        "slo_attainment": 0.95,
        "goodput_rps": 20.0,
        "ttft_p99_ms": 400.0,
        "ttft_p50_ms": 80.0,
        "admitted_ttft_p99_ms": 400.0,
        "prefix_hit_rate": 0.5,
    }
    return {**base, **figures}


def fleet() -> dict[str, Any]:
    return {
        "slo_ttft_ms": 500.0,
        "network_budget_ms": 170.0,
        "regions": {
            "us-east": {"rtt_ms": {"eu-west": 80, "ap-southeast": 210}},
            "eu-west": {"rtt_ms": {"ap-southeast": 160}},
            "ap-southeast": {"rtt_ms": {}},
        },
    }


def phases(*loads: dict[str, float], ramp: bool = False) -> list[dict[str, Any]]:
    return [{"load": load, "rates_rps": dict(load), "ramp": ramp} for load in loads]


def result(
    by_policy: dict[str, dict[str, float]],
    setup: dict[str, Any],
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "workloads": {"s": by_policy},
        "setup": {"scenarios": {"s": setup}},
        "details": {"s": detail or {}},
    }


def verdicts(checks: list[dict[str, str]]) -> dict[str, str]:
    return {c["target"]: c["verdict"] for c in checks}


CONSTANT = {"fleet": fleet(), "workload": {"workload": "chat", "phases": phases({"a": 0.6})}}


def test_heliostat_must_match_the_best_baseline_on_slo_goodput_and_p99() -> None:
    by_policy = {p: entry() for p in POLICIES}
    by_policy["picker"] = entry(slo_attainment=0.97, goodput_rps=21.0, ttft_p99_ms=300.0)
    by_policy["heliostat"] = entry(slo_attainment=0.961, goodput_rps=21.0, ttft_p99_ms=331.0)
    found = verdicts(targets.evaluate(result(by_policy, CONSTANT)))
    assert found["SLO met >= every baseline's - 1 pt"] == "met"  # 96.1% >= 97% - 1 pt
    assert found["goodput >= every baseline's"] == "met"
    assert found["TTFT p99 <= 1.1 x best baseline's"] == "not met"  # 331 > 330
    by_policy["heliostat"] = entry(slo_attainment=0.959, goodput_rps=20.9, ttft_p99_ms=330.0)
    found = verdicts(targets.evaluate(result(by_policy, CONSTANT)))
    assert found["SLO met >= every baseline's - 1 pt"] == "not met"
    assert found["goodput >= every baseline's"] == "not met"
    assert found["TTFT p99 <= 1.1 x best baseline's"] == "met"


def test_missing_baselines_or_figures_are_not_applicable_never_a_pass() -> None:
    found = verdicts(targets.evaluate(result({"heliostat": entry()}, CONSTANT)))
    assert set(found.values()) == {"n/a"}
    assert targets.evaluate({"workloads": "nonsense"}) == []


def test_stability_applies_under_constant_load_only() -> None:
    by_policy = {p: entry() for p in POLICIES}
    by_policy["heliostat"]["max_reversals_per_min"] = 2.5
    found = verdicts(targets.evaluate(result(by_policy, CONSTANT)))
    assert found["stability: reversals per minute <= 2 (weights and shares)"] == "not met"
    ramping = {"fleet": fleet(), "workload": {"phases": phases({"a": 0.4}, {"a": 1.3})}}
    found = verdicts(targets.evaluate(result(by_policy, ramping)))
    assert not any(t.startswith("stability") for t in found)


def test_a_full_planet_checks_the_admitted_requests_p99_against_the_slo() -> None:
    setup = {
        "fleet": fleet(),
        "workload": {
            "phases": phases({"us-east": 0.4, "eu-west": 0.4}, {"us-east": 1.3, "eu-west": 1.3})
        },
    }
    assert targets.planet_full(setup)
    by_policy = {p: entry() for p in POLICIES}
    by_policy["heliostat"]["admitted_ttft_p99_ms"] = 480.0
    found = verdicts(targets.evaluate(result(by_policy, setup)))
    assert found["admitted requests' TTFT p99 <= SLO (planet full)"] == "met"
    by_policy["heliostat"]["admitted_ttft_p99_ms"] = 30000.0
    found = verdicts(targets.evaluate(result(by_policy, setup)))
    assert found["admitted requests' TTFT p99 <= SLO (planet full)"] == "not met"
    assert not targets.planet_full({"workload": {"phases": phases({"a": 1.3, "b": 0.9})}})


def test_shared_prefix_compares_hits_with_ring_hash_and_slo_and_p50_with_the_picker() -> None:
    setup = {
        "fleet": fleet(),
        "workload": {"workload": "shared_prefix", "phases": phases({"a": 0.6})},
    }
    by_policy = {p: entry() for p in POLICIES}
    by_policy["ring_hash"]["prefix_hit_rate"] = 0.8
    by_policy["picker"] = entry(slo_attainment=0.99, ttft_p50_ms=85.0)
    by_policy["heliostat"] = entry(prefix_hit_rate=0.81, slo_attainment=0.99, ttft_p50_ms=86.0)
    found = verdicts(targets.evaluate(result(by_policy, setup)))
    assert found["prefix hits >= ring_hash's"] == "met"
    assert found["SLO met >= picker's"] == "met"
    assert found["TTFT p50 <= picker's"] == "not met"


SURGE = {
    "fleet": fleet(),
    "workload": {
        "phases": phases(
            {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 0.5},
            {"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 2.0},
        )
    },
}


def by_phase(before: float, during: float) -> list[dict[str, Any]]:
    return [
        {"eu-west": {"requests": 100, "slo_attainment": before}},
        {"eu-west": {"requests": 300, "slo_attainment": during}},
    ]


def test_a_surge_names_the_rescuers_within_the_surging_regions_budget() -> None:
    # eu-west is 160 ms from ap-southeast; us-east (210 ms) cannot rescue it
    assert targets.surge(SURGE) == (0, [1], ["eu-west"])
    assert targets.surge(CONSTANT) is None
    full = {
        "fleet": fleet(),
        "workload": {"phases": phases({"a": 0.5, "b": 0.5}, {"a": 1.3, "b": 1.3})},
    }
    assert targets.surge(full) is None  # everyone is overloaded: nobody can rescue


def test_protection_compares_the_rescuers_users_before_and_during() -> None:
    by_policy = {p: entry() for p in POLICIES}
    detail = {
        "heliostat": {"by_phase": by_phase(0.99, 0.985)},
        "picker": {"by_phase": by_phase(0.99, 0.90)},
    }
    table = targets.protection(SURGE, detail)
    assert table["picker"]["eu-west"] == {"before": 0.99, "during": 0.9}
    found = verdicts(targets.evaluate(result(by_policy, SURGE, detail)))
    assert found["protection: eu-west's users during the surge >= before - 1 pt"] == "met"
    detail["heliostat"] = {"by_phase": by_phase(0.99, 0.97)}
    found = verdicts(targets.evaluate(result(by_policy, SURGE, detail)))
    assert found["protection: eu-west's users during the surge >= before - 1 pt"] == "not met"


def test_reversals_count_changes_of_direction_only() -> None:
    assert reversals([100, 100, 60, 60, 30]) == 0  # falling, with pauses
    assert reversals([100, 60, 100, 60, 100]) == 3
    assert reversals([1.0, 1.0]) == 0
    assert reversals([]) == 0


def view(*endpoints: tuple[str, str, int, int | None, int]) -> dict[str, Any]:
    return {
        "endpoints": [
            {"address": a, "region": r, "priority": p, "locality_weight": lw, "weight": w}
            for a, r, p, lw, w in endpoints
        ]
    }


def test_shares_are_the_first_priority_levels_locality_weights() -> None:
    shares, weights = read_view(
        view(
            ("a", "ap", 0, 700, 100),
            ("b", "eu", 0, 300, 80),
            ("c", "eu", 0, 300, 100),
            ("d", "us", 1, 1000, 100),
        )
    )
    assert shares == {"ap": 0.7, "eu": 0.3}
    assert weights == {"a": 100, "b": 80, "c": 100, "d": 100}
    # an edge view: its first priority is another region's; no locality weights: host weights
    shares, _ = read_view(view(("d", "us", 1, None, 100), ("e", "eu", 1, None, 300)))
    assert shares == {"us": 0.25, "eu": 0.75}


def test_summarise_counts_reversals_while_load_was_offered_only() -> None:
    def sample(t: float, share: float, weight: int) -> Sample:
        return Sample(
            t,
            {"ap": {"ap": round(1 - share, 4), "eu": share}},
            {"ap": {"a": weight}, "eu": {"a": weight}},
        )

    samples = [
        sample(0, 0.0, 100),
        sample(1, 0.3, 60),
        sample(2, 0.1, 100),
        sample(3, 0.3, 60),
        sample(40, 0.0, 100),  # after the load: the drain's changes are not counted
    ]
    summary = summarise(samples, until_s=30.0)
    assert summary["weight_reversals"] == {"a": 2}
    assert summary["share_reversals"] == {"ap->ap": 2, "ap->eu": 2}
    assert summary["max_reversals_per_min"] == pytest.approx(4.0)
    assert len(summary["shares"]) == 5  # the series keeps every sample
