"""Adaptive affinity through a real Envoy: hashing on trial at start, least-request once the
engines' prefix caches show that prompts share nothing, consistent hashing again once they
show shared prefixes (`heliostat.balance.affinity`).

One region, four simulated vLLM replicas with small KV caches, heliostat serve and its
gateway. The policy asks for prefix affinity with the default `mode: auto`. What is asserted
is what Envoy holds (`config_dump`: the cluster's lb_policy and heliostat's reason in its
metadata; `/clusters`: host weights), what heliostat says (`/debug/state`), and what the
replicas counted (`/sim/stats`).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heliostat.policy.traffic import Affinity
from heliostat.sim import loadgen
from heliostat.xds.translate.affinity import RING_SIZE
from tests.e2e.harness import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    SimFleet,
    free_port,
    wait_until,
    write_policy,
)

pytestmark = pytest.mark.envoy

MODEL = "llama-70b"
REPLICAS = 4


def _document(gateway_port: int) -> dict[str, Any]:
    endpoints = [
        {
            "address": f"{LOCALHOST}:{free_port()}",
            "region": "eu-west",
            "sim": {"max_num_seqs": 8, "num_gpu_blocks": 160, "speed": 20.0},
        }
        for _ in range(REPLICAS)
    ]
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": "adaptive"},
        "spec": {
            "regions": {"eu-west": {}},
            "gateway": {"port": gateway_port, "address": LOCALHOST},
            "models": [
                {
                    "name": MODEL,
                    "slo": {"ttft_ms": 800, "network_budget_ms": 150},
                    "signals": {"interval": "500ms", "timeout": "250ms", "stale_after": "1500ms"},
                    "thresholds": {"queue": 8, "failures": 2},
                    "affinity": {"prefix_chars": 1000},  # mode: auto, the default
                    "endpoints": endpoints,
                }
            ],
        },
    }


def _cluster(envoy: Envoy) -> dict[str, Any]:
    for config in envoy.config_dump(include_eds=False)["configs"]:
        for entry in config.get("dynamic_active_clusters", []):
            if entry["cluster"]["name"] == MODEL:
                return dict(entry["cluster"])
    return {}


def _why(cluster: dict[str, Any]) -> dict[str, Any]:
    return dict(cluster.get("metadata", {}).get("filter_metadata", {}).get("heliostat", {}))


def _shots(port: int, seconds: float, rate: float, shared: bool, seed: int) -> list[loadgen.Shot]:
    """Chat completions: unique prompts, or 12 groups sharing a 2,400-character system prompt
    (600 simulated tokens; a replica's cache holds about four of them)."""
    rng = random.Random(seed)
    systems = [
        " ".join(f"group {g} rule {i:03d}: answer briefly." for i in range(80))[:2400]
        for g in range(12)
    ]
    shots = []
    for at in loadgen.poisson_times(rate, seconds, rng):
        words = " ".join(f"w{rng.randrange(10**6)}" for _ in range(60))
        text = f"{rng.choice(systems)}\n\n{words}" if shared else words
        body = {"model": MODEL, "prompt": text, "max_tokens": 8, "stream": True}
        shots.append(
            loadgen.Shot(at, f"http://{LOCALHOST}:{port}/v1/completions", {}, body, "eu-west")
        )
    return shots


def _hit_rate(
    fleet: SimFleet,
    before: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]] | None = None,
) -> float:
    """Prompt tokens found in the replicas' prefix caches / looked up, between two counts."""
    after = after or _counters(fleet)
    hits = sum(after[a][0] - before[a][0] for a in fleet.addresses)
    queries = sum(after[a][1] - before[a][1] for a in fleet.addresses)
    return hits / queries if queries else 0.0


