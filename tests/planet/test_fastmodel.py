"""The fast replica model against the engine it stands for (`heliostat.sim.engine`).

Each case runs one engine in virtual time under Poisson arrivals at a share of the fast
model's capacity, with the scenario's request mix, and compares what the fluid engine takes
from the fast model: completions, requests running and waiting (time averages, as a scrape at
a random moment sees them), KV use, and time-to-first-token percentiles. Tolerances are what
the model achieves, stated per quantity (see the README's "Simulating the planet"); a
planet-sized replica's TTFT is a few ms, so it is also allowed a small absolute error.
"""

from __future__ import annotations

import random

import pytest

from heliostat.planet.demand import Mix, Spread
from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.scenario import Scenario
from heliostat.sim.engine import Engine, EngineConfig, EngineRequest


def _scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "calibration",
            "regions": {"a": {"replicas": 1}},
            "demand": {"a": {"peak_rps": 1.0}},
        }
    )


def _engine_run(config: EngineConfig, rate: float, duration: float, seed: int) -> dict[str, float]:
    scenario = _scenario()
    prompts = Spread.of(scenario.model.prompt_tokens)
    outputs = Spread.of(scenario.model.output_tokens)
    rng = random.Random(seed)
    arrivals: list[tuple[float, EngineRequest]] = []
    t = 0.0
    while t < duration:
        t += rng.expovariate(rate)
        prompt = [rng.getrandbits(31) for _ in range(prompts.draw(rng))]
        arrivals.append((t, EngineRequest(prompt=prompt, max_tokens=outputs.draw(rng))))
    engine = Engine(config)
    warm = duration * 0.2
    now = 0.0
    index = 0
    weights = running = waiting = kv = 0.0
    while now < duration:
        while index < len(arrivals) and arrivals[index][0] <= now:
            engine.submit(arrivals[index][1], arrivals[index][0])
            index += 1
        step = engine.schedule(now)
        if step is None:
            now = arrivals[index][0] if index < len(arrivals) else duration
            continue
        if now > warm:
            weights += step.duration
            running += step.duration * step.batch_size
            waiting += step.duration * engine.num_waiting
            kv += step.duration * engine.pool.usage
        now += step.duration
        engine.complete(step, now)
    ttfts = sorted(r.ttft for a, r in arrivals if a > warm and r.ttft is not None)
    done = sum(1 for a, r in arrivals if a > warm and r.finish_time is not None)

    def quantile(q: float) -> float:
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))]

    return {
        "throughput": done / (duration - warm),
        "running": running / weights,
        "waiting": waiting / weights,
        "kv": kv / weights,
        "p50": quantile(0.5),
        "p90": quantile(0.9),
        "p99": quantile(0.99),
    }


def _model_quantile(fast: FastReplica, rate: float, q: float) -> float:
    ttft = fast.ttft(fast.running_for(rate), rate)
    low, high = 0.0, 120.0
    for _ in range(60):
        middle = (low + high) / 2
        if ttft.cdf(middle) < q:
            low = middle
        else:
            high = middle
    return low


def _close(measured: float, model: float, relative: float, absolute: float) -> bool:
    return abs(measured - model) <= max(relative * abs(measured), absolute)


CASES = [
    # (engine knobs, load, seconds, ttft absolute tolerance)
    (dict(max_num_seqs=16), 0.3, 3000, 0.02),
    (dict(max_num_seqs=16), 0.6, 3000, 0.02),
    (dict(max_num_seqs=16), 0.85, 3000, 0.02),
    (dict(max_num_seqs=64, speed=4, num_gpu_blocks=8192), 0.5, 800, 0.02),
    (dict(max_num_seqs=256, speed=60, num_gpu_blocks=16384), 0.85, 40, 0.025),
]


@pytest.mark.parametrize(("knobs", "load", "seconds", "ttft_abs"), CASES)
def test_the_fast_model_follows_the_engine(
    knobs: dict[str, float], load: float, seconds: float, ttft_abs: float
) -> None:
    config = EngineConfig(**knobs)  # type: ignore[arg-type]
    fast = FastReplica.of(config, Mix.of(_scenario()))
    rate = load * fast.capacity
    engine = _engine_run(config, rate, seconds, seed=7)
    running = fast.running_for(rate)
    assert _close(engine["throughput"], rate, 0.04, 0.0), (engine, rate)
    assert _close(engine["running"], running, 0.3, 0.5), (engine, running)
    assert _close(engine["kv"], fast.kv_usage(running), 0.3, 0.01), engine
    assert _close(engine["waiting"], fast.waiting(running, rate), 0.45, 0.3), (
        engine,
        fast.waiting(running, rate),
    )
    for q, tolerance in ((0.5, 0.25), (0.9, 0.35), (0.99, 0.45)):
        model = _model_quantile(fast, rate, q)
        measured = engine[f"p{round(q * 100)}"]
        assert _close(measured, model, tolerance, ttft_abs), (q, measured, model)


def test_capacity_is_what_the_engine_completes_when_saturated() -> None:
    config = EngineConfig(max_num_seqs=16)
    fast = FastReplica.of(config, Mix.of(_scenario()))
    scenario = _scenario()
    prompts = Spread.of(scenario.model.prompt_tokens)
    outputs = Spread.of(scenario.model.output_tokens)
    rng = random.Random(3)
    engine = Engine(config)
    for _ in range(4000):
        prompt = [rng.getrandbits(31) for _ in range(prompts.draw(rng))]
        engine.submit(EngineRequest(prompt=prompt, max_tokens=outputs.draw(rng)), 0.0)
    now, done_at = 0.0, []
    while now < 600:
        step = engine.schedule(now)
        assert step is not None
        now += step.duration
        before = engine.num_running
        engine.complete(step, now)
        done_at += [now] * max(0, before - engine.num_running)
    completed = [t for t in done_at if 100 < t < 600]
    assert _close(len(completed) / 500, fast.capacity, 0.05, 0.0)


def test_a_backlog_drains_at_capacity_and_a_fluid_step_conserves_requests() -> None:
    fast = FastReplica.of(EngineConfig(max_num_seqs=16), Mix.of(_scenario()))
    n, done = fast.advance(fast.slots + 40, 0.0, 1.0)
    assert done == pytest.approx(fast.capacity, rel=1e-9)
    assert n == pytest.approx(fast.slots + 40 - fast.capacity)
    n0 = 3.0
    n1, done = fast.advance(n0, 2.0, 0.5)
    assert n0 + 2.0 * 0.5 - done == pytest.approx(n1)
    # Overloaded, the queue grows by what capacity cannot take.
    n2, done = fast.advance(fast.slots, fast.capacity * 1.5, 2.0)
    assert n2 == pytest.approx(fast.slots + fast.capacity, rel=1e-6)
