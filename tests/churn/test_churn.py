"""Stream churn against a real `heliostat serve`: many ADS streams connecting and
disconnecting while others stay, with a change pushed every two seconds.

Every stream that stays must keep getting pushes (it ACKs an endpoint response, EDS or LEDS,
sent after the last change), heliostat must end with no stream left registered, and its
memory must come back to within 10% of its baseline once the clients leave. The baseline is
taken after one full wave of the same number of streams connected and left, so what is
compared is what stays behind (a leak), not the allocator's first high-water mark: measured,
RSS rises from 76 MB cold to about 100 MB after one wave of 1,000 streams and to a plateau
near 110 MB after the first seconds of churn, where it stays through tens of thousands of
connects (four 20 s rounds of 9,000 connects each ended at 109, 110, 114 and 113 MB). So the
baseline is taken after one wave and a short round of the same churn.

That plateau did not hold (2026-12-06, CI after aa7b97b: 122 -> 138 MB). Rounds of 30 s
measured serve's RSS rising round after round, and varying by 10-20 MB with the allocator's
luck; after `malloc_trim(0)` the rise is a steady ~125 bytes per cancelled stream,
grpcio's own native leak (heliostat.runtime.trim's docstring has the figures). serve now
trims once a wave of streams has left, so what this compares is what is still held: a
leak of heliostat's own of even 1 KB per stream (27 MB here) fails the bound.

The short variant runs in `make test`; the issue's size (1,000 concurrent streams for 60 s)
is marked `long` and runs with HELIOSTAT_LONG=1 (`.ci/run`). Clients are the sans-I/O
sessions the fanout benchmark uses (bench/ads_clients.py), half SotW and half delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest

from bench.ads_clients import ENDPOINT_TYPES, Client, run_client
from tests.e2e.harness import (
    LOCALHOST,
    Heliostat,
    free_port,
    policy_document,
    wait_until,
    write_policy,
)

LONG = os.environ.get("HELIOSTAT_LONG") == "1"
REGIONS = ("us-east", "eu-west", "ap-southeast")
ENDPOINT = "127.0.0.1:9"


@dataclass
class Churned:
    baseline_mb: float  # after one wave and a short round of churn
    cold_mb: float  # before any stream
    one_wave_mb: float  # after one wave of `concurrent` streams
    after_mb: float
    peak_streams: int
    connects: int
    changes: int
    staying: int
    staying_failed: list[str]
    staying_behind: list[str]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _streams(heliostat: Heliostat) -> float:
    return heliostat.metric("heliostat_xds_streams")


async def _stream_for(client: Client, channel: grpc.aio.Channel, mode: str, seconds: float) -> None:
    task = asyncio.create_task(run_client(client, channel, mode))
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout=seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _wave(channels: list[grpc.aio.Channel], n: int, tag: str) -> None:
    """n streams at once, each until fully configured, then all leave."""
    clients = [Client(f"{tag}-{i}", REGIONS[i % 3]) for i in range(n)]
    tasks = [
        asyncio.create_task(run_client(c, channels[i % len(channels)], ("sotw", "delta")[i % 2]))
        for i, c in enumerate(clients)
    ]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), timeout=120)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _Round:
    connects: int
    peak: int
    changes: int
    staying: int
    failed: list[str]
    behind: list[str]


async def _round(
    heliostat: Heliostat, channels: list[grpc.aio.Channel], concurrent: int, seconds: float
) -> _Round:
    """Half the streams stay for the whole round, the other half come and go (0.2-2 s
    each); an endpoint is drained or returned every 2 s, which changes every EDS."""
    rng = random.Random(concurrent)
    staying = [Client(f"stay-{i}", REGIONS[i % 3]) for i in range(concurrent // 2)]
    stay_tasks = [
        asyncio.create_task(run_client(c, channels[i % len(channels)], ("sotw", "delta")[i % 2]))
        for i, c in enumerate(staying)
    ]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in staying)), 120)
    deadline = time.monotonic() + seconds
    connects = 0
    peak = 0
    changes: list[float] = []

    async def slot(index: int) -> None:
        nonlocal connects
        while time.monotonic() < deadline:
            connects += 1
            client = Client(f"churn-{index}-{connects}", REGIONS[index % 3])
            mode = ("sotw", "delta")[connects % 2]
            await _stream_for(
                client, channels[connects % len(channels)], mode, rng.uniform(0.2, 2.0)
            )

    async def pusher() -> None:
        url = f"http://{LOCALHOST}:{heliostat.admin_port}/drain"
        body = {"model": "llama-70b", "endpoint": ENDPOINT}
        async with aiohttp.ClientSession() as session:
            drained = False
            while time.monotonic() < deadline - 1:
                await asyncio.sleep(2)
                drained = not drained
                changes.append(time.time())
                method = session.post if drained else session.delete
                async with method(url, json=body) as response:
                    assert response.status == 200, await response.text()

    async def watch() -> None:
        nonlocal peak
        while time.monotonic() < deadline:
            peak = max(peak, int(await asyncio.to_thread(_streams, heliostat)))
            await asyncio.sleep(1)

    await asyncio.gather(*(slot(i) for i in range(concurrent - len(staying))), pusher(), watch())
    await asyncio.sleep(3)  # the last change reaches every staying stream
    behind = [
        c.node_id
        for c in staying
        if not changes
        or not any(
            r.type_url in ENDPOINT_TYPES and r.received_at >= changes[-1] for r in c.receipts
        )
    ]
    failed = [f"{c.node_id}: {c.error}" for c in staying if c.error]
    for task in stay_tasks:
        task.cancel()
    await asyncio.gather(*stay_tasks, return_exceptions=True)
    return _Round(connects, peak, len(changes), len(staying), failed, behind)


async def _settled_rss(heliostat: Heliostat, pid: int) -> float:
    await asyncio.to_thread(
        wait_until, lambda: _streams(heliostat) == 0, 30, 0.2, "every stream unregistered"
    )
    await asyncio.sleep(2)
    return _rss_mb(pid)


async def _churn(heliostat: Heliostat, concurrent: int, seconds: float) -> Churned:
    assert heliostat.proc is not None
    pid = heliostat.proc.pid
    cold = _rss_mb(pid)
    target = f"{LOCALHOST}:{heliostat.xds_port}"
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(8)]
    try:
        await _wave(channels, concurrent, "warm")
        one_wave = await _settled_rss(heliostat, pid)
        # A short round of the same churn first: the allocators' high-water mark.
        await _round(heliostat, channels, concurrent, max(4.0, seconds / 6))
        baseline = await _settled_rss(heliostat, pid)
        measured = await _round(heliostat, channels, concurrent, seconds)
    finally:
        for channel in channels:
            await channel.close()
    return Churned(
        baseline,
        cold,
        one_wave,
        await _settled_rss(heliostat, pid),
        measured.peak,
        measured.connects,
        measured.changes,
        measured.staying,
        measured.failed,
        measured.behind,
    )


@pytest.mark.parametrize(
    ("concurrent", "seconds"),
    [
        (100, 8.0),
        pytest.param(
            1000,
            60.0,
            marks=[
                pytest.mark.long,
                pytest.mark.skipif(not LONG, reason="long: set HELIOSTAT_LONG=1 to run"),
            ],
        ),
    ],
    ids=["100x8s", "1000x60s"],
)
async def test_churning_streams_leave_nothing_behind(
    tmp_path: Path, concurrent: int, seconds: float
) -> None:
    policy = tmp_path / "policy.yaml"
    write_policy(
        policy,
        policy_document(
            gateway_port=free_port(),
            endpoints=[(ENDPOINT, r) for r in REGIONS[:1]]
            + [(f"127.0.0.1:{10 + i}", r) for i, r in enumerate(REGIONS)],
        ),
    )
    heliostat = Heliostat(policy, tmp_path)
    heliostat.start()
    try:
        result = await _churn(heliostat, concurrent, seconds)
    finally:
        heliostat.stop()
    print(f"\nchurn {concurrent} streams x {seconds:g} s: {result}")
    assert result.staying_failed == []
    assert result.staying_behind == []
    assert result.changes >= seconds // 2 - 1
    # The load generator's own reach, not heliostat's behaviour: churning streams live
    # 0.2-2 s and spend part of it connecting. At 1,000 streams with LEDS (three responses
    # per change) the peak read 841 on an idle machine (2026-12-06), close to the 800 this
    # held before; the CI run after the full suite is busier. On 2026-12-07's machine, where
    # the whole suite took 28 min instead of 19, it read 598 on the code that read 841 and 629
    # after that session's changes: the generator's reach moves with the machine. Half still
    # proves the round had hundreds of streams open at once.
    assert result.peak_streams >= concurrent * 0.5
    assert result.connects > concurrent - result.staying
    assert result.after_mb <= result.baseline_mb * 1.10, result
