"""The routing scenarios as planet scenarios (`bench.routing_planet`), without playing them."""

from __future__ import annotations

import pytest

from bench.routing import SCENARIOS
from bench.routing_planet import bench_scenario, planet_scenario
from heliostat.planet.demand import DemandModel

TRANSLATED = sorted(p.stem for p in SCENARIOS.glob("*.yaml") if p.stem != "edge_pop")


@pytest.mark.parametrize("name", TRANSLATED)
def test_the_planet_offers_every_phase_s_load(name: str) -> None:
    """Mid-phase, each region's rate is the phase's share of what the first phase's rate
    says its capacity is (the mean of both ends on a ramp)."""
    bench = bench_scenario(name)
    demand = DemandModel(planet_scenario(bench, seed=0))
    first = bench.phases[0]
    start, previous = 0.0, first
    for phase in bench.phases:
        for region in bench.regions:
            capacity = demand.rate(region, 0.0) / first.load[region]
            share = phase.load[region]
            if phase.ramp:
                share = (share + previous.load[region]) / 2
            assert demand.rate(region, start + phase.seconds / 2) == pytest.approx(share * capacity)
        start, previous = start + phase.seconds, phase
    assert demand.scenario.duration == bench.seconds


def test_a_second_speed_is_a_canary_and_affinity_can_be_left_out() -> None:
    planet = planet_scenario(bench_scenario("mixed_gpus"), seed=0, affinity=False)
    assert planet.model.engine.speed == 1.0
    assert {(e.region, round(e.share, 3), e.speed_factor) for e in planet.events} == {
        ("us-east", 0.5, 3.0),
        ("eu-west", 0.333, 3.0),
        ("ap-southeast", 0.5, 3.0),
    }
    assert "affinity" not in planet.policy
    assert "affinity" in planet_scenario(bench_scenario("mixed_gpus"), seed=0).policy


def test_an_edge_region_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="edge_pop: rps"):
        planet_scenario(bench_scenario("edge_pop"), seed=0)
