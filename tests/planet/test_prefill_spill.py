"""A region whose prefix cache cannot hold its users' shared prompts sends them to a nearby
region whose cache does, when the prefill it saves them beats the round trip; and the
rescuer's own users do not pay for it.

Request by request (the discrete engine: each replica's prefix cache holds what it holds,
ring hash places a request by its prefix's hash). `small` has one 4-slot replica, `big` four,
60 ms apart; 16 groups of users share 2,048-token system prompts (64 tokens of question, 32
out). small's one replica holds a few of the 16 prompts, so most of its users' prompts are
prefilled cold (~200 ms measured, hit rate 0.3-0.6), while big's four hold theirs (~40 ms,
0.95). At 1.5 requests/s small's slots carry their users with room to spare: waits alone
never sent them away, and a cold prefill plus its queue often passed the 400 ms objective.

Now each region's engines report their mean prefill time (`vllm:request_prefill_time_seconds`)
and `spill` weighs it against the round trip (`overflow.paying`, `Supply.prefill`). Seeds
0-5: small's users met the objective 72.9-93.8% of the time (mean 80.8%) before, 86.3-98.9%
(mean 94.6%) now; big's own users 98.1% on average both ways; no share turned more than
once a minute. The allocation still places the share only within the rescuer's room.

The hash bound is chosen per region (`affinity.step_bounds`): here a spill from a key's
replica costs its cached prefill (~0.3 s) against a wait for a slot of ~0.16 s, so big keeps
1.5, and small's view, lending to big, too. A constant 1.0 (the shared_prefix fleet's
choice, where caches are overcommitted) gave small's users 79.4% and big's 95.0%.

Seeded: the same seeds play the same requests; six one-minute runs take about 15 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from heliostat.planet import law as planet_law
from heliostat.planet.fluid import RunOptions
from heliostat.planet.run import _play
from heliostat.planet.scenario import PolicyName, Scenario
from tests.planet.test_share_stability import MOST_TURNS, turns

SEEDS = range(6)


def cold_cache_fleet(seed: int, **affinity: Any) -> Scenario:
    """The fleet; `affinity` overrides the policy's affinity fields (e.g. mode, bounded_load)."""
    slo = {"ttft_ms": 400, "network_budget_ms": 100}
    return Scenario.model_validate(
        {
            "name": "cold-cache",
            "duration": "60s",
            "mode": "discrete",
            "seed": seed,
            "gateways": 1,
            "model": {
                "engine": {"max_num_seqs": 4, "speed": 1.5, "num_gpu_blocks": 1024},
                "prompt_tokens": {"median": 64, "sigma": 0.0, "min": 64, "max": 64},
                "output_tokens": {"median": 32, "sigma": 0.0, "min": 32, "max": 32},
                "prefix_groups": 16,
                "prefix_tokens": 2048,
            },
            "slo": {**slo, "end_to_end_ms": 400},
            "regions": {
                "big": {"rtt_ms": {"small": 60}, "replicas": 4},
                "small": {"replicas": 1},
            },
            "demand": {"big": {"curve": [8.0] * 24}, "small": {"curve": [1.5] * 24}},
            "policy": {
                "slo": slo,
                "signals": {"interval": "500ms", "timeout": "400ms", "stale_after": "2s"},
                "thresholds": {"queue": 4, "kv": 0.8, "failures": 3},
                "overflow": {"beyond_budget": "last_resort"},
                "affinity": {"prefix_chars": 1024, "mode": "always", **affinity},
            },
            "policies": ["heliostat"],
        }
    )


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[tuple[str, str], list[float]]]:
    shares: dict[tuple[str, str], list[float]] = {}
    tick = planet_law.ControlLaw.tick

    def recording(self: planet_law.ControlLaw, *args: Any, **kwargs: Any) -> Any:
        views = tick(self, *args, **kwargs)
        assert self.state is not None
        for model in self.state.models.values():
            for origin, region in model.regions.items():
                for q in set(region.lending) | {q for o, q in shares if o == origin}:
                    held = region.lending.get(q)
                    shares.setdefault((origin, q), []).append(held.published if held else 0.0)
        return views

    monkeypatch.setattr(planet_law.ControlLaw, "tick", recording)
    yield shares


def test_users_of_a_cold_cache_are_served_where_their_prompts_are_cached(
    published: dict[tuple[str, str], list[float]],
) -> None:
    small: list[float] = []
    big: list[float] = []
    sent: list[float] = []
    worst: list[int] = []
    for seed in SEEDS:
        published.clear()
        record = _play(
            (cold_cache_fleet(seed), "heliostat", RunOptions(PolicyName.HELIOSTAT))
        ).record
        by_origin = record.by_origin()
        small.append(by_origin["small"]["slo_attainment"])
        big.append(by_origin["big"]["slo_attainment"])
        sent.append(by_origin["small"]["cross_region_share"])
        worst.append(max(turns(series) for series in published.values()))
    print(f"small {small}, big {big}, small's users served in big {sent}, turns {worst}")
    # Before: 0.938, 0.729, 0.877, 0.772, 0.731, 0.798 (mean 0.808), 5-21% served in big.
    assert sum(small) / len(small) >= 0.9
    assert sum(sent) / len(sent) >= 0.5
    # The rescuer's own users: 0.966-0.989 both ways (mean 0.981).
    assert sum(big) / len(big) >= 0.97
    assert max(worst) <= MOST_TURNS