def _counters(fleet: SimFleet) -> dict[str, tuple[int, int]]:
    result = {}
    for address in fleet.addresses:
        cache = fleet.stats(address)["prefix_cache"]
        result[address] = (cache["hits"], cache["queries"])
    return result


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes.
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_least_request_without_shared_prefixes_then_hashing_once_they_are_shared(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    policy = tmp_path / "policy.yaml"
    write_policy(policy, _document(port))
    fleet = SimFleet(policy, tmp_path, speed=None)
    processes.append(fleet)
    fleet.start()
    heliostat = Heliostat(policy, tmp_path)
    processes.append(heliostat)
    heliostat.start()
    envoy = Envoy(tmp_path, heliostat, node_id="gw-eu", region="eu-west", delta=False)
    processes.append(envoy)
    envoy.start()
    wait_until(lambda: bool(_cluster(envoy)), timeout=15, message="model cluster in Envoy")

    # 1. Unique prompts: hashing is on trial at first (the policy asks for prefix affinity),
    # with the tightest bound; the caches do not hit, so least-request, equal weights.
    trial = _cluster(envoy)
    assert trial.get("lb_policy") == "RING_HASH"
    assert str(_why(trial)["why"]).startswith("prefix affinity configured")
    assert trial["common_lb_config"]["consistent_hashing_lb_config"]["hash_balance_factor"] == 100
    # Envoy took the ring of one size (uint64 values are strings in config_dump's JSON).
    ring = trial["ring_hash_lb_config"]
    assert int(ring["minimum_ring_size"]) == int(ring["maximum_ring_size"]) == RING_SIZE
    before = _counters(fleet)
    report = asyncio.run(loadgen.run(_shots(port, 8, 20, shared=False, seed=1)))
    assert len(report.ok) == len(report.results)
    cluster = _cluster(envoy)
    assert cluster.get("lb_policy", "ROUND_ROBIN") == "LEAST_REQUEST"
    assert _why(cluster)["lb"] == "least_request"
    assert str(_why(cluster)["why"]).startswith("prompts share no prefixes")
    weights = {h["weight"] for h in envoy.hosts(MODEL).values()}
    assert weights == {"100"}, weights  # equal: Envoy picks by choice-of-two
    unique_hits = _hit_rate(fleet, before)
    decided = heliostat.state()["control"]["decisions"]["models"][MODEL]["affinity"]
    assert decided["hashing"] is False
    print(f"\nunique prompts: least-request, hit rate {unique_hits:.1%}")

    # 2. Shared system prompts: the engines' caches hit even under least-request; heliostat
    # sees it and switches the cluster to bounded-load hashing on the prefix key.
    began = time.monotonic()
    shared_start = _counters(fleet)
    finish = _background(_shots(port, 30, 20, shared=True, seed=2))
    wait_until(  # typically 5-6 s; more on a busy machine
        lambda: _cluster(envoy).get("lb_policy") == "RING_HASH",
        timeout=20,
        interval=0.25,
        message="the cluster switches to ring hash",
    )
    switched_after = time.monotonic() - began
    at_switch = _counters(fleet)
    shared_report = finish()
    assert len(shared_report.ok) == len(shared_report.results)
    least_request_hits = _hit_rate(fleet, shared_start, at_switch)
    hashed_hits = _hit_rate(fleet, at_switch)
    cluster = _cluster(envoy)
    why = _why(cluster)
    assert why["lb"] == "ring_hash"
    assert str(why["why"]).startswith("prompts share prefixes")
    # The bound is the region's (`affinity.step_bounds`: the policy leaves it to heliostat):
    # the operator's (the default) until the costs of a spill and a wait are judged, then
    # tight (1.0) or the operator's; Envoy holds the one heliostat decided, and says why.
    factor = cluster["common_lb_config"]["consistent_hashing_lb_config"]["hash_balance_factor"]
    assert factor == round(why["bounded_load"] * 100)
    assert factor in (100, round(Affinity().bounded_load * 100))
    assert "bound_why" in why
    decided = heliostat.state()["control"]["decisions"]["models"][MODEL]["affinity"]
    assert decided["hashing"] is True
    assert "eu-west" in decided["bounds"]

    def agreed() -> bool:
        bound = heliostat.state()["control"]["decisions"]["models"][MODEL]["affinity"]
        tight = bound["bounds"]["eu-west"]["tight"]
        held = _cluster(envoy)["common_lb_config"]["consistent_hashing_lb_config"]
        return bool(held["hash_balance_factor"] == (100 if tight else factor_default))

    factor_default = round(Affinity().bounded_load * 100)
    wait_until(agreed, timeout=10, interval=0.25, message="Envoy holds the region's bound")
    # (The replicas here are never busy, so their capacity, and the wait for a slot, are not
    # measured: the region keeps the operator's bound, and says why.)
    held = _why(_cluster(envoy))
    print(f"the region's bound in Envoy: {held['bounded_load']} ({held['bound_why']})")

    print(
        f"shared prefixes: ring hash after {switched_after:.1f}s; prefix-cache hit rate "
        f"{least_request_hits:.1%} before the switch (least-request), {hashed_hits:.1%} after"
    )
    assert hashed_hits >= least_request_hits + 0.1


def _background(shots: list[loadgen.Shot]) -> Callable[[], loadgen.Report]:
    """Send `shots` from a thread; the returned call waits for the report."""
    outcome: dict[str, loadgen.Report] = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault("report", asyncio.run(loadgen.run(shots))),
        daemon=True,
    )
    runner.start()

    def finish() -> loadgen.Report:
        runner.join(timeout=90)
        return outcome["report"]

    return finish
