"""The engine model in virtual time: queueing, KV pressure, prefix caching and step costs."""

from __future__ import annotations

import asyncio

import pytest

from heliostat.sim.driver import EngineDriver
from heliostat.sim.engine import (
    Engine,
    EngineConfig,
    EngineRequest,
    EventKind,
    RequestEvent,
    RequestTooLarge,
    Status,
    simulate,
)
from heliostat.sim.tokens import build_prompt, synthetic_tokens


def prompt(name: str, n: int) -> list[int]:
    return synthetic_tokens("test", name, n)


def req(name: str, n: int, out: int = 10) -> EngineRequest:
    return EngineRequest(prompt=prompt(name, n), max_tokens=out)


def test_queue_grows_under_overload_and_drains_after() -> None:
    engine = Engine(EngineConfig(max_num_seqs=4))
    reqs = [req(f"r{i}", 200, out=50) for i in range(40)]
    waiting: list[int] = []
    end = simulate(
        engine,
        [(i * 0.01, r) for i, r in enumerate(reqs)],  # 100 req/s against ~2 req/s capacity
        on_step=lambda now, eng: waiting.append(eng.num_waiting),
    )
    assert max(waiting) >= 25
    assert waiting[-1] == 0
    assert not engine.has_work()
    assert all(r.status is Status.FINISHED for r in reqs)
    # FIFO queueing: the last arrivals waited far longer than the first.
    assert reqs[-1].ttft is not None and reqs[0].ttft is not None
    assert reqs[-1].ttft > 10 * reqs[0].ttft
    assert end > 10.0


def test_no_queue_when_arrivals_are_below_capacity() -> None:
    engine = Engine(EngineConfig(max_num_seqs=4))
    reqs = [req(f"r{i}", 200, out=50) for i in range(10)]
    waiting: list[int] = []
    simulate(
        engine,
        [(i * 5.0, r) for i, r in enumerate(reqs)],
        on_step=lambda now, eng: waiting.append(eng.num_waiting),
    )
    assert max(waiting) == 0
    ttfts = [r.ttft for r in reqs]
    assert max(t for t in ttfts if t is not None) == pytest.approx(ttfts[0])


def test_prefix_cache_hit_lowers_ttft() -> None:
    engine = Engine(EngineConfig())
    first = req("shared", 4000, out=5)
    second = req("shared", 4000, out=5)
    simulate(engine, [(0.0, first), (10.0, second)])
    assert first.num_cached_tokens == 0
    # Block-aligned and at least one token left to compute: (4000 - 1) // 16 * 16.
    assert second.num_cached_tokens == 3984
    assert first.ttft is not None and second.ttft is not None
    assert second.ttft < 0.2 * first.ttft
    assert engine.prefix_queries == 8000
    assert engine.prefix_hits == 3984


def test_shared_prefix_hits_only_the_shared_blocks() -> None:
    engine = Engine(EngineConfig(block_size=16))
    a = EngineRequest(build_prompt("question a", prefix_id="sys", prefix_tokens=1000), 4)
    b = EngineRequest(build_prompt("question b, longer", prefix_id="sys", prefix_tokens=1000), 4)
    c = EngineRequest(build_prompt("question c", prefix_id="other", prefix_tokens=1000), 4)
    simulate(engine, [(0.0, a), (5.0, b), (10.0, c)])
    assert b.num_cached_tokens == 1000 // 16 * 16
    assert c.num_cached_tokens == 0


def test_kv_exhaustion_holds_admission_head_of_line() -> None:
    # 10 blocks of 16 tokens; each big request needs ceil((100 + 20) / 16) = 8 blocks.
    engine = Engine(EngineConfig(num_gpu_blocks=10, block_size=16, max_num_seqs=8))
    big_a, big_b = req("a", 100, out=20), req("b", 100, out=20)
    small = req("c", 4, out=2)  # would fit next to A, but must not overtake B
    usage: list[float] = []
    simulate(
        engine,
        [(0.0, big_a), (0.001, big_b), (0.002, small)],
        on_step=lambda now, eng: usage.append(eng.pool.usage),
    )
    assert big_a.finish_time is not None and big_b.admit_time is not None
    assert big_b.admit_time >= big_a.finish_time
    assert small.admit_time is not None and small.admit_time >= big_a.finish_time
    assert max(usage) == pytest.approx(0.9)  # B (8 blocks) and the small one (1 block)
    assert engine.pool.usage == 0.0


def test_request_larger_than_the_pool_is_refused() -> None:
    engine = Engine(EngineConfig(num_gpu_blocks=4, block_size=16))
    with pytest.raises(RequestTooLarge):
        engine.submit(req("x", 60, out=10), 0.0)


def test_max_num_seqs_caps_running() -> None:
    engine = Engine(EngineConfig(max_num_seqs=3))
    running: list[int] = []
    simulate(
        engine,
        [(0.0, req(f"r{i}", 50, out=20)) for i in range(10)],
        on_step=lambda now, eng: running.append(eng.num_running),
    )
    assert max(running) == 3


