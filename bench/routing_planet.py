"""A routing scenario (bench/scenarios/*.yaml) as a planet scenario (`heliostat simulate`).

The planet's tests and bench/measure replay the bench's fleets request by request. Built
from the bench's own file and operator policy (`routing_fleet.model_overrides`), the fleet,
the SLO, the load and the policy have one source, and a change to the bench reaches the
planet runs. heliostat/ may not import bench/, so the translation lives here.

The planet serves one engine per model and gives load as requests/s with flash crowds, so:

- a region's replicas may differ in speed only: its first group is the model's engine, a
  group of another speed a canary of the region (`speed_factor` over the first group's
  speed; the planet's canary takes the region's first replicas);
- each region's demand is its first phase's `load` times its replicas' capacity in the
  planet's own model (`FastReplica`); every later change of a region's load is a flash crowd
  from the phase's start (ramped over the phase when the phase ramps) held to the end. The
  fast model counts no shared prefix, so a shared_prefix file's load reads against replicas
  that hit every prefix (bench/measure/prefix_planet.py gives its own rate);
- the bench judges a request by its first token as its client sees it (a cross-region hop
  included) against the TTFT objective: the end-to-end objective is the TTFT's.
"""

from __future__ import annotations

from typing import Any

from bench import routing_fleet
from bench import routing_workloads as workloads
from bench.routing import SCENARIOS
from bench.scenario import Scenario as BenchScenario
from bench.scenario import load_scenario
from heliostat.planet.demand import Mix
from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.fluid import engine_config
from heliostat.planet.scenario import Scenario
from heliostat.sim.engine import EngineConfig

# The simulator's own values for the knobs a group leaves unset.
SIM_DEFAULTS = {
    key: getattr(EngineConfig(), key)
    for key in ("max_num_seqs", "num_gpu_blocks", "block_size", "speed")
}


def bench_scenario(name: str) -> BenchScenario:
    """bench/scenarios/NAME.yaml, checked as the bench checks it."""
    return load_scenario(SCENARIOS / f"{name}.yaml")


def planet_scenario(
    bench: BenchScenario,
    seed: int,
    *,
    affinity: bool = True,
    policies: tuple[str, ...] = ("heliostat",),
) -> Scenario:
    """The bench scenario on the planet, request by request (discrete, one gateway a region,
    as the bench's mesh has), with the bench's operator policy (`affinity=False`: without
    its prefix affinity)."""
    document: dict[str, Any] = {
        "name": bench.name,
        "duration": bench.seconds,
        "mode": "discrete",
        "seed": seed,
        "gateways": 1,
        "model": model(bench),
        "slo": {**slo(bench), "end_to_end_ms": bench.slo.ttft_ms},
        "regions": regions(bench),
        "demand": {region: {"curve": [1.0] * 24} for region in bench.regions},
        "policy": policy(bench, affinity=affinity),
        "policies": list(policies),
    }
    # Demand is a share of capacity, and capacity the planet's model of the engine: known
    # only once the document is a scenario.
    capacity = _capacities(bench, Scenario.model_validate(document))
    document["demand"], crowds = demand(bench, capacity)
    document["events"] = [*canaries(bench), *crowds]
    return Scenario.model_validate(document)


def slo(bench: BenchScenario) -> dict[str, float]:
    return {"ttft_ms": bench.slo.ttft_ms, "network_budget_ms": bench.slo.network_budget_ms}


def policy(bench: BenchScenario, *, affinity: bool = True) -> dict[str, Any]:
    """The model section the bench gives heliostat for this fleet, as the planet's `policy`.

    `affinity=False` leaves out the prefix affinity the bench turns on for every workload:
    the planet tests of the chat fleets were measured without it (on the planet a chat
    request has no prefix to hash), and keep their figures."""
    section = routing_fleet.model_overrides(bench)
    if not affinity:
        del section["affinity"]
    return section


def regions(bench: BenchScenario) -> dict[str, dict[str, Any]]:
    return {
        region: {"rtt_ms": dict(spec.rtt_ms), "replicas": bench.count(region)}
        for region, spec in bench.regions.items()
    }


