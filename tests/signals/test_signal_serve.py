"""Every engine's page shape, read by a real `heliostat serve` and pushed to a real Envoy.

Small aiohttp servers answer each engine's paths with pages shaped like the real ones
(tests/signals/expositions.py, each naming its source). The test reads what serve made of
them in /debug/state (page shape, missing fields, served rate, the fullest engine's KV, whose
load a LoRA adapter's signal is) and what Envoy holds: an endpoint whose engine exports only
some fields stays healthy; one that answers JSON at its metrics path fails its scrapes, is
told how to fix it, and turns unhealthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.harness import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    free_port,
    write_policy,
)

from . import expositions as ex
from .conftest import MetricsServer

pytestmark = pytest.mark.envoy

Servers = Callable[[], Awaitable[MetricsServer]]
SIGNALS = {"interval": "300ms", "timeout": "250ms", "stale_after": "3s"}


def pages(prometheus: str, metrics: str | None = None) -> Callable[..., Any]:
    """A handler that answers like trtllm-serve when `metrics` is JSON, else one page."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/prometheus/metrics" or metrics is None:
            return web.Response(text=prometheus, content_type="text/plain")
        return web.Response(text=metrics, content_type="application/json")

    return handle


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _engine_model(model: str, engine: str, address: str) -> dict[str, Any]:
    """One policy model per engine page: one endpoint in eu, that engine's signals."""
    signals: dict[str, Any] = dict(SIGNALS)
    if model == "trtllm-json":
        signals["metrics_path"] = "/metrics"  # the JSON statistics, not Prometheus text
    if model == "alpaca":
        signals["base_model"] = ex.LLAMA
    return {
        "name": model,
        "engine": engine,
        "signals": signals,
        "endpoints": [{"address": address, "region": "eu"}],
    }


async def test_engine_pages_through_serve(
    tmp_path: Path, servers: Servers, processes: list[Process]
) -> None:
    page_of: dict[str, tuple[str, str | None]] = {
        "vllm-dp": (ex.vllm(engines=("0", "1"), kv_per_engine=(0.98, 0.10)), None),
        "vllm-v0": (ex.vllm_old(kv=0.3), None),
        "sglang-old": (ex.sglang(cache_config_info=True), None),
        "triton-old": (ex.triton_trtllm(waiting=None, fraction=None, used=3120), None),
        "trtllm": (ex.trtllm_serve(waiting=2), "[]"),
        "trtllm-no-queue": (ex.trtllm_serve_no_queue(util=0.37), "[]"),
        "trtllm-mid-2025": (ex.trtllm_serve_mid_2025(served=12), "[]"),
        "trtllm-json": (ex.trtllm_serve(), ex.TRTLLM_SERVE_JSON_METRICS),
        "tgi": (ex.tgi(), None),
        "alpaca": (ex.vllm(lora=("2", "alpaca", "")), None),
    }
    engine_of = {"vllm-dp": "vllm", "vllm-v0": "vllm", "sglang-old": "sglang", "tgi": "tgi"}
    engine_of |= {"triton-old": "triton", "alpaca": "vllm"}
    address: dict[str, str] = {}
    served: dict[str, MetricsServer] = {}
    for model, (text, json_body) in page_of.items():
        server = await servers()
        server.handler = pages(text, json_body)
        address[model], served[model] = server.address, server
    models = [
        _engine_model(model, engine_of.get(model, "trtllm"), address[model]) for model in page_of
    ]
    policy = tmp_path / "policy.yaml"
    write_policy(
        policy,
        {
            "apiVersion": "heliostat/v1",
            "kind": "InferencePolicy",
            "metadata": {"name": "engines"},
            "spec": {
                "regions": {"eu": {}},
                "gateway": {"port": free_port(), "address": LOCALHOST},
                "models": models,
            },
        },
    )
    heliostat = Heliostat(policy, tmp_path)
    processes.append(heliostat)
    await asyncio.to_thread(heliostat.start)
    envoy = Envoy(tmp_path, heliostat, node_id="gw-eu", region="eu", delta=False)
    processes.append(envoy)
    await asyncio.to_thread(envoy.start)

    def entries(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {m: e[0] for m, e in state["signals"]["models"].items()}

    async def state() -> dict[str, Any]:
        return await asyncio.to_thread(heliostat.state)

    async def all_read() -> bool:
        got = entries(await state())
        json_failed = got["trtllm-json"]["consecutive_failures"] >= 3
        return json_failed and all(
            got[m]["scraped_at"] is not None for m in page_of if m != "trtllm-json"
        )

    await until(all_read, "every endpoint scraped, the JSON one failed three times")
    got = entries(await state())

    assert (got["vllm-dp"]["page"], got["vllm-dp"]["engines"]) == ("vllm v1", 2)
    assert got["vllm-dp"]["kv_usage"] == pytest.approx(0.54)
    assert got["vllm-dp"]["kv_usage_max"] == 0.98
    assert (got["vllm-v0"]["page"], got["vllm-v0"]["served_total"]) == ("vllm v0", 422)
    assert got["sglang-old"]["page"] == "sglang <0.5.11 (cache_config_info labels)"
    assert (got["sglang-old"]["block_size"], got["sglang-old"]["num_gpu_blocks"]) == (64, 11147)
    assert got["triton-old"]["kv_usage"] == pytest.approx(3120 / 6239)
    assert "KV = used / max blocks" in got["triton-old"]["page"]
    assert (got["trtllm"]["waiting"], got["trtllm"]["missing"]) == (2, [])
    assert got["trtllm-no-queue"]["missing"] == ["running", "waiting"]
    assert got["trtllm-mid-2025"]["served_total"] == 12
    assert got["trtllm-mid-2025"]["page"] == "trtllm-serve (unprefixed names of mid-2025)"
    assert got["tgi"]["missing"] == ["kv_usage", "prefix_hit_rate"]
    assert got["alpaca"]["lora"] == "running" and got["alpaca"]["read_as"] == ex.LLAMA
    assert "shares its queue" in got["alpaca"]["signal_of"]
    assert got["trtllm-json"]["error"] == "content_type"
    assert got["trtllm-json"]["error_detail"] == (
        "JSON where Prometheus text was expected: set signals.metrics_path"
    )
    for model in page_of:
        if model != "trtllm-json":
            assert got[model]["error"] is None, (model, got[model])

    # Served rate: the success counter rises; serve turns it into requests per second.
    served["trtllm"].handler = pages(ex.trtllm_serve(served=(912.0 + 300, 31.0)), "[]")

    async def rate_seen() -> bool:
        rate = entries(await state())["trtllm"]["served_rate"]
        return rate is not None and rate > 0

    await until(rate_seen, "a served rate above zero")

    # What Envoy was given: partial signals are healthy, a failing scrape is not.
    def unhealthy() -> dict[str, bool]:
        flags = {}
        for model in page_of:
            host = envoy.hosts(model).get(address[model], {})
            flags[model] = "failed_eds_health" in host.get("health_flags", "")
        return flags

    async def envoy_agrees() -> bool:
        flags = await asyncio.to_thread(unhealthy)
        return flags["trtllm-json"] and not any(v for m, v in flags.items() if m != "trtllm-json")

    await until(envoy_agrees, "Envoy's health flags")
    views = (await state())["views"]["regions"]["eu"]
    reasons = {m: views[m]["endpoints"][0]["reason"]["state"] for m in page_of}
    assert reasons["trtllm-json"] == "unhealthy"
    assert reasons["trtllm-no-queue"] == "healthy"  # KV use alone steers it
    assert reasons["trtllm-mid-2025"] != "unhealthy"  # only a counter: neutral, not failed
