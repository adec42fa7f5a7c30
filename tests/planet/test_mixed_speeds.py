"""Replicas of speeds 1 and 3 side by side reach the weights of their capacities.

The routing benchmark's mixed GPUs (bench/scenarios/mixed_gpus.yaml through
`bench.routing_planet`), request by request:
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

from bench.routing_planet import bench_scenario, planet_scenario
from heliostat.planet import law as planet_law
from heliostat.planet.fluid import RunOptions
from heliostat.planet.run import _play
from heliostat.planet.scenario import PolicyName, Scenario
from heliostat.planet.topology import ReplicaId, address_of

MIXED_GPUS = bench_scenario("mixed_gpus")
SEEDS = range(6)
MODEL = "llama-70b"


def mixed_gpus(seed: int, alike: bool = False) -> Scenario:
    """The bench's mixed GPUs on the planet (`alike`: every replica of speed 1), without the
    bench's prefix affinity, as these figures were measured."""
    bench = MIXED_GPUS
    if alike:
        replicas = {
            region: [group.model_copy(update={"speed": 1.0}) for group in groups]
            for region, groups in bench.replicas.items()
        }
        bench = bench.model_copy(update={"replicas": replicas})
    return planet_scenario(bench, seed, affinity=False)


def _speeds(scenario: Scenario) -> dict[str, bool]:
    """Each replica's address -> whether it is a slow one: the canary (the file's later,
    faster groups) took the first ones of its region."""
    slow: dict[str, bool] = {}
    for region in MIXED_GPUS.regions:
        fast = sum(group.count for group in MIXED_GPUS.groups(region)[1:])
        for index in range(MIXED_GPUS.count(region)):
            slow[address_of(scenario, ReplicaId(region, index))] = index >= fast
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
        _play((mixed_gpus(seed, alike=True), "heliostat", RunOptions(PolicyName.HELIOSTAT)))
        cut = sum(sum(1 for w in s if w < 100) for s in series.values())
        shares.append(cut / sum(len(s) for s in series.values()))
    print(f"endpoint-ticks below the full weight per seed: {[round(x, 3) for x in shares]}")
    # 0.8% before and now (a lean from ENTER_NEAR's level down to LEAVE_NEAR's cut alike
    # replicas on 6 seeds of 30, up to 11% of the time).
    assert sum(shares) / len(shares) <= 0.02
