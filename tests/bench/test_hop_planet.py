"""bench/measure/hop_planet.py: who places a lent request, under heliostat's own law."""

from __future__ import annotations

from bench import routing_planet
from bench.measure import hop_planet
from heliostat.planet import discrete
from heliostat.planet.discrete import LentPlacement
from heliostat.planet.fluid import RunOptions
from heliostat.planet.scenario import PolicyName


def test_the_surge_is_the_benchs_surge() -> None:
    """regional_surge: 15 s before, 40 s of surge, eu-west the one rescuer (as
    `bench.routing_targets.surge` reads the file); no surge where every region is full."""
    surge = hop_planet.surge(routing_planet.bench_scenario("regional_surge"))
    assert surge == ((0.0, 15.0), (15.0, 55.0), ["eu-west"])
    assert hop_planet.surge(routing_planet.bench_scenario("flash_crowd")) is None
    assert hop_planet.surge(routing_planet.bench_scenario("chat")) is None


def test_a_figure_favours_the_lower_p99_and_the_higher_share() -> None:
    assert hop_planet.ahead("p99 eu-west", -10.0) == 1
    assert hop_planet.ahead("slo eu-west", -0.01) == -1
    assert hop_planet.ahead("cross eu-west", 0.1) == 0


def test_the_hop_counts_what_it_placed_and_the_law_is_restored() -> None:
    """Through the east-west cluster every lent request lands on the rescuer's replicas and
    is counted there while in flight, apart from the rescuer's own Envoy's counts."""
    scenario = hop_planet.planet("regional_surge", 0).model_copy(update={"duration": 25.0})
    run = hop_planet.Hop(scenario, RunOptions(PolicyName.HELIOSTAT), "auto", "hop")
    discrete.LENT_PLACEMENT = LentPlacement.RESCUER_RING
    placed: list[tuple[str, str]] = []
    through = run._through_east_west

    def watching(request, balancer, host, rescuer):  # type: ignore[no-untyped-def]
        chosen = through(request, balancer, host, rescuer)
        placed.append((rescuer, run.replicas[chosen].region))
        return chosen

    run._through_east_west = watching  # type: ignore[method-assign]
    try:
        run.run()
    finally:
        discrete.LENT_PLACEMENT = LentPlacement.LENDER_RING
    assert placed and all(rescuer == region for rescuer, region in placed)
    in_flight = sum(n for gws in run.east_west.values() for gw in gws for n in gw.active.values())
    assert in_flight == len(run.through)


def test_play_leaves_the_lender_placing() -> None:
    hop_planet.play("chat", 0, "rescuer", "auto")
    assert discrete.LENT_PLACEMENT is LentPlacement.LENDER_RING
