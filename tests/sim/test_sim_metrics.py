"""The simulator's /metrics page looks like a real vLLM's, and heliostat reads it as one.

The shapes checked here are vLLM's (vllm-project/vllm, vllm/v1/metrics/loggers.py; V0
vllm/engine/metrics.py), as tests/signals/expositions.py writes them for the adapter tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from heliostat.signals import Reading, read_exposition
from heliostat.sim import Fleet, ReplicaConfig
from heliostat.sim.engine import Engine, EngineConfig, EngineRequest
from heliostat.sim.metrics import ReplicaMetrics

from .conftest import FleetFactory

Labels = dict[str, str]


def families(text: str) -> dict[str, list[tuple[Labels, float]]]:
    out: dict[str, list[tuple[Labels, float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


async def page(fleet: Fleet, http: aiohttp.ClientSession) -> str:
    async with http.get(next(iter(fleet)).url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def test_label_order_and_sets_are_vllms() -> None:
    text = ReplicaMetrics("m", 16, 100).render().decode()
    assert 'vllm:num_requests_waiting{engine="0",model_name="m"} 0.0' in text
    assert 'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 0.0' in (
        text
    )
    info = next(line for line in text.splitlines() if line.startswith("vllm:cache_config_info{"))
    assert 'engine="0"' in info and "model_name" not in info


def test_success_counter_exists_at_zero_for_every_finish_reason() -> None:
    samples = families(ReplicaMetrics("m", 16, 100, engines=2).render().decode())
    success = samples["vllm:request_success_total"]
    assert sorted((s["engine"], s["finished_reason"]) for s, _ in success) == [
        (e, r) for e in ("0", "1") for r in ("abort", "length", "stop")
    ]
    assert all(v == 0 for _, v in success)
    read = read_exposition(ReplicaMetrics("m", 16, 100).render().decode(), "vllm", "m")
    assert isinstance(read, Reading) and read.served_total == 0 and not read.missing


def test_data_parallel_engines_each_have_their_series() -> None:
    metrics = ReplicaMetrics("m", 16, 256, engines=2)
    config = EngineConfig(max_num_seqs=4, num_gpu_blocks=256, block_size=16)
    engines = [Engine(config, observer=metrics.observer(i)) for i in range(2)]
    metrics.attach(engines)
    for _ in range(3):  # fill engine 1 only
        engines[1].submit(EngineRequest(prompt="x" * 4000, max_tokens=8), 0.0)
    engines[1].schedule(0.0)
    samples = families(metrics.render().decode())
    kv = {s["engine"]: v for s, v in samples["vllm:kv_cache_usage_perc"]}
    assert kv["0"] == 0.0 and kv["1"] > 0.5
    assert len(samples["vllm:cache_config_info"]) == 2
    read = read_exposition(metrics.render().decode(), "vllm", "m")
    assert isinstance(read, Reading)
    assert read.engines == 2 and read.kv_usage_max == kv["1"]
    assert read.kv_usage == pytest.approx(kv["1"] / 2)


def test_v0_names() -> None:
    metrics = ReplicaMetrics("m", 16, 100, names="v0")
    metrics.attach([Engine(EngineConfig(num_gpu_blocks=100), observer=metrics.observer(0))])
    text = metrics.render().decode()
    samples = families(text)
    assert "vllm:gpu_cache_usage_perc" in samples and "vllm:kv_cache_usage_perc" not in samples
    assert all("engine" not in s for series in samples.values() for s, _ in series)
    assert samples["vllm:gpu_prefix_cache_hit_rate"] == [({"model_name": "m"}, -1.0)]
    assert "vllm:request_success_total" not in samples  # V0 creates it on first use
    read = read_exposition(text, "vllm", "m")
    assert isinstance(read, Reading) and read.page == "vllm v0"
    with pytest.raises(ValueError):
        ReplicaMetrics("m", 16, 100, engines=2, names="v0")


async def test_data_parallel_replica_spreads_requests_and_reports_per_engine(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"model": "m", "data_parallel_size": 2, "max_num_seqs": 2})
    replica = next(iter(fleet))
    target = replica.url + "/v1/completions"

    async def one(i: int) -> Any:
        async with http.post(target, json={"prompt": f"job {i}", "max_tokens": 4}) as resp:
            assert resp.status == 200
            return await resp.json()

    await asyncio.gather(*(one(i) for i in range(8)))
    samples = families(await page(fleet, http))
    served = {
        s["engine"]: v
        for s, v in samples["vllm:request_success_total"]
        if s["finished_reason"] == "length"
    }
    assert set(served) == {"0", "1"} and sum(served.values()) == 8
    assert min(served.values()) >= 2  # both engines took work: the least loaded gets the next
    stats = await (await http.get(replica.url + "/sim/stats")).json()
    assert len(stats["engines"]) == 2 and stats["served"] == 8


def test_replica_config_knobs() -> None:
    cfg = ReplicaConfig.from_mapping(
        address="127.0.0.1:9", region="r", model="m", sim={"data_parallel_size": 3}
    )
    assert cfg.data_parallel_size == 3
    for bad in ({"data_parallel_size": 0}, {"metric_names": "v2"}):
        with pytest.raises(ValueError):
            ReplicaConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ReplicaConfig(data_parallel_size=2, metric_names="v0")


def test_a_fixed_page_without_engines() -> None:
    metrics = ReplicaMetrics("bench", 16, 4096)
    metrics.refresh(waiting=3, running=5, kv_usage=0.25)
    read = read_exposition(metrics.render().decode(), "vllm", "bench")
    assert isinstance(read, Reading)
    assert (read.waiting, read.running, read.kv_usage) == (3, 5, 0.25)
