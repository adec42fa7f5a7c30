"""Fleet lifecycle: clean start and stop, port release, run_fleet cancellation."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from heliostat.sim import Fleet, ReplicaConfig, run_fleet

from .conftest import free_port, local_address


def port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_fleet_start_stop_releases_ports() -> None:
    configs = [ReplicaConfig(address=local_address(), region=f"r{i}", speed=20) for i in range(3)]
    fleet = Fleet(configs)
    async with fleet:
        assert len(fleet) == 3
        assert all(port_is_open(c.port) for c in configs)
        assert fleet[configs[1].address].config.region == "r1"
    assert not any(port_is_open(c.port) for c in configs)
    # The same addresses can be bound again right away.
    async with Fleet(configs):
        assert all(port_is_open(c.port) for c in configs)


async def test_stop_returns_promptly_with_requests_in_flight() -> None:
    cfg = ReplicaConfig(address=local_address(), speed=1.0, max_num_seqs=1)
    fleet = Fleet([cfg])
    await fleet.start()
    replica = fleet[cfg.address]
    async with aiohttp.ClientSession() as http:
        target = replica.url + "/v1/completions"
        jobs = [
            asyncio.create_task(http.post(target, json={"prompt": "x", "max_tokens": 1000}))
            for _ in range(3)
        ]
        hung_fault = {"kind": "hang"}
        await asyncio.sleep(0.1)
        async with http.post(replica.url + "/sim/fault", json=hung_fault):
            pass
        jobs.append(asyncio.create_task(http.post(target, json={"prompt": "y"})))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await fleet.stop()
        assert loop.time() - t0 < 1.0
        results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, aiohttp.ClientResponse):
            assert result.status == 503
            result.release()
        else:
            assert isinstance(result, aiohttp.ClientError)
    assert not port_is_open(cfg.port)


async def test_duplicate_addresses_are_refused() -> None:
    address = local_address()
    with pytest.raises(ValueError):
        Fleet([ReplicaConfig(address=address), ReplicaConfig(address=address)])


async def test_failed_start_leaves_nothing_running() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        good = ReplicaConfig(address=local_address())
        taken = ReplicaConfig(address=f"127.0.0.1:{blocker.getsockname()[1]}")
        fleet = Fleet([good, taken])
        with pytest.raises(OSError):
            await fleet.start()
        assert not port_is_open(good.port)
    finally:
        blocker.close()


async def test_run_fleet_serves_until_cancelled() -> None:
    port = free_port()
    configs = [ReplicaConfig(address=f"127.0.0.1:{port}", region="eu", speed=20)]
    task = asyncio.create_task(run_fleet(configs, rtt_ms=lambda a, b: 10.0))
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    assert resp.status == 200
                    assert resp.headers["x-replica-region"] == "eu"
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("run_fleet never came up")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not port_is_open(port)