def test_decode_step_slower_with_bigger_batch() -> None:
    cfg = EngineConfig()
    assert cfg.step_seconds(decoding=16, prefill_tokens=0) > cfg.step_seconds(1, 0)

    def inter_token_latency(batch: int) -> float:
        engine = Engine(EngineConfig(max_num_seqs=64))
        reqs = [req(f"r{i}", 32, out=100) for i in range(batch)]
        simulate(engine, [(0.0, r) for r in reqs])
        r = reqs[0]
        assert r.finish_time is not None and r.first_token_time is not None
        return (r.finish_time - r.first_token_time) / (r.max_tokens - 1)

    alone, crowded = inter_token_latency(1), inter_token_latency(32)
    assert crowded > alone * 1.4
    assert alone == pytest.approx((25.0 + 0.5 + 0.1 * 0.033) / 1000, rel=0.05)


def test_speed_factor_scales_time() -> None:
    def run(speed: float) -> tuple[float, list[float]]:
        engine = Engine(EngineConfig(speed=speed, max_num_seqs=4))
        reqs = [req(f"r{i}", 500, out=30) for i in range(12)]
        end = simulate(engine, [(0.0, r) for r in reqs])
        return end, [r.ttft or 0.0 for r in reqs]

    end1, ttft1 = run(1.0)
    end4, ttft4 = run(4.0)
    end_quarter, _ = run(0.25)
    assert end4 == pytest.approx(end1 / 4)
    assert end_quarter == pytest.approx(end1 * 4)
    assert ttft4 == pytest.approx([t / 4 for t in ttft1])


def test_slowdown_fault_scales_steps() -> None:
    engine = Engine(EngineConfig())
    engine.slowdown = 3.0
    slow = req("a", 300, out=10)
    simulate(engine, [(0.0, slow)])
    fast = req("b", 300, out=10)
    simulate(Engine(EngineConfig()), [(0.0, fast)])
    assert slow.e2e == pytest.approx(3 * (fast.e2e or 0.0))


def test_prefill_is_chunked_and_shares_steps_with_decode() -> None:
    engine = Engine(EngineConfig(max_num_batched_tokens=1000))
    token_times: list[float] = []
    decoding = EngineRequest(
        prompt=prompt("short", 10),
        max_tokens=40,
        listener=lambda e: token_times.append(e.time) if e.kind is EventKind.TOKEN else None,
    )
    long = req("long", 5000, out=1)
    steps: list[float] = []
    simulate(engine, [(0.0, decoding), (0.01, long)], on_step=lambda now, eng: steps.append(now))
    assert long.admit_time is not None and long.first_token_time is not None
    start, end = long.admit_time, long.first_token_time
    # 5000 prompt tokens through a 999-token budget (one token goes to the decoder): 6 chunks.
    assert len([t for t in steps if start < t <= end]) == 6
    # ...and the short request kept producing a token in each of those steps.
    assert len([t for t in token_times if start < t <= end]) == 6
    assert decoding.num_generated == 40


def test_abort_frees_blocks_and_notifies() -> None:
    events: list[RequestEvent] = []
    engine = Engine(EngineConfig(num_gpu_blocks=100))
    r = EngineRequest(prompt=prompt("a", 100), max_tokens=50, listener=events.append)
    engine.submit(r, 0.0)
    step = engine.schedule(0.0)
    assert step is not None and engine.pool.num_used == 10
    engine.abort(r, 0.1)
    engine.complete(step, 0.2)  # a step in flight must not touch the aborted request
    assert engine.pool.num_used == 0
    assert r.status is Status.ABORTED
    assert [e.kind for e in events] == [EventKind.ABORT]
    assert not engine.has_work()


def test_events_report_every_token_then_finish() -> None:
    events: list[RequestEvent] = []
    engine = Engine(EngineConfig())
    r = EngineRequest(prompt=prompt("a", 40), max_tokens=5, listener=events.append)
    simulate(engine, [(0.0, r)])
    assert [e.kind for e in events] == [EventKind.TOKEN] * 5 + [EventKind.FINISH]
    assert [e.index for e in events[:5]] == [0, 1, 2, 3, 4]
    assert events[0].time == r.first_token_time


async def test_driver_paces_steps_in_real_time() -> None:
    engine = Engine(EngineConfig(speed=10.0))
    driver = EngineDriver(engine)
    driver.start()
    done = asyncio.Event()
    r = EngineRequest(
        prompt=prompt("a", 1000),
        max_tokens=11,
        listener=lambda e: done.set() if e.kind is EventKind.FINISH else None,
    )
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        driver.submit(r)
        await asyncio.wait_for(done.wait(), 5)
        elapsed = loop.time() - t0
    finally:
        await driver.stop()
    # (25 + 250) ms prefill + 10 decode steps of ~25.6 ms, all divided by speed 10.
    expected = (275.0 + 10 * 25.6) / 10 / 1000
    assert expected * 0.95 <= elapsed <= expected * 2.5
    assert r.e2e == pytest.approx(elapsed, abs=0.02)


async def test_driver_stop_aborts_pending_requests() -> None:
    engine = Engine(EngineConfig(speed=1.0, max_num_seqs=1))
    driver = EngineDriver(engine)
    driver.start()
    reqs = [req(f"r{i}", 100, out=100) for i in range(3)]
    for r in reqs:
        driver.submit(r)
    await asyncio.sleep(0.01)
    await driver.stop()
    assert all(r.status is Status.ABORTED for r in reqs)
    assert engine.pool.num_used == 0
