"""Replicas of speeds 1 and 3 side by side reach the weights of their capacities.

The routing benchmark's mixed GPUs (bench/scenarios/mixed_gpus.yaml), request by request:
us-east 2 replicas of speed 1 and 2 of speed 3, eu-west 2 and 1, ap-southeast 1 and 1, 4
slots each, the chat mix, every region's users at a steady 65% of its capacity, a 500 ms
TTFT objective and a 170 ms budget, 40 seconds from a cold start as the benchmark plays it.

A slow replica's weight is W_MAX x its observed capacity over its region's best, in sqrt(2)
tiers (`weights.capacity_tier`): 1/3 is tier 3, weight 35. The tier moves only as far as the
ratio's confidence bound (2.5 standard errors of both estimates), and a ratio of two
30-second estimates never gets firmer than about 15% (a slow replica completes ~3
requests/s; the busy share's own error is 6%): 0.33 x (1 + 2.5 x 0.15) reads as 0.46, tier
2. So the slow replicas stayed at 50 or 71, a third to two thirds more traffic than they
can serve: their queues made most of heliostat's late requests, and the `near` band cut
them and gave the cut back as they cooled (the weight turns counted by the benchmark).

Now the load may settle what the counts cannot (`endpoints._lean`): a replica running hotter
than its peers (the `near` band's entry: ENTER_NEAR and NEAR_MARGIN above their mean) whose
estimate lies beyond the tier's hysteresis and whose one-standard-error bound lies past the
midpoint takes one step down; cooler than busy peers, one step up. Replicas alike stay
alike: their estimates are not beyond the hysteresis (the same runs with every replica of
speed 1: 29 of 30 seeds identical, tests/planet below).

Measured (/tmp/mixed11/mixed.py, the scenario below, seeds 0-29): SLO met 93.27% -> 93.99%,
slow replicas at their tier (weight <= 36 over the last 10 s) 5 -> 17 of 30 on seeds 0-5;
every replica of speed 1: 94.96% -> 94.95%.

Seeded: six 40-second runs take about 12 s.
"""

from __future__ import annotations

from typing import Any

import pytest

from heliostat.planet import law as planet_law
from heliostat.planet.demand import Mix
from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.fluid import RunOptions, engine_config
from heliostat.planet.run import _play
from heliostat.planet.scenario import PolicyName, Scenario
from heliostat.planet.topology import ReplicaId, address_of

# Per region: replicas of speed 1, then of speed FAST (the canary event picks the first ones).
FLEET = {"us-east": (2, 2), "eu-west": (2, 1), "ap-southeast": (1, 1)}
FAST = 3.0
LOAD = 0.65
SEEDS = range(6)
MODEL = "llama-70b"


def mixed_gpus(seed: int, fast: float = FAST) -> Scenario:
    document: dict[str, Any] = {
        "name": "mixed-gpus",
        "duration": "40s",
        "mode": "discrete",
        "seed": seed,
        "gateways": 1,
        "model": {
            "name": MODEL,
            "engine": {"max_num_seqs": 4, "speed": 1.0, "num_gpu_blocks": 512},
            "prompt_tokens": {"median": 160, "sigma": 0.9, "min": 16, "max": 1024},
            "output_tokens": {"median": 24, "sigma": 0.8, "min": 4, "max": 128},
        },
        "slo": {"ttft_ms": 500, "end_to_end_ms": 500, "network_budget_ms": 170},
        "regions": {
            "us-east": {"rtt_ms": {"eu-west": 80, "ap-southeast": 210}, "replicas": 4},
            "eu-west": {"rtt_ms": {"ap-southeast": 160}, "replicas": 3},
            "ap-southeast": {"replicas": 2},
        },
        "demand": {region: {"curve": [1.0] * 24} for region in FLEET},
        # As bench/routing_fleet.py writes the operator's policy for any scenario.
        "policy": {
            "slo": {"ttft_ms": 500, "network_budget_ms": 170},
            "signals": {"interval": "500ms", "timeout": "250ms", "stale_after": "1500ms"},
            "thresholds": {"queue": 2, "kv": 0.8, "failures": 2},
            "overflow": {},
        },
        "policies": ["heliostat"],
    }
    base = Scenario.model_validate(document)
    slow = FastReplica.of(engine_config(base), Mix.of(base))
    one, other = slow.capacity, slow.with_speed(fast).capacity
    document["demand"] = {
        region: {"curve": [LOAD * (n * one + m * other)] * 24} for region, (n, m) in FLEET.items()
    }
    document["events"] = [
        {"kind": "canary", "region": region, "at": 0.0, "share": m / (n + m), "speed_factor": fast}
        for region, (n, m) in FLEET.items()
    ]
    return Scenario.model_validate(document)


