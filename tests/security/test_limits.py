"""The xDS server's limits, on a real grpc.aio server: message size, open streams, requests
per node per second. Each is a RESOURCE_EXHAUSTED with a message for the stream that hit it,
a count in heliostat_xds_refused_total{reason}, a log line that a client refused in a loop
cannot turn into a flood, and nothing for the other streams. And the `serve` flags that set
them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from heliostat.balance import static_views
from heliostat.policy import parse_policy
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.security.limits import LogThrottle, NodeBuckets, StreamLimits, TokenBucket
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamRegistry
from heliostat.xds.grpc.server import SERVER_OPTIONS, AdsServer, add_to_server
from heliostat.xds.resources.types import TypeUrl
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
    with pytest.raises(ValueError):
        StreamLimits(log_every_s=0)


def test_a_node_has_one_bucket_whatever_stream_it_uses_and_other_nodes_their_own() -> None:
    now = [0.0]
    buckets = NodeBuckets(rate=1, burst=3, clock=lambda: now[0])
    assert [buckets.take("gw-loop") for _ in range(4)] == [True] * 3 + [False]
    assert buckets.take("gw-other")
    now[0] += 1.0
    assert buckets.take("gw-loop") and not buckets.take("gw-loop")


def test_buckets_that_refilled_are_forgotten() -> None:
    now = [0.0]
    buckets = NodeBuckets(rate=1, burst=2, clock=lambda: now[0], prune_every=4)
    for i in range(3):
        buckets.take(f"gw-{i}")
    now[0] += 1.0
    buckets.take("gw-busy")  # the 4th new node: those idle for burst/rate (2 s) would go
    assert len(buckets) == 4  # none idle long enough yet
    now[0] += 1.5
    for i in range(4, 8):
        buckets.take(f"gw-{i}")  # the 8th new node prunes: gw-0..2 idle 2.5 s, refilled
    assert len(buckets) == 5  # gw-busy (idle 1.5 s) and gw-4..7


def test_refusal_logs_the_first_then_one_per_window_with_the_count() -> None:
    now = [0.0]
    throttle = LogThrottle(every_s=10, clock=lambda: now[0])
    assert throttle.admit("node_refused", "gw-loop") == 0
    for _ in range(50):
        now[0] += 0.1
        assert throttle.admit("node_refused", "gw-loop") is None
    assert throttle.admit("node_refused", "gw-other") == 0  # another node: its own line
    assert throttle.admit("stream_refused", "gw-loop") == 0  # another kind: its own line
    now[0] += 5.1  # 10 s after the first
    assert throttle.admit("node_refused", "gw-loop") == 50
    assert throttle.admit("node_refused", "gw-loop") is None


def test_a_client_inventing_node_ids_shares_one_line_per_window() -> None:
    now = [0.0]
    throttle = LogThrottle(every_s=10, clock=lambda: now[0], max_keys=3)
    logged = [throttle.admit("node_refused", f"gw-{i}") for i in range(100)]
    assert logged[:3] == [0, 0, 0]
    assert logged[3] == 0 and logged[4:] == [None] * 96  # the rest share one key
    now[0] += 10.0
    assert throttle.admit("node_refused", "gw-new") == 0  # old keys forgotten: room again


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


async def test_a_node_reconnecting_in_a_loop_is_refused_once_its_budget_is_spent(
    served: tuple[grpc.aio.Channel, CollectorRegistry, StreamLimits],
) -> None:
    """The budget is the node's, not the stream's: new streams do not refill it. The refusals
    are logged once, not once per attempt; another node connects meanwhile."""
    channel, registry, limits = served
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    first = discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS)
    first.node.id = "gw-loop"
    codes = []
    with capture_logs() as logs:
        for _ in range(limits.burst + 10):
            call = stub.StreamAggregatedResources(iter([first]))
            try:
                async for _ in call:
                    break
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
                assert exc.details() == (
                    "node 'gw-loop' sent more than 0.5 requests/s (burst 5); retry later"
                )
            call.cancel()
    assert codes[: limits.burst] == [grpc.StatusCode.OK] * limits.burst
    assert codes[limits.burst :] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 10
    assert _refused(registry, "rate") == 10
    refusals = [e for e in logs if e["event"] == "stream_refused"]
    assert len(refusals) == 1, refusals
    assert refusals[0]["node_id"] == "gw-loop" and refusals[0]["reason"] == "request rate"
    other = await _open(channel, "gw-other")
    assert (await other.read()).type_url == CDS
    other.cancel()


def test_serve_flags_set_the_limits_and_help_shows_their_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from heliostat import cli, serve

    seen: list[serve.ServeOptions] = []
    monkeypatch.setattr(serve, "run", seen.append)
    args = ["serve", "--policy", str(tmp_path / "p.yaml"), "--log-format", "json"]
    assert cli.main(args) == 0
    assert seen[-1].limits == StreamLimits()
    limits = ["--max-xds-streams", "7", "--node-request-rate", "2.5"]
    limits += ["--node-request-burst", "9", "--refusal-log-interval", "30"]
    limits += ["--max-xds-request-bytes", "65536"]
    assert cli.main(args + limits) == 0
    assert seen[-1].limits == StreamLimits(
        max_request_bytes=65536, max_streams=7, rate=2.5, burst=9, log_every_s=30
    )
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]
    for flag, default in [
        ("--max-xds-request-bytes BYTES", "(default: 4194304)"),
        ("--max-xds-streams N", "(default: 10000)"),
        ("--node-request-rate PER_SECOND", "(default: 50)"),
        ("--node-request-burst N", "(default: 200)"),
        ("--refusal-log-interval SECONDS", "(default: 10)"),
    ]:
        shown = re.search(r"\(default: [^)]*\)", text.split(flag, 1)[1])
        assert shown is not None and shown.group(0) == default, flag


async def test_a_node_with_a_malformed_identity_in_a_loop_is_logged_once(
    served: tuple[grpc.aio.Channel, CollectorRegistry, StreamLimits],
) -> None:
    channel, _, _ = served
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    first = discovery_pb2.DiscoveryRequest(node=NODE, type_url=CDS)
    first.node.id = "gw-odd"
    first.node.metadata.update({"role": "toaster"})
    with capture_logs() as logs:
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.StreamAggregatedResources(iter([first])):
                    pass
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [e["node_id"] for e in logs if e["event"] == "node_rejected"] == ["gw-odd"]
