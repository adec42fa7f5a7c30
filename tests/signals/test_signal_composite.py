"""Per-model source selection: policy -> targets -> direct scraper or Prometheus source."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from heliostat.policy.schema import Policy
from heliostat.signals import (
    CompositeSource,
    PrometheusSource,
    Scraper,
    ScrapeTarget,
    SignalSource,
    targets_from_policy,
)

from . import expositions as ex
from .conftest import MetricsServer

Servers = Callable[[], Awaitable[MetricsServer]]


def policy(direct: str, prometheus_url: str, via_prometheus: str) -> Policy:
    return Policy.model_validate(
        {
            "apiVersion": "heliostat/v1",
            "kind": "InferencePolicy",
            "metadata": {"name": "test"},
            "spec": {
                "regions": {"eu": {}},
                "models": [
                    {
                        "name": "llama",
                        "engine": "vllm",
                        "signals": {"interval": "100ms", "timeout": "80ms", "stale_after": "1s"},
                        "endpoints": [{"address": direct, "region": "eu"}],
                    },
                    {
                        "name": "qwen",
                        "engine": "sglang",
                        "signals": {"source": "prometheus", "prometheus_url": prometheus_url},
                        "endpoints": [{"address": via_prometheus, "region": "eu"}],
                    },
                ],
            },
        }
    )


def test_targets_from_policy() -> None:
    targets = targets_from_policy(policy("127.0.0.1:9001", "http://127.0.0.1:9090", "10.0.0.9:1"))
    llama, qwen = targets
    assert llama == ScrapeTarget(
        model="llama",
        address="127.0.0.1:9001",
        engine="vllm",
        interval=0.1,
        timeout=0.08,
        stale_after=1.0,
    )
    assert (qwen.engine, qwen.source, qwen.prometheus_url) == (
        "sglang",
        "prometheus",
        "http://127.0.0.1:9090",
    )
    assert (qwen.interval, qwen.timeout, qwen.stale_after) == (2.0, 0.5, 6.0)


async def test_composite_routes_each_model_to_its_source(servers: Servers) -> None:
    direct, prom = await servers(), await servers()
    direct.serve(ex.vllm(waiting=4))
    via = "10.0.0.9:1"  # only a label in the fake Prometheus answer

    async def api(request: web.Request) -> web.Response:
        result = [
            {"metric": {"__name__": name, "instance": via, "job": "j"}, "value": [1700, value]}
            for name, value in (
                ("up", "1"),
                ("sglang:num_queue_reqs", "6"),
                ("sglang:num_running_reqs", "2"),
                ("sglang:token_usage", "0.5"),
            )
        ]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return web.Response(text=json.dumps(body), content_type="application/json")

    prom.handler = api
    registry = CollectorRegistry()
    url = f"http://{prom.address}"
    composite = CompositeSource(targets_from_policy(policy(direct.address, url, via)), registry)
    assert isinstance(composite, SignalSource)
    kinds = {where: type(s) for where, s in composite.sources().items()}
    assert kinds == {"direct": Scraper, url: PrometheusSource}
    updates: list[str] = []
    composite.on_update = updates.append
    async with composite:
        await composite.scrape_once()
        signals = composite.signals()
        assert signals[("llama", direct.address)].waiting == 4
        assert signals[("qwen", via)].waiting == 6
        assert signals[("qwen", via)].scraped_at == 1700
        assert sorted(updates) == ["llama", "qwen"]

        # reload: qwen moves to direct scraping, the Prometheus source is retired
        composite.update_targets([ScrapeTarget(model="llama", address=direct.address)])
        assert list(composite.sources()) == ["direct"]
        assert composite.signals()[("llama", direct.address)].waiting == 4  # state kept
        await composite.scrape_once()
    assert prom.requests == 1


async def test_composite_run_loop(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.tgi(queue=2))
    t = ScrapeTarget(model="m", address=server.address, engine="tgi", interval=0.05, timeout=0.04)
    composite = CompositeSource([t], None)
    seen: list[str] = []

    async def hook(model: str) -> None:
        seen.append(model)

    composite.on_update = hook
    task = asyncio.create_task(composite.run())
    try:
        await asyncio.sleep(0.2)
        other = await servers()
        other.serve(ex.tgi(queue=5))
        composite.update_targets([t, ScrapeTarget(model="n", address=other.address, engine="tgi")])
        await asyncio.sleep(0.15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen.count("m") >= 3
    assert composite.signals()[("n", other.address)].waiting == 5
