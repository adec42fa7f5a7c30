"""Play a scenario once per policy (and the scaling comparison), and gather the results.

Runs, all on the scenario's demand and events:

- every policy of `scenario.policies` on the scenario's fleet, as it is;
- with `scaling.enabled`: `heliostat+scaling` (heliostat with the autoscaler, starting from
  the scenario's fleet) and `peak_sized_fleet` (heliostat, no autoscaler, on a fixed fleet
  sized for each region's own peak: the replicas that carry the region's users at peak at
  the scaling target, edge regions' users counted in their nearest region).

Runs are independent; `jobs` > 1 plays them in that many processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from heliostat.planet import judge
from heliostat.planet.autoscaler import gateway_demand
from heliostat.planet.demand import DemandModel, Mix
from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.fluid import FluidRun, RunOptions, engine_config
from heliostat.planet.record import Record
from heliostat.planet.scenario import Mode, PolicyName, Scenario

SCALED = "heliostat+scaling"
PEAK_SIZED = "peak_sized_fleet"


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    record: Record
    wall_s: float
    fleet: dict[str, int]
    cpu_s: float = 0.0


def peak_sized_fleet(scenario: Scenario) -> dict[str, int]:
    """Replicas per region that hold the region's own users at peak at the scaling target."""
    capacity = FastReplica.of(engine_config(scenario), Mix.of(scenario)).capacity
    demand = DemandModel(scenario)
    serving = {r for r, reg in scenario.regions.items() if reg.replicas > 0}
    peaks = {o: demand.peak(o) for o in demand.origins}
    per_region = gateway_demand(scenario, peaks, serving)
    target = scenario.scaling.target_utilisation
    return {r: max(1, math.ceil(d / (capacity * target))) for r, d in sorted(per_region.items())}


def plan_runs(scenario: Scenario) -> list[tuple[str, RunOptions]]:
    runs = [(p.value, RunOptions(p)) for p in scenario.policies]
    if scenario.scaling.enabled:
        runs.append((SCALED, RunOptions(PolicyName.HELIOSTAT, scaling=True)))
        runs.append(
            (PEAK_SIZED, RunOptions(PolicyName.HELIOSTAT, fleet=peak_sized_fleet(scenario)))
        )
    return runs


def _play(args: tuple[Scenario, str, RunOptions]) -> Outcome:
    scenario, name, options = args
    cpu = time.process_time()
    if scenario.mode is Mode.DISCRETE:
        from heliostat.planet.discrete import DiscreteRun

        discrete = DiscreteRun(scenario, options)
        record = discrete.run()
        used = time.process_time() - cpu
        return Outcome(name, record, discrete.wall_s, discrete.fleet_counts(), used)
    run = FluidRun(scenario, options)
    record = run.run()
    fleet = options.fleet or {r: reg.replicas for r, reg in scenario.regions.items()}
    return Outcome(name, record, run.wall_s, dict(fleet), time.process_time() - cpu)


def play(
    scenario: Scenario,
    jobs: int = 1,
    only: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every run of the scenario, then the results (see `results`)."""
    started = time.perf_counter()
    runs = [(n, o) for n, o in plan_runs(scenario) if only is None or n in only]
    outcomes: list[Outcome] = []
    if jobs > 1 and len(runs) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for outcome in pool.map(_play, [(scenario, n, o) for n, o in runs]):
                outcomes.append(outcome)
                if progress is not None:
                    progress(f"{outcome.name}: {outcome.wall_s:.1f}s ({outcome.cpu_s:.1f}s CPU)")
    else:
        for name, options in runs:
            outcome = _play((scenario, name, options))
            outcomes.append(outcome)
            if progress is not None:
                progress(f"{name}: {outcome.wall_s:.1f}s ({outcome.cpu_s:.1f}s CPU)")
    return results(scenario, outcomes, time.perf_counter() - started)


def results(scenario: Scenario, outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    slo_s = scenario.slo.end_to_end_ms / 1000.0
    capacity = FastReplica.of(engine_config(scenario), Mix.of(scenario)).capacity
    demand = DemandModel(scenario)
    policies: dict[str, Any] = {}
    losses: dict[str, Any] = {}
    series: dict[str, Any] = {}
    for outcome in outcomes:
        summary = outcome.record.summary(slo_s)
        summary["by_origin"] = outcome.record.by_origin()
        summary["wall_s"] = round(outcome.wall_s, 2)
        summary["cpu_s"] = round(outcome.cpu_s, 2)
        summary["fleet"] = outcome.fleet
        if "autoscaler" in outcome.record.notes:
            summary["scaling_actions"] = len(
                [d for d in outcome.record.notes["autoscaler"] if d["moves"]]
            )
        policies[outcome.name] = summary
        series[outcome.name] = outcome.record.timeseries()
        for event in judge.loss_events(scenario):
            rates = demand.rates(event.at)
            per_region = {r: c * capacity for r, c in outcome.fleet.items()}
            share = judge.unholdable(scenario, rates, per_region, event.region)
            losses.setdefault(
                outcome.name, judge.region_loss(scenario, outcome.record, event, share)
            )
    result: dict[str, Any] = {
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "duration_s": scenario.duration,
            "mode": scenario.mode.value,
            "step_s": scenario.step,
            "slo": scenario.slo.model_dump(),
            "regions": {
                r: {"replicas": reg.replicas, "gateways": scenario.gateways_of(r)}
                for r, reg in sorted(scenario.regions.items())
            },
            "replica_capacity_rps": round(capacity, 2),
            "gpus_per_replica": scenario.model.gpus_per_replica,
            "peak_offered_rps": {o: round(demand.peak(o), 1) for o in demand.origins},
        },
        "policies": policies,
        "recovery_ticks": losses.get("heliostat", {}).get("recovery_ticks"),
        "region_loss": losses,
        "wall_s": round(wall_s, 2),
        "cpu_s": round(sum(o.cpu_s for o in outcomes), 2),
        "timeseries": series,
    }
    result["targets"] = judge.targets(result, scenario)
    return result
