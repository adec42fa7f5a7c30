"""The fleet every policy of the routing benchmark is measured on, and the operator's policy.

Three regions with uneven GPU counts (us-east 4 replicas, eu-west 3, ap-southeast 1; the
RTTs of `heliostat.lab.mesh.RTT`), each replica a simulated vLLM server with 4 running slots
and a KV pool of 512 blocks (8,192 tokens): small enough that a replica's prefix cache holds
only a handful of long system prompts, which is what makes prefix-aware routing matter. The
speed of 1.5 makes one decode step of a full batch about 18 ms, a 70B-class model on one GPU
a little faster than real time, so a run of a few seconds carries a few hundred requests.

The heliostat policy is what an operator would write for this fleet: prefix affinity with
bounded load (ring hash on the first `PREFIX_CHARS` characters of the prompt, 1.5 x the
average in-flight requests per replica), bounded overflow of at most 30% of a region's
demand to in-budget neighbours, queue/KV/slot thresholds at the replicas' size, and a
500 ms TTFT objective with a 170 ms network budget (ap-southeast may lean on eu-west, 160 ms,
not on us-east, 210 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heliostat.lab.mesh import MODEL, RTT
from heliostat.sim.engine import EngineConfig

PER_REGION: Mapping[str, int] = {"us-east": 4, "eu-west": 3, "ap-southeast": 1}
SLOTS = 4
SPEED = 1.5
KV_BLOCKS = 512
BLOCK_SIZE = 16
SLO_TTFT_MS = 500.0
NETWORK_BUDGET_MS = 170.0
PREFIX_CHARS = 1024
BOUNDED_LOAD = 1.5
MAX_SHARE = 0.3


def rtt_ms(a: str, b: str) -> float:
    """Round trip between two regions (symmetric; 0 within a region)."""
    if a == b:
        return 0.0
    return float(RTT.get(a, {}).get(b, RTT.get(b, {}).get(a, 0.0)))


def by_distance(origin: str) -> list[str]:
    """Every region, nearest first (the origin itself first): the locality failover order."""
    return sorted(PER_REGION, key=lambda r: (rtt_ms(origin, r), r))


def within_budget(origin: str) -> list[str]:
    """The regions a request from `origin` may be served in (origin first), by RTT."""
    return [r for r in by_distance(origin) if rtt_ms(origin, r) <= NETWORK_BUDGET_MS]


def engine_config() -> EngineConfig:
    """One replica's engine, as `heliostat sim fleet` builds it from the policy's sim knobs."""
    return EngineConfig(
        max_num_seqs=SLOTS, speed=SPEED, num_gpu_blocks=KV_BLOCKS, block_size=BLOCK_SIZE
    )


def model_overrides() -> dict[str, Any]:
    """The operator's model section for `heliostat.lab.mesh.start_mesh`."""
    return {
        "slo": {"ttft_ms": int(SLO_TTFT_MS), "network_budget_ms": int(NETWORK_BUDGET_MS)},
        "signals": {"interval": "500ms", "timeout": "250ms", "stale_after": "1500ms"},
        "thresholds": {"queue": 2, "kv": 0.8, "failures": 2},
        "overflow": {"max_share": MAX_SHARE},
        "affinity": {"bounded_load": BOUNDED_LOAD, "prefix_chars": PREFIX_CHARS},
    }


def endpoint_sim(replicas: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Per-endpoint sim knobs beyond slots and speed: the small KV pool."""
    return {
        address: {"num_gpu_blocks": KV_BLOCKS, "block_size": BLOCK_SIZE}
        for addresses in replicas.values()
        for address in addresses
    }


def describe() -> dict[str, Any]:
    """The fleet and policy for the result's "setup" key."""
    return {
        "regions": {r: {"replicas": n, "rtt_ms": dict(RTT[r])} for r, n in PER_REGION.items()},
        "replica": {
            "engine": "simulated vLLM (heliostat.sim)",
            "max_num_seqs": SLOTS,
            "speed": SPEED,
            "num_gpu_blocks": KV_BLOCKS,
            "block_size": BLOCK_SIZE,
        },
        "model": MODEL,
        "slo_ttft_ms": SLO_TTFT_MS,
        "network_budget_ms": NETWORK_BUDGET_MS,
        "heliostat_policy": model_overrides(),
    }
