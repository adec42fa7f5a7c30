"""A small region well inside its slots keeps its users at home; a real surge still leaves.

The demo's fleet, request by request (the discrete engine, gateways reporting over LRS as
Envoy does): us-east 4 replicas, eu-west 2, ap-southeast 1, 8 slots each, about a second per
request (7.6 requests/s per replica when full), a TTFT objective of 800 ms, a 170 ms network
budget (ap-southeast may lean on eu-west, 160 ms away) and the operator's 30% cap. Each
region's users arrive as a Poisson process at a steady 0.8, 0.5 and 0.4 of one replica.

ap-southeast runs its one replica at about 41%, well below what its 8 slots carry within the
SLO (`queueing.utilisation`: about 55%). Its gateways' demand (3.1 requests/s counted over 3
s: +-1 by chance) and its capacity estimate disagree by chance, and its slots fill 6 of 8
in a burst now and then. The law sent users to eu-west on that noise (the CI failure of the
demo's steady phase: 2 of 22; here 98 of 1751 over ten one-minute runs, in 8 of them),
and once sent, the share was held. Now a region whose measured level is
not above its planning utilisation by more than chance carries its own users
(`overflow.carries_own`).

Seeded: the same seeds play the same requests; ten one-minute runs take about 3 s.
"""

from __future__ import annotations

from typing import Any

from heliostat.planet.fluid import RunOptions
from heliostat.planet.run import _play
from heliostat.planet.scenario import PolicyName, Scenario

SMALL = "ap-southeast"
RESCUER = "eu-west"
REPLICA_RPS = 7.6  # what one replica below completes per second when full
SEEDS = range(10)


def demo_planet(seed: int, events: list[dict[str, Any]] | None = None) -> Scenario:
    single = {"sigma": 0.0}
    return Scenario.model_validate(
        {
            "name": "demo-fleet",
            "duration": "60s",
            "mode": "discrete",
            "seed": seed,
            "gateways": 1,
            "model": {
                "engine": {"max_num_seqs": 8, "speed": 0.5, "num_gpu_blocks": 24},
                "prompt_tokens": {"median": 32, **single},
                "output_tokens": {"median": 16, **single},
            },
            "slo": {"ttft_ms": 800, "network_budget_ms": 170},
            "regions": {
                "us-east": {"rtt_ms": {"eu-west": 80, "ap-southeast": 210}, "replicas": 4},
                "eu-west": {"rtt_ms": {"ap-southeast": 160}, "replicas": 2},
                "ap-southeast": {"replicas": 1},
            },
            "demand": {
                region: {"curve": [share * REPLICA_RPS] * 24}
                for region, share in {"us-east": 0.8, "eu-west": 0.5, SMALL: 0.4}.items()
            },
            "events": events or [],
            "policy": {
                "slo": {"ttft_ms": 800, "network_budget_ms": 170},
                "signals": {"interval": "500ms", "timeout": "400ms", "stale_after": "2s"},
                "thresholds": {"queue": 4, "kv": 0.8, "failures": 3},
                "overflow": {"max_share": 0.3, "beyond_budget": "last_resort"},
            },
            "policies": ["heliostat"],
        }
    )


def away(scenario: Scenario, start: float = 0.0, end: float = 1e9) -> tuple[float, float]:
    """(requests of SMALL's users served elsewhere, requests offered by them) in [start, end)."""
    record = _play((scenario, "heliostat", RunOptions(PolicyName.HELIOSTAT))).record
    series = record.timeseries()
    bucket = series["bucket_s"]
    row = series["regions"][SMALL]
    kept = [i for i in range(len(row["offered_rps"])) if start <= i * bucket < end]
    return (
        sum(row["borrowed_rps"][i] for i in kept) * bucket,
        sum(row["offered_rps"][i] for i in kept) * bucket,
    )


def test_a_region_at_40_percent_of_its_one_replica_keeps_its_users_at_home() -> None:
    runs = [away(demo_planet(seed)) for seed in SEEDS]
    sent = sum(a for a, _ in runs)
    offered = sum(o for _, o in runs)
    print(f"{sent:.0f} of {offered:.0f} sent away, per run {[round(a) for a, _ in runs]}")
    # Before: 98 of 1751 (5.6%), in 8 of the 10 runs. Now: 3 (0.2%), in 1 run.
    assert sent / offered < 0.015
    assert sum(1 for a, _ in runs if a > 0) <= 3


def test_a_surge_in_the_small_region_still_leaves_for_the_rescuer() -> None:
    """From 20 s on, ap-southeast's users bring 1.3x its one replica (the demo's surge): what
    its slots do not carry goes to eu-west, up to the operator's 30%, within seconds."""
    surge = [
        {
            "kind": "flash_crowd",
            "regions": [SMALL],
            "at": 20.0,
            "ramp": 0.5,
            "hold": 60.0,
            "factor": 1.3 / 0.4,
        }
    ]
    for seed in range(3):
        sent, offered = away(demo_planet(seed, surge), start=26.0)
        print(f"seed {seed}: {sent:.0f} of {offered:.0f} sent away during the surge")
        # Each request picks its locality at random: +-2.5 points around the share.
        assert 0.2 <= sent / offered <= 0.3 + 0.06
