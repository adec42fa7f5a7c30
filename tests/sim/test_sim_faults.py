"""Each fault kind over HTTP, and healing it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from heliostat.sim import Fleet

from .conftest import FleetFactory

BODY = {"prompt": "hello there", "max_tokens": 3}


def url(fleet: Fleet, path: str) -> str:
    return next(iter(fleet)).url + path


async def set_fault(http: aiohttp.ClientSession, fleet: Fleet, **fault: Any) -> None:
    async with http.post(url(fleet, "/sim/fault"), json=fault) as resp:
        assert resp.status == 200, await resp.text()


async def heal(http: aiohttp.ClientSession, fleet: Fleet, kind: str | None = None) -> None:
    target = url(fleet, "/sim/fault") + (f"?kind={kind}" if kind else "")
    async with http.delete(target) as resp:
        assert resp.status == 200


async def complete(http: aiohttp.ClientSession, fleet: Fleet, timeout: float = 5.0) -> int:
    async with http.post(
        url(fleet, "/v1/completions"), json=BODY, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as resp:
        await resp.read()
        return resp.status


async def stats(http: aiohttp.ClientSession, fleet: Fleet) -> dict[str, Any]:
    async with http.get(url(fleet, "/sim/stats")) as resp:
        result: dict[str, Any] = await resp.json()
        return result


async def test_error_fault_and_heal(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet()
    await set_fault(http, fleet, kind="error", status=503)
    async with http.post(url(fleet, "/v1/completions"), json=BODY) as resp:
        assert resp.status == 503
        assert "error" in await resp.json()
        assert resp.headers["x-replica-id"] == next(iter(fleet)).id
    async with http.post(url(fleet, "/v1/chat/completions"), json={"messages": []}) as resp:
        assert resp.status == 503
    async with http.get(url(fleet, "/health")) as resp:
        assert resp.status == 200  # health checks lie, as they do on a real crash loop
    await heal(http, fleet)
    assert await complete(http, fleet) == 200
    s = await stats(http, fleet)
    assert s["faulted"] == {"error": 2} and s["served"] == 1


async def test_error_fault_defaults_to_500(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    await set_fault(http, fleet, kind="error")
    assert await complete(http, fleet) == 500


async def test_hang_fault_never_answers_until_healed(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    await set_fault(http, fleet, kind="hang")
    with pytest.raises(asyncio.TimeoutError):
        await complete(http, fleet, timeout=0.3)
    hung = asyncio.create_task(complete(http, fleet, timeout=5.0))
    await asyncio.sleep(0.1)
    assert not hung.done()
    await heal(http, fleet, "hang")
    # Healing drops the hung connection: still no answer, but no longer stuck.
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(hung, 2.0)
    assert await complete(http, fleet) == 200
    assert (await stats(http, fleet))["faulted"] == {"hang": 2}


async def test_slow_fault_multiplies_latency(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet({"speed": 10.0})
    body = {"prompt": "x" * 2000, "max_tokens": 10}
    target = url(fleet, "/v1/completions")

    async def timed() -> float:
        t0 = time.perf_counter()
        async with http.post(target, json={**body, "prompt": f"{t0}" + body["prompt"]}) as r:
            assert r.status == 200
            await r.read()
        return time.perf_counter() - t0

    await timed()
    normal = await timed()
    await set_fault(http, fleet, kind="slow", factor=5)
    slow = await timed()
    await heal(http, fleet)
    healed = await timed()
    assert slow > 3.5 * normal
    assert healed < 2 * normal
    assert (await stats(http, fleet))["engine"]["slowdown"] == 1.0


async def test_no_metrics_fault(make_fleet: FleetFactory, http: aiohttp.ClientSession) -> None:
    fleet = await make_fleet()
    await set_fault(http, fleet, kind="no_metrics")
    async with http.get(url(fleet, "/metrics")) as resp:
        assert resp.status == 503
    assert await complete(http, fleet) == 200  # inference unaffected
    await heal(http, fleet)
    async with http.get(url(fleet, "/metrics")) as resp:
        assert resp.status == 200
        assert "vllm:num_requests_waiting" in await resp.text()


async def test_close_fault_drops_the_connection(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    await set_fault(http, fleet, kind="close")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await complete(http, fleet)
    async with http.get(url(fleet, "/sim/fault")) as resp:
        assert (await resp.json())["faults"][0]["kind"] == "close"
    await heal(http, fleet)
    assert await complete(http, fleet) == 200


async def test_faults_combine_and_heal_one_by_one(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    await set_fault(http, fleet, kind="no_metrics")
    await set_fault(http, fleet, kind="error", status=502)
    assert await complete(http, fleet) == 502
    await heal(http, fleet, "error")
    assert await complete(http, fleet) == 200
    async with http.get(url(fleet, "/metrics")) as resp:
        assert resp.status == 503
    # Reset zeroes statistics but leaves faults alone.
    await http.post(url(fleet, "/sim/reset"))
    s = await stats(http, fleet)
    assert s["served"] == 0 and [f["kind"] for f in s["faults"]] == ["no_metrics"]


async def test_bad_fault_requests_are_400(
    make_fleet: FleetFactory, http: aiohttp.ClientSession
) -> None:
    fleet = await make_fleet()
    for body in ({"kind": "meteor"}, {"kind": "slow", "factor": -1}, ["hang"]):
        async with http.post(url(fleet, "/sim/fault"), json=body) as resp:
            assert resp.status == 400
    async with http.delete(url(fleet, "/sim/fault") + "?kind=meteor") as resp:
        assert resp.status == 400
    assert (await stats(http, fleet))["faults"] == []
