"""What one simulated replica completes per second when full, from the engine model itself.

The story speaks in replica capacities; turning them into requests per second with a
constant would silently go wrong the day the engine model's timings change. Running the
same engine the replicas run, in virtual time, costs a few milliseconds and cannot drift.
"""

from __future__ import annotations

import dataclasses

from heliostat.sim.engine import Engine, EngineConfig, EngineRequest, simulate


def replica_rps(
    *,
    slots: int,
    speed: float,
    prompt_tokens: int,
    max_tokens: int,
    kv_blocks: int | None = None,
    requests: int = 200,
) -> float:
    """Requests per second one replica completes with its queue never empty."""
    config = EngineConfig(max_num_seqs=slots, speed=speed)
    if kv_blocks is not None:
        config = dataclasses.replace(config, num_gpu_blocks=kv_blocks)
    engine = Engine(config)
    # Distinct prompts: the demo's requests share a prompt, but a cold cache is the
    # conservative reading (prefill is a small part of a 16-token request either way).
    arrivals = [
        (
            0.0,
            EngineRequest(
                prompt=range(i * prompt_tokens, (i + 1) * prompt_tokens), max_tokens=max_tokens
            ),
        )
        for i in range(requests)
    ]
    elapsed = simulate(engine, arrivals)
    return requests / elapsed
