"""A scenario's fleet, and the one operator policy heliostat is given for every scenario.

The fleet is what the scenario file says: its regions and RTTs, and per region its simulated
vLLM replicas with their own knobs (speed, running slots, KV pool), or none for an edge
region. `heliostat.lab.mesh` starts it (one `heliostat sim fleet` process per region with
replicas, `heliostat serve`, one gateway Envoy per region).

The policy is derived from the scenario by the same rules every time, as an operator would
write it for that fleet, never tuned to a scenario: heliostat must adapt to the workload.

- the model's SLO (TTFT objective and network budget) is the scenario's;
- every replica is an endpoint with its region and its slots (`max_num_seqs`);
- signals every 500 ms (timeout 250 ms, stale after 1.5 s), a replica is unhealthy after
  2 failed scrapes; its queue threshold is half the slots of the smallest replica (at least
  1) and its KV threshold 0.8;
- prefix affinity on the first PREFIX_CHARS characters of the prompt, as an operator serving
  assistants with system prompts turns on once for all traffic; heliostat's defaults for
  everything else (bounded load, overflow, shedding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bench.scenario import Scenario
from heliostat.lab.mesh import MODEL
from heliostat.sim.engine import EngineConfig

PREFIX_CHARS = 1024
KV_THRESHOLD = 0.8
SIGNALS = {"interval": "500ms", "timeout": "250ms", "stale_after": "1500ms"}
# The simulator's own defaults for the knobs a scenario leaves unset (the mesh has others).
DEFAULT_KNOBS = {"max_num_seqs": EngineConfig().max_num_seqs, "speed": EngineConfig().speed}


def per_region(scenario: Scenario) -> dict[str, int]:
    return {r: scenario.count(r) for r in scenario.regions}


def rtt_table(scenario: Scenario) -> dict[str, dict[str, float]]:
    """Regions and RTTs as the policy writes them (either side of a pair, as in the file)."""
    return {r: dict(region.rtt_ms) for r, region in scenario.regions.items()}


def slots(scenario: Scenario) -> list[int]:
    return [
        int(knobs.get("max_num_seqs", DEFAULT_KNOBS["max_num_seqs"]))
        for r in scenario.regions
        for knobs in scenario.knobs(r)
    ]


def model_overrides(scenario: Scenario) -> dict[str, Any]:
    """The operator's model section for `heliostat.lab.mesh.start_mesh`."""
    return {
        "slo": {
            "ttft_ms": scenario.slo.ttft_ms,
            "network_budget_ms": scenario.slo.network_budget_ms,
        },
        "signals": dict(SIGNALS),
        "thresholds": {
            "queue": max(1, min(slots(scenario)) // 2),
            "kv": KV_THRESHOLD,
            "failures": 2,
        },
        "affinity": {"prefix_chars": PREFIX_CHARS},
        # No operator cap on overflow (the lab mesh's default is 0.3): the scenarios set
        # none, the picker has none, and a 2x surge needs more than half its users away.
        "overflow": {},
    }


def endpoint_sim(scenario: Scenario) -> Callable[[dict[str, list[str]]], dict[str, Any]]:
    """Each replica's simulator knobs, by the address the mesh chose for it (file order)."""

    def knobs(replicas: dict[str, list[str]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for region, addresses in replicas.items():
            wanted = scenario.knobs(region)
            for address, mine in zip(addresses, wanted, strict=True):
                found[address] = {**DEFAULT_KNOBS, **mine}
        return found

    return knobs


def describe(scenario: Scenario, replicas: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The fleet and heliostat's policy for the result's "setup" key."""
    return {
        "regions": {
            r: {
                "replicas": scenario.count(r),
                "edge": scenario.is_edge(r),
                "rtt_ms": dict(scenario.regions[r].rtt_ms),
                "replica_knobs": scenario.knobs(r),
            }
            for r in scenario.regions
        },
        "model": MODEL,
        "slo_ttft_ms": scenario.slo.ttft_ms,
        "network_budget_ms": scenario.slo.network_budget_ms,
        "heliostat_policy": model_overrides(scenario),
    }