def model(bench: BenchScenario) -> dict[str, Any]:
    """The model's engine (the first group's knobs, the simulator's defaults for unset ones)
    and the workload's requests."""
    requests: dict[str, Any] = {key: dict(spread) for key, spread in workloads.CHAT_TOKENS.items()}
    if bench.workload == "shared_prefix":
        requests = {
            "prompt_tokens": _exactly(workloads.QUESTION_TOKENS),
            "output_tokens": _exactly(workloads.SHARED_OUTPUT_TOKENS),
            "prefix_groups": workloads.GROUPS,
            "prefix_tokens": workloads.SYSTEM_TOKENS,
        }
    return {"engine": _engine(bench), **requests}


def canaries(bench: BenchScenario) -> list[dict[str, Any]]:
    """A region's replicas of another speed than the model's, as a canary from the start."""
    base = _engine(bench)["speed"]
    events = []
    for region in bench.regions:
        groups = _groups(bench, region)
        others = {knobs["speed"] for _, knobs in groups} - {base}
        if len(others) > 1:
            raise ValueError(f"{bench.name}: {region} has replicas of more than two speeds")
        for speed in others:
            count = sum(n for n, knobs in groups if knobs["speed"] == speed)
            events.append(
                {
                    "kind": "canary",
                    "region": region,
                    "at": 0.0,
                    "share": count / bench.count(region),
                    "speed_factor": speed / base,
                }
            )
    return events


def demand(
    bench: BenchScenario, capacity: dict[str, float]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each region's requests/s in the first phase, and the later phases as flash crowds."""
    first = bench.phases[0]
    if any(phase.rps for phase in bench.phases):
        raise ValueError(f"{bench.name}: rps phases (edge regions) are not translated")
    curves = {r: {"curve": [first.load.get(r, 0.0) * capacity[r]] * 24} for r in bench.regions}
    crowds: list[dict[str, Any]] = []
    at, previous = 0.0, first
    for phase in bench.phases[1:]:
        at += previous.seconds
        factors: dict[float, list[str]] = {}
        for region in bench.regions:
            was, now = previous.load.get(region, 0.0), phase.load.get(region, 0.0)
            if was != now:
                if was == 0:
                    raise ValueError(f"{bench.name}: {region} starts offering mid-run")
                factors.setdefault(now / was, []).append(region)
        for factor, changed in factors.items():
            crowd = {
                "kind": "flash_crowd",
                "at": at,
                "ramp": phase.seconds if phase.ramp else 0.0,
                "hold": bench.seconds,
                "factor": factor,
            }
            if len(changed) < len(bench.regions):
                crowd["regions"] = changed
            crowds.append(crowd)
        previous = phase
    return curves, crowds


def _capacities(bench: BenchScenario, planet: Scenario) -> dict[str, float]:
    """Requests/s each region's replicas complete when full, in the planet's fast model."""
    replica = FastReplica.of(engine_config(planet), Mix.of(planet))
    base = planet.model.engine.speed
    return {
        region: sum(
            count * replica.with_speed(knobs["speed"] / base).capacity
            for count, knobs in _groups(bench, region)
        )
        for region in bench.regions
    }


def _groups(bench: BenchScenario, region: str) -> list[tuple[int, dict[str, Any]]]:
    """A region's groups of replicas: their count and engine knobs (unset ones the
    simulator's defaults, as the bench's replicas run)."""
    return [
        (group.count, {**SIM_DEFAULTS, **group.model_dump(exclude={"count"}, exclude_none=True)})
        for group in bench.groups(region)
        if group.count
    ]


def _engine(bench: BenchScenario) -> dict[str, Any]:
    """The model's one engine, the first group's: replicas may differ in their speed only."""
    engines = [knobs for r in bench.regions for _, knobs in _groups(bench, r)]
    first = engines[0]
    if any({**knobs, "speed": first["speed"]} != first for knobs in engines):
        raise ValueError(f"{bench.name}: replicas differ in more than their speed")
    return first


def _exactly(tokens: int) -> dict[str, float]:
    return {"median": tokens, "sigma": 0.0, "min": tokens, "max": tokens}
