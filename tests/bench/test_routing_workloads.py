"""The routing benchmark's workloads and measures, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from bench import routing_workloads as workloads
from bench.routing import SCENARIOS
from bench.routing_fleet import PREFIX_CHARS, endpoint_sim, model_overrides
from bench.routing_measure import FIELDS, by_phase, measure, served_by
from bench.scenario import Scenario, load_scenario, parse_scenario
from heliostat.sim.loadgen import Report, Result, Shot
from heliostat.sim.orca import REPORT_HEADER


def scenario(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.yaml")


@pytest.fixture(scope="module")
def built() -> dict[str, workloads.Workload]:
    return {
        name: workloads.build(scenario(name), "quick")
        for name in ("chat", "shared_prefix", "regional_surge", "flash_crowd", "mixed_gpus")
    }


def test_a_workload_is_the_same_every_time_it_is_built(
    built: dict[str, workloads.Workload],
) -> None:
    again = workloads.build(scenario("shared_prefix"), "quick")
    assert again.requests == built["shared_prefix"].requests
    other = scenario("shared_prefix").model_copy(update={"seed": 7})
    assert workloads.build(other, "quick").requests != again.requests


def test_sizes_scale_every_phase_and_keep_the_shape() -> None:
    surge = scenario("regional_surge")
    full = workloads.build(surge, "full")
    quick = workloads.build(surge, "quick")
    assert [p.end for p in full.phases] == [15.0, 55.0]
    assert [p.end for p in quick.phases] == pytest.approx([15 / 8, 55 / 8])
    assert full.phases[1].rates == quick.phases[1].rates
    assert len(full.requests) > 6 * len(quick.requests)


def test_shots_differ_between_policies_only_in_the_gateway_port(
    built: dict[str, workloads.Workload],
) -> None:
    work = built["chat"]
    regions = list(scenario("chat").regions)
    a = work.shots({r: 1000 + i for i, r in enumerate(regions)})
    b = work.shots({r: 2000 + i for i, r in enumerate(regions)})
    assert [(s.at, s.body, s.label, s.headers) for s in a] == [
        (s.at, s.body, s.label, s.headers) for s in b
    ]
    assert {s.label for s in a} == set(regions)


def test_rates_follow_each_regions_capacity_phase_by_phase(
    built: dict[str, workloads.Workload],
) -> None:
    chat = built["chat"]
    per_replica = {r: chat.capacity_rps[r] / n for r, n in {"us-east": 4, "eu-west": 3}.items()}
    assert per_replica["us-east"] == pytest.approx(per_replica["eu-west"])
    assert chat.phases[0].rates["us-east"] == pytest.approx(0.65 * chat.capacity_rps["us-east"])
    surge = built["regional_surge"]
    before, during = surge.phases
    assert before.rates["ap-southeast"] == pytest.approx(0.5 * surge.capacity_rps["ap-southeast"])
    assert during.rates["ap-southeast"] == pytest.approx(2.0 * surge.capacity_rps["ap-southeast"])
    assert during.load == pytest.approx({"us-east": 0.5, "eu-west": 0.5, "ap-southeast": 2.0})


def test_capacity_is_computed_per_replica_configuration(
    built: dict[str, workloads.Workload],
) -> None:
    # Long shared prompts are slower to serve than short chats on the same replica.
    assert (
        0 < built["shared_prefix"].capacity_rps["us-east"] < built["chat"].capacity_rps["us-east"]
    )
    mixed = built["mixed_gpus"].replica_capacity_rps
    slow = next(v for k, v in mixed.items() if "speed=1.0" in k)
    fast = next(v for k, v in mixed.items() if "speed=3.0" in k)
    assert 2.0 < fast / slow < 3.5  # three times the speed, not quite three times the requests
    assert built["mixed_gpus"].capacity_rps["ap-southeast"] == pytest.approx(slow + fast)


def test_a_ramp_rises_through_its_phase() -> None:
    crowd = workloads.build(scenario("flash_crowd"), "full")
    calm, ramp, hold = crowd.phases
    assert ramp.ramp and not hold.ramp
    sent = [r.at for r in crowd.requests if r.origin == "us-east"]

    def rate(start: float, end: float) -> float:
        return sum(1 for t in sent if start <= t < end) / (end - start)

    expected_calm = calm.rates["us-east"]
    assert rate(calm.start, calm.end) == pytest.approx(expected_calm, rel=0.25)
    first, second = rate(ramp.start, ramp.start + 5), rate(ramp.start + 5, ramp.end)
    assert expected_calm < second and first < second
    assert rate(hold.start, hold.end) == pytest.approx(hold.rates["us-east"], rel=0.15)


def test_an_edge_region_offers_its_rps_and_has_no_capacity() -> None:
    edge = workloads.build(scenario("edge_pop"), "full")
    assert edge.capacity_rps["sa-east"] == 0.0
    assert edge.phases[0].rates["sa-east"] == 5.0
    assert "sa-east" not in edge.phases[0].load
    sent = sum(1 for r in edge.requests if r.origin == "sa-east")
    assert sent == pytest.approx(5.0 * edge.seconds, rel=0.15)


def test_a_groups_requests_share_the_prompt_start_the_prefix_key_hashes(
    built: dict[str, workloads.Workload],
) -> None:
    prompts = [r.body["prompt"] for r in built["shared_prefix"].requests]
    heads = {p[:PREFIX_CHARS] for p in prompts}
    assert 1 < len(heads) <= workloads.GROUPS
    system_chars = workloads.SYSTEM_TOKENS * 4
    assert system_chars > PREFIX_CHARS  # the key never reaches a user's question
    assert all(len(p) > system_chars for p in prompts)


def test_chat_prompts_and_outputs_spread_over_their_ranges(
    built: dict[str, workloads.Workload],
) -> None:
    bodies = [r.body for r in built["chat"].requests]
    outputs = [b["max_tokens"] for b in bodies]
    lengths = [len(b["prompt"]) for b in bodies]
    assert min(outputs) >= 4 and max(outputs) <= 128 and len(set(outputs)) > 10
    assert max(lengths) > 4 * min(lengths)
    assert all(b["stream"] is True and b["model"] for b in bodies)


def test_the_operator_policy_is_derived_by_the_same_rules_everywhere() -> None:
    chat, mixed = scenario("chat"), scenario("mixed_gpus")
    a, b = model_overrides(chat), model_overrides(mixed)
    assert a["affinity"] == b["affinity"] == {"prefix_chars": PREFIX_CHARS}
    assert a["slo"] == {"ttft_ms": 500.0, "network_budget_ms": 170.0}
    assert a["thresholds"]["queue"] == 2  # half of 4 slots
    # heliostat's own overflow defaults (no cap: the lab mesh's 0.3 is lifted), never tuned
    assert a["overflow"] == b["overflow"] == {}
    addresses = {
        "us-east": ["a", "b", "c", "d"],
        "eu-west": ["e", "f", "g"],
        "ap-southeast": ["h", "i"],
    }
    knobs = endpoint_sim(mixed)(addresses)
    assert [knobs[x]["speed"] for x in "abcdefghi"] == [1, 1, 3, 3, 1, 1, 3, 1, 3]
    assert all(k["max_num_seqs"] == 4 for k in knobs.values())


def result(
    label: str,
    region: str | None,
    status: int,
    ttft: float | None,
    *,
    at: float = 0.0,
    latency: float = 1.0,
    headers: dict[str, str] | None = None,
) -> Result:
    shot = Shot(at, "http://127.0.0.1:1/v1/completions", {}, {}, label)
    if headers is None:
        headers = {"x-replica-id": "r"} if region else {}
    return Result(shot, status, "r", region, headers, started=10.0, ttft=ttft, latency=latency)


def stats(hits: int, queries: int) -> dict[str, Any]:
    return {"prefix_cache": {"hits": hits, "queries": queries}}


def test_measure_counts_refusals_apart_from_errors_and_both_as_slo_misses() -> None:
    report = Report(
        [
            result("us-east", "us-east", 200, 0.1),
            result("us-east", "eu-west", 200, 0.3, headers={REPORT_HEADER: "TEXT x=1"}),
            result("eu-west", "eu-west", 200, 0.9),
            result("eu-west", None, 503, None),  # slow: a failure, not a refusal
            result("eu-west", None, 503, None, latency=0.004),  # the gateway refused at once
            result("eu-west", "eu-west", 503, None, latency=0.004),  # a replica said no
        ]
    )
    entry = measure(report, {"a": stats(30, 100), "b": stats(10, 100)}, 500, 2.0, 30.0)
    assert set(FIELDS) <= set(entry)
    assert entry["requests"] == 6
    assert entry["refused"] == 1
    assert entry["errors"] == 2
    assert entry["slo_attainment"] == round(2 / 6, 4)
    assert entry["goodput_rps"] == 1.0  # two within the SLO over two seconds
    assert entry["prefix_hit_rate"] == 0.2
    assert entry["cross_region_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert entry["ttft_p50_ms"] == 300.0
    assert entry["orca_reports"] == 1
    # five admitted: 100, 300, 900 ms and two failures at the client timeout
    assert entry["admitted_ttft_p99_ms"] == 30000.0
    east, west = entry["by_origin"]["us-east"], entry["by_origin"]["eu-west"]
    assert (east["requests"], east["slo_attainment"], east["cross_region_share"]) == (2, 1.0, 0.5)
    assert (west["requests"], west["refused"], west["errors"], west["slo_attainment"]) == (
        4,
        1,
        2,
        0.0,
    )
    assert west["ttft_p99_ms"] == 900.0
    assert served_by(report)["eu-west"] == {"eu-west": 1, "refused-503": 1, "status-503": 2}


def test_by_phase_splits_requests_by_their_scheduled_time() -> None:
    report = Report(
        [
            result("a", "a", 200, 0.1, at=0.5),
            result("a", "a", 200, 0.9, at=1.5),
            result("b", "b", 200, 0.1, at=1.6),
        ]
    )
    phases = by_phase(report, lambda t: 0 if t < 1 else 1, 2, 500)

    def phase(slo: float, late: float, p99: float) -> dict[str, float]:
        return {
            "requests": 1,
            "slo_attainment": slo,
            "refused": 0,
            "admitted_late": late,
            "admitted_ttft_p99_ms": p99,
        }

    assert phases == [
        {"a": phase(1.0, 0.0, 100.0)},
        {"a": phase(0.0, 1.0, 900.0), "b": phase(1.0, 0.0, 100.0)},
    ]


def test_measure_of_nothing_is_zeros_not_an_error() -> None:
    entry = measure(Report(), {}, 500, 1.0, 30.0)
    assert entry["requests"] == entry["errors"] == entry["refused"] == 0
    assert entry["slo_attainment"] == entry["goodput_rps"] == entry["throughput_rps"] == 0.0
    assert entry["by_origin"] == {}


def test_an_edge_scenario_builds_without_capacity_of_its_own() -> None:
    text = (SCENARIOS / "edge_pop.yaml").read_text()
    edge = parse_scenario(text)
    assert edge.is_edge("sa-east") and edge.knobs("sa-east") == []


def test_a_scenario_may_ask_for_unary_answers() -> None:
    unary = scenario("chat").model_copy(update={"stream": False})
    work = workloads.build(unary, "tiny")
    assert work.requests and all(r.body["stream"] is False for r in work.requests)
    assert work.describe()["stream"] is False
