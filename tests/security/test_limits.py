"""The xDS server's limits, on a real grpc.aio server: message size, open streams, requests
per second. Each is a RESOURCE_EXHAUSTED with a message for the stream that hit it, a count
in heliostat_xds_refused_total{reason}, and nothing for the other streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry

from heliostat.balance import static_views
from heliostat.policy import parse_policy
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.security.limits import StreamLimits, TokenBucket
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamRegistry
from heliostat.xds.grpc.server import SERVER_OPTIONS, AdsServer, add_to_server
from heliostat.xds.protocol.types import TypeUrl
from tests.xds.helpers import NODE

POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: limits}
spec:
  regions: {us-east: {}}
  models:
    - name: llama
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
"""
CDS = TypeUrl.CLUSTER.value


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, CollectorRegistry, StreamLimits]]:
    policy = parse_policy(POLICY)
    publisher = Publisher(SnapshotCache(), Inputs(policy, static_views(policy)))
    registry = CollectorRegistry()
    limits = StreamLimits(max_streams=2, rate=0.5, burst=5)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_to_server(
        server, AdsServer(publisher, StreamRegistry(), XdsMetrics(registry), limits=limits)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    yield channel, registry, limits
    await channel.close()
    await server.stop(0)


def _refused(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("heliostat_xds_refused_total", {"reason": reason})
    assert value is not None
    return value


async def _open(channel: grpc.aio.Channel, node_id: str) -> grpc.aio.StreamStreamCall:  # type: ignore[type-arg]
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    node = discovery_pb2.DiscoveryRequest().node.__class__()
    node.CopyFrom(NODE)
    node.id = node_id
    await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
    return call


def test_the_token_bucket_allows_its_burst_then_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(10, 5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    now[0] += 0.25  # 2.5 tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    with pytest.raises(ValueError):
        StreamLimits(rate=0)


async def test_one_stream_too_many_is_refused_the_open_ones_go_on(
    served: tuple[grpc.aio.Channel, CollectorRegistry, StreamLimits],
) -> None:
    channel, registry, limits = served
    calls = [await _open(channel, f"gw-{i}") for i in range(limits.max_streams)]
    for call in calls:
        assert (await call.read()).type_url == CDS
    first = discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS)
    first.node.id = "gw-extra"
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in stub.StreamAggregatedResources(iter([first])):
            pass
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == "heliostat serves at most 2 xDS streams; retry later"
    assert _refused(registry, "streams") == 1
    # the open ones still answer: a request for listeners gets its response
    await calls[0].write(discovery_pb2.DiscoveryRequest(type_url=TypeUrl.LISTENER.value))
    assert (await calls[0].read()).type_url == TypeUrl.LISTENER.value
    for call in calls:
        call.cancel()


async def test_a_stream_flooding_requests_is_ended_alone(
    served: tuple[grpc.aio.Channel, CollectorRegistry, StreamLimits],
) -> None:
    channel, registry, _ = served
    calm = await _open(channel, "gw-calm")
    assert (await calm.read()).type_url == CDS
    first = discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS)
    first.node.id = "gw-flood"
    junk = discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/x")
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)

    async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        # One past the burst, then quiet with the stream open: the last write is the one
        # that ends it, so no write races the server's abort.
        for request in [first, *[junk] * 5]:
            yield request
        await asyncio.Event().wait()

    flood = stub.StreamAggregatedResources(requests())
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for _ in flood:
            pass
    assert ended.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ended.value.details() == (
        "node 'gw-flood' sent more than 0.5 requests/s (burst 5); stream closed"
    )
    assert _refused(registry, "rate") == 1
    await calm.write(discovery_pb2.DiscoveryRequest(type_url=TypeUrl.LISTENER.value))
    assert (await calm.read()).type_url == TypeUrl.LISTENER.value
    calm.cancel()


async def test_a_request_over_4_mib_is_refused_by_grpc(
    served: tuple[grpc.aio.Channel, CollectorRegistry, StreamLimits],
) -> None:
    channel, _, _ = served
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    names = [f"cluster-{i:08d}-" + "x" * 40 for i in range(100_000)]  # about 5.6 MB
    await call.write(discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS, resource_names=names))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call.read()
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.value.details() or "")