def _speeds(scenario: Scenario) -> dict[str, bool]:
    """Each replica's address -> whether it is a slow one (the canary took the first ones)."""
    slow: dict[str, bool] = {}
    for region, (n, m) in FLEET.items():
        for index in range(n + m):
            slow[address_of(scenario, ReplicaId(region, index))] = index >= m
    return slow


def _own_weights(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Every endpoint's weight in its own region's view, tick by tick, while a run plays."""
    series: dict[str, list[int]] = {}
    tick = planet_law.ControlLaw.tick

    def recording(self: planet_law.ControlLaw, *args: Any, **kwargs: Any) -> Any:
        views = tick(self, *args, **kwargs)
        for region, view in views.by_region.items():
            cluster = view.cluster(MODEL)
            if cluster is None:
                continue
            for endpoint in cluster.endpoints():
                if endpoint.region == region:
                    series.setdefault(endpoint.address, []).append(endpoint.weight)
        return views

    monkeypatch.setattr(planet_law.ControlLaw, "tick", recording)
    return series


def test_slow_replicas_reach_the_weight_of_their_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    series = _own_weights(monkeypatch)
    settled = slow_count = 0
    alike_cut = 0
    attainment = []
    for seed in SEEDS:
        series.clear()
        scenario = mixed_gpus(seed)
        record = _play((scenario, "heliostat", RunOptions(PolicyName.HELIOSTAT))).record
        attainment.append(record.summary(0.5)["slo_attainment"])
        for address, is_slow in _speeds(scenario).items():
            last = series[address][-20:]  # the last 10 s
            mean = sum(last) / len(last)
            if is_slow:
                slow_count += 1
                settled += mean <= 36
            else:
                alike_cut += mean < 90
    print(f"slow replicas at their tier {settled} of {slow_count}; SLO {attainment}")
    # Before: 5 of 30 (the others at 50 or 71); now 17.
    assert settled >= 12
    # The fast replicas keep the full weight: a fast one is the best of its region.
    assert alike_cut <= 1
    # Without the load's lean 94.1% on these seeds, 94.7% with it (full scan and the
    # start-up refusal rules in; before them 94.0% -> 95.0%; seeds 0-29: 93.3% -> 94.0%).
    assert sum(attainment) / len(attainment) >= 0.945


def test_alike_replicas_keep_equal_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fleet with every replica of speed 1: no replica leaves the full weight for
    long (the load's lean acts only where the estimate is beyond the tier's hysteresis)."""
    series = _own_weights(monkeypatch)
    shares = []
    for seed in SEEDS:
        series.clear()
        _play((mixed_gpus(seed, fast=1.0), "heliostat", RunOptions(PolicyName.HELIOSTAT)))
        cut = sum(sum(1 for w in s if w < 100) for s in series.values())
        shares.append(cut / sum(len(s) for s in series.values()))
    print(f"endpoint-ticks below the full weight per seed: {[round(x, 3) for x in shares]}")
    # 0.8% before and now (a lean from ENTER_NEAR's level down to LEAVE_NEAR's cut alike
    # replicas on 6 seeds of 30, up to 11% of the time).
    assert sum(shares) / len(shares) <= 0.02
