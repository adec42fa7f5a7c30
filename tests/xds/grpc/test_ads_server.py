"""The ADS server over real gRPC in-process, driven by the benchmark's sans-I/O ADS clients.

No Envoy: `bench.ads_clients` subscribes as Envoy does (CDS and LDS as wildcards, then EDS
and RDS for what they name, ACKing every response), over a real grpc.aio channel to a real
grpc.aio server on 127.0.0.1. What is checked is what only the adapter can break: the first
request's node picks the snapshot, a new snapshot reaches an open stream, and the stream
registry mirrors what the client ACKed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from bench.ads_clients import ALL_TYPES, EDS, Client, run_client
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamRegistry
from heliostat.xds.grpc.server import SERVER_OPTIONS, AdsServer, add_to_server
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl
from tests.xds.helpers import snapshot

GROUP = NodeGroup(Role.GATEWAY, "us-east")


class CacheSource:
    """The server's snapshot source over a SnapshotCache (what the publisher is in serve)."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache
        self.asked: list[tuple[NodeGroup, str]] = []

    def snapshot_for(self, group: NodeGroup, node_id: str) -> Snapshot:
        self.asked.append((group, node_id))
        current = self.cache.get(group)
        assert current is not None, f"no snapshot for {group.key}"
        return current

    def watch(self, group: NodeGroup, callback: Callable[[Snapshot], None]) -> Callable[[], None]:
        return self.cache.watch(group, callback)


class Running:
    def __init__(
        self, port: int, source: CacheSource, registry: StreamRegistry, server: AdsServer
    ) -> None:
        self.port, self.source, self.registry, self.server = port, source, registry, server


WITHHELD: set[TypeUrl] = set()  # what the `ads` server withholds; tests change it


@pytest.fixture
async def ads() -> AsyncIterator[Running]:
    WITHHELD.clear()
    async with serving(snapshot(), withheld=lambda: frozenset(WITHHELD)) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(first: Snapshot, **options: Any) -> AsyncIterator[Running]:
    """A real grpc.aio ADS server on a free port serving `first` to GROUP, with AdsServer's
    keyword `options` (withheld types, a settle gate); stopped on the way out."""
    cache = SnapshotCache()
    cache.set(GROUP, first)
    source, registry = CacheSource(cache), StreamRegistry()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ads = AdsServer(source, registry, XdsMetrics(CollectorRegistry()), **options)
    add_to_server(server, ads)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Running(port, source, registry, ads)
    finally:
        await server.stop(grace=None)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def in_sync(ads: Running) -> bool:
    return ads.registry.entries()[0].as_json()["in_sync"] is True


def eds_acked(ads: Running) -> str:
    """The EDS version the registry says the one open stream ACKed."""
    types = ads.registry.entries()[0].status()
    return types["EDS"].acked_version


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_a_client_gets_every_type_then_a_new_snapshot(ads: Running, mode: str) -> None:
    client = Client("gw-1", "us-east")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}") as channel:
        task = asyncio.create_task(run_client(client, channel, mode))
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            assert client.error is None
            assert client.acked_types == set(ALL_TYPES)
            assert ads.source.asked == [(GROUP, "gw-1")], "the node picks the snapshot"
            [entry] = [e.as_json() for e in ads.registry.entries()]
            assert (entry["node_id"], entry["mode"], entry["group"]) == ("gw-1", mode, GROUP.key)
            await until(lambda: in_sync(ads))

            # A new snapshot for the group reaches the open stream: EDS again, and ACKed.
            before = eds_acked(ads)
            t0 = time.time()
            changed = snapshot(llama_port=9102)
            assert ads.source.cache.set(GROUP, changed)
            await until(
                lambda: any(
                    r.type_url == EDS and r.received_at >= t0 and r.acked_at > 0
                    for r in client.receipts
                )
            )
            await until(lambda: eds_acked(ads) not in ("", before) and in_sync(ads))
            assert client.error is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await until(lambda: not ads.registry.entries())


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_withheld_endpoints_are_sent_only_once_released(ads: Running, mode: str) -> None:
    """What a starting heliostat does before its first signal round: every type but EDS
    goes out; the next snapshot notice after the release brings EDS, and only then."""
    WITHHELD.add(TypeUrl.ENDPOINT)
    client = Client("gw-1", "us-east")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}") as channel:
        task = asyncio.create_task(run_client(client, channel, mode))
        try:
            await until(lambda: set(ALL_TYPES) - {EDS} <= client.acked_types)
            await asyncio.sleep(0.3)
            assert EDS not in {r.type_url for r in client.receipts}
            assert not client.ready.is_set()
            WITHHELD.clear()
            released = snapshot(llama_port=9102)
            assert ads.source.cache.set(GROUP, released)
            await asyncio.wait_for(client.ready.wait(), 10)
            assert [r.type_url for r in client.receipts].count(EDS) == 1
            await until(lambda: eds_acked(ads) != "" and in_sync(ads))
            assert client.error is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await until(lambda: not ads.registry.entries())


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_requests_are_handled_as_they_are_read_without_waking_the_stream(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A push to 1,000 streams brings 1,000 ACKs: each is handled by the stream's reader as
    it arrives, and the stream's handler (which sends) is woken only for what there is to
    send, never for a request itself; the node still ends up in sync."""
    passed: list[object] = []

    class Inbox(asyncio.Queue[object]):
        def put_nowait(self, item: object) -> None:
            passed.append(item)
            super().put_nowait(item)

    monkeypatch.setattr(asyncio, "Queue", Inbox)
    async with serving(snapshot()) as ads:
        client = Client("gw-1", "us-east")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}") as channel:
            task = asyncio.create_task(run_client(client, channel, mode))
            try:
                await asyncio.wait_for(client.ready.wait(), 10)
                assert ads.source.cache.set(GROUP, snapshot(llama_port=9102))
                await until(lambda: in_sync(ads) and eds_acked(ads) != "")
                await until(lambda: sum(1 for r in client.receipts if r.acked_at) >= 5)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    requests = [item for item in passed if hasattr(item, "type_url")]
    assert requests == [], "a request went through the stream's inbox"
    assert any(type(item).__name__ == "Outcome" for item in passed), "subscriptions answered"
