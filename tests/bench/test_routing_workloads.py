"""The routing benchmark's workloads and measures, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from bench import routing_fleet as fleet
from bench import routing_workloads as workloads
from bench.routing_measure import FIELDS, measure, served_by
from heliostat.sim.loadgen import Report, Result, Shot


@pytest.fixture(scope="module")
def built() -> dict[str, workloads.Workload]:
    return {name: workloads.build(name, 3.0) for name in workloads.WORKLOADS}


def test_a_workload_is_the_same_every_time_it_is_built(
    built: dict[str, workloads.Workload],
) -> None:
    again = workloads.build("shared_prefix", 3.0)
    assert again.requests == built["shared_prefix"].requests
    other = workloads.build("shared_prefix", 3.0, seed=workloads.SEED + 1)
    assert other.requests != again.requests


def test_shots_differ_between_policies_only_in_the_gateway_port(
    built: dict[str, workloads.Workload],
) -> None:
    work = built["chat"]
    a = work.shots({r: 1000 + i for i, r in enumerate(fleet.PER_REGION)})
    b = work.shots({r: 2000 + i for i, r in enumerate(fleet.PER_REGION)})
    assert [(s.at, s.body, s.label, s.headers) for s in a] == [
        (s.at, s.body, s.label, s.headers) for s in b
    ]
    assert {s.url.split(":")[2].split("/")[0] for s in a}.isdisjoint(
        {s.url.split(":")[2].split("/")[0] for s in b}
    )
    assert {s.label for s in a} == set(fleet.PER_REGION)


def test_rates_follow_each_regions_capacity(built: dict[str, workloads.Workload]) -> None:
    chat = built["chat"]
    per_replica = {r: chat.rates[r] / n for r, n in fleet.PER_REGION.items()}
    assert len({round(v, 6) for v in per_replica.values()}) == 1
    assert per_replica["us-east"] == pytest.approx(workloads.CHAT_LOAD * chat.capacity_rps)
    surge = built["regional_surge"]
    assert surge.rates["ap-southeast"] == pytest.approx(
        workloads.SURGE_LOAD * surge.capacity_rps * fleet.PER_REGION["ap-southeast"]
    )
    assert surge.rates["eu-west"] == pytest.approx(
        workloads.SURGE_OTHERS_LOAD * surge.capacity_rps * fleet.PER_REGION["eu-west"]
    )


def test_capacity_is_computed_from_the_replica_engine(
    built: dict[str, workloads.Workload],
) -> None:
    # Long shared prompts are slower to serve than short chats on the same replica.
    assert 0 < built["shared_prefix"].capacity_rps < built["chat"].capacity_rps
    assert built["regional_surge"].capacity_rps == built["chat"].capacity_rps


def test_a_groups_requests_share_the_prompt_start_the_prefix_key_hashes(
    built: dict[str, workloads.Workload],
) -> None:
    prompts = [r.body["prompt"] for r in built["shared_prefix"].requests]
    heads = {p[: fleet.PREFIX_CHARS] for p in prompts}
    assert 1 < len(heads) <= workloads.GROUPS
    system_chars = workloads.SYSTEM_TOKENS * 4
    assert system_chars > fleet.PREFIX_CHARS  # the key never reaches a user's question
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


def test_an_unknown_workload_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown workload 'chats'"):
        workloads.build("chats", 1.0)


def result(label: str, region: str | None, status: int, ttft: float | None) -> Result:
    shot = Shot(0.0, "http://127.0.0.1:1/v1/completions", {}, {}, label)
    return Result(shot, status, "r", region, {}, started=10.0, ttft=ttft, latency=1.0)


def stats(hits: int, queries: int) -> dict[str, Any]:
    return {"prefix_cache": {"hits": hits, "queries": queries}}


def test_measure_counts_errors_as_slo_misses_and_cross_region_answers() -> None:
    report = Report(
        [
            result("us-east", "us-east", 200, 0.1),
            result("us-east", "eu-west", 200, 0.3),
            result("eu-west", "eu-west", 200, 0.9),
            result("eu-west", None, 503, None),
        ]
    )
    entry = measure(report, {"a": stats(30, 100), "b": stats(10, 100)}, slo_ttft_ms=500)
    assert set(entry) == set(FIELDS)
    assert entry["requests"] == 4
    assert entry["errors"] == 1
    assert entry["slo_attainment"] == 0.5  # two of four within 500 ms; the error misses
    assert entry["prefix_hit_rate"] == 0.2
    assert entry["cross_region_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert entry["ttft_p50_ms"] == 300.0
    assert entry["throughput_rps"] == 3.0  # three OK answers over one second
    assert served_by(report) == {
        "eu-west": {"eu-west": 1, "status-503": 1},
        "us-east": {"eu-west": 1, "us-east": 1},
    }


def test_measure_of_nothing_is_zeros_not_an_error() -> None:
    entry = measure(Report(), {}, slo_ttft_ms=500)
    assert entry == dict.fromkeys(FIELDS, 0) | {
        k: 0.0 for k in FIELDS if k not in ("requests", "errors")
    }
