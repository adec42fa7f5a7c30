"""The ADS server settles delta LEDS assignments only once no stream has a response in
flight (heliostat.xds.grpc.settle): a node that has not ACKed holds a settled stream's last
response back, and its stream ending lets it go; nothing of the change waits for it. And
when heliostat stops, it settles every node at once, whatever its quiet, before the
streams end (`settle_before_stop`)."""

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


def _stuck_request(node_id: str) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        node=base_pb2.Node(id=node_id, locality=base_pb2.Locality(region="us-east")),
        type_url=TypeUrl.CLUSTER.value,
    )


async def test_stopping_settles_a_pending_node_at_once_and_waits_for_its_ack_alone() -> None:
    # Endpoints never still long enough while the test runs: only stopping settles.
    gate = SettleGate(longest_s=60.0, quiet_s=3600.0)
    async with (
        serving(snapshot(leds=True), settle=gate) as ads,
        grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}") as channel,
    ):
        client = Client("gw-1", "us-east")
        task = asyncio.create_task(run_client(client, channel, "delta"))
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            await until(lambda: eds(ads, "gw-1")["in_sync"] is True)
            await asyncio.sleep(0.3)
            pending = eds(ads, "gw-1")["settling"]
            assert isinstance(pending, int) and pending > 0  # pending: its quiet is an hour
            before = len(client.receipts)

            assert await ads.server.settle_before_stop(10.0) == 0

            # One EDS response (the assignments under their own versions), its ACK heard by
            # the server before settle_before_stop returned (no response pending on the
            # stream); no endpoint sent again.
            sent = client.receipts[before:]
            assert [r.type_url for r in sent] == [TypeUrl.ENDPOINT.value]
            assert not eds(ads, "gw-1")["pending_nonce"]
            assert eds(ads, "gw-1")["settling"] == 0
            # The client notes its ACK once its write returns, which may be after the server
            # has read it and settle_before_stop has returned.
            await until(lambda: sent[0].acked_at > 0)
            assert eds(ads, "gw-1")["in_sync"] is True
            assert client.error is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_stopping_waits_for_a_node_that_never_acks_only_as_long_as_it_is_given() -> None:
    gate = SettleGate(longest_s=60.0, quiet_s=3600.0)
    async with (
        serving(snapshot(leds=True), settle=gate) as ads,
        grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}") as channel,
    ):
        stuck = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        await stuck.write(_stuck_request("gw-stuck"))
        assert (await stuck.read()).type_url == TypeUrl.CLUSTER.value
        try:
            began = asyncio.get_running_loop().time()
            assert await ads.server.settle_before_stop(0.5) == 1  # its CDS is unanswered
            assert asyncio.get_running_loop().time() - began >= 0.5
        finally:
            stuck.cancel()
