"""The simulated engine's waits for a slot against M/M/c's (issue 10, not a test).

One replica of `heliostat.sim.engine` (bench chat's knobs: speed 1.5, 128 KV blocks per
slot) fed ShareGPT-like chats (`bench.routing_workloads.chat_mix`) as a Poisson stream at a
share of its capacity, in virtual time; for each, the share of requests waiting longer than
t for a slot, measured and as M/M/c (`queueing.wait_tail`) predicts with c the slots and
mu the capacity per slot, the mean wait (measured, M/M/c, and `queueing.mean_wait`, M/M/c
with Allen-Cunneen's correction), the TTFT p99 and the share past the 500 ms objective.
A wait includes the rest of the engine step under way when the request arrives.

    .venv/bin/python -m bench.measure.engine_waits [SECONDS]
"""

from __future__ import annotations

import random
import sys

from bench.routing_workloads import chat_mix, engine_config, replica_capacity
from heliostat.balance import queueing
from heliostat.sim.engine import Engine, EngineRequest, simulate
from heliostat.sim.openai_api import parse_generation

TTFT_S = 0.5


def measure(slots: int, load: float, seconds: float, seed: int = 1) -> dict[str, object]:
    config = engine_config({"max_num_seqs": slots, "speed": 1.5, "num_gpu_blocks": 128 * slots})
    sample = chat_mix(random.Random("calibration"))
    capacity = replica_capacity([sample() for _ in range(1000)], config)
    rng = random.Random(seed)
    draw = chat_mix(random.Random(seed))
    arrivals: list[tuple[float, EngineRequest]] = []
    t = 0.0
    while t < seconds:
        t += rng.expovariate(load * capacity)
        generation = parse_generation(draw(), chat=False)
        arrivals.append(
            (t, EngineRequest(prompt=generation.prompt, max_tokens=generation.max_tokens))
        )
    simulate(Engine(config), arrivals)
    requests = [r for _, r in arrivals[len(arrivals) // 20 :]]  # past the warm-up
    waits = sorted((r.admit_time or 0.0) - (r.arrival_time or 0.0) for r in requests)
    ttfts = sorted(r.ttft or 0.0 for r in requests)
    n = len(requests)
    row: dict[str, object] = {"slots": slots, "load": load, "capacity_rps": round(capacity, 2)}
    for wait in (0.125, 0.25, 0.4):
        measured = sum(1 for w in waits if w > wait) / n
        predicted = queueing.wait_tail(slots, load, capacity / slots * wait)
        row[f"P(wait>{wait})"] = f"{measured:.3f} vs {predicted:.3f}"
    mmc = queueing.delay_probability(slots, slots * load) / (capacity * (1.0 - load))
    corrected = queueing.mean_wait(slots, capacity, load)
    row["mean wait s"] = f"{sum(waits) / n:.3f} vs {mmc:.3f} (corrected {corrected:.3f})"
    row["ttft p99 s"] = round(ttfts[int(0.99 * n)], 3)
    row["late"] = round(sum(1 for x in ttfts if x > TTFT_S) / n, 4)
    return row


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 4000.0
    for slots in (4, 8):
        for load in (0.40, 0.55, 0.65, 0.75):
            print(measure(slots, load, seconds), flush=True)


if __name__ == "__main__":
    main()
