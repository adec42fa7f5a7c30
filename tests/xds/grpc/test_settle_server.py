"""The ADS server settles delta LEDS assignments only once no stream has a response in
flight (heliostat.xds.grpc.settle): a node that has not ACKed holds a settled stream's last
response back, and its stream ending lets it go; nothing of the change waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from bench.ads_clients import Client, run_client
from heliostat.xds.grpc.settle import SettleGate
from heliostat.xds.resources.types import TypeUrl
from tests.xds.grpc.test_ads_server import Running, serving, until
from tests.xds.helpers import snapshot


@pytest.fixture
async def ads() -> AsyncIterator[Running]:
    # No quiet (serve waits 30 s of still endpoints first): the gate alone is looked at.
    gate = SettleGate(longest_s=60.0, quiet_s=0.0)
    async with serving(snapshot(leds=True), settle=gate) as running:
        yield running


def eds(ads: Running, node_id: str) -> dict[str, object]:
    [entry] = [e for e in ads.registry.entries() if e.node_id == node_id]
    return entry.status()["EDS"].as_json()


async def test_a_node_that_has_not_acked_holds_back_settling_until_its_stream_ends(
    ads: Running,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}") as channel:
        # A node that asks for clusters and never ACKs the answer: a response in flight.
        stuck = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        await stuck.write(
            discovery_pb2.DeltaDiscoveryRequest(
                node=base_pb2.Node(id="gw-stuck", locality=base_pb2.Locality(region="us-east")),
                type_url=TypeUrl.CLUSTER.value,
            )
        )
        assert (await stuck.read()).type_url == TypeUrl.CLUSTER.value

        client = Client("gw-1", "us-east")
        task = asyncio.create_task(run_client(client, channel, "delta"))
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            assert client.error is None and client.needs_leds
            # Its endpoints are ACKed and it is in sync (routing has everything), but its
            # assignments stay pending while the other node has a response unanswered.
            await until(lambda: eds(ads, "gw-1")["in_sync"] is True)
            await asyncio.sleep(0.3)
            assert eds(ads, "gw-1")["settling"] > 0
            stuck.cancel()
            await until(lambda: eds(ads, "gw-1")["settling"] == 0)
            await until(lambda: eds(ads, "gw-1")["in_sync"] is True)
            assert client.error is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
