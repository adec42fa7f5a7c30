"""DiscoveryRequests an Envoy would never send: unknown type URLs, garbage nonces and
versions, NACKs of nothing, huge resource-name lists, interleaved with snapshot changes.

Against the sans-I/O streams (state-of-the-world and delta): no exception, every response a
known type that serializes, an unknown type answered with an event and nothing else. Against
one real grpc.aio server: every fuzzed stream ends (OK, or an error status with a message)
within the deadline, and a well-behaved stream open all along still gets every push.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from heliostat.balance import static_views
from heliostat.policy import parse_policy
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamRegistry
from heliostat.xds.grpc.server import AdsServer, add_to_server
from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.events import EventKind
from heliostat.xds.protocol.sotw import SotwStream
from heliostat.xds.resources.types import TypeUrl
from tests.e2e.harness import free_port
from tests.fuzz.conftest import cases
from tests.xds.helpers import NODE, snapshot

pytestmark = pytest.mark.fuzz

KNOWN = [t.value for t in TypeUrl]
_TYPE_URLS = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from(KNOWN),
    st.sampled_from(
        [
            "",
            "type.googleapis.com/envoy.config.secret.v3.Secret",
            "type.googleapis.com/envoy.config.cluster.v3.Cluster ",
            KNOWN[0].upper(),
        ]
    ),
    st.text(max_size=60),
)
SNAPSHOTS = [snapshot(), snapshot(llama_port=9109), snapshot(("llama",), gateway_port=10001)]


@st.composite
def _names(draw: st.DrawFn) -> list[str] | None:
    kind = draw(st.sampled_from(["default", "list", "huge"]))
    if kind == "default":
        return None
    if kind == "list":
        return draw(st.lists(st.text(max_size=20), max_size=8))
    size = draw(st.integers(min_value=1_000, max_value=20_000))
    return [f"cluster-{i}" for i in range(size)]


# One operation: a new snapshot, or a request built from pieces (a nonce or version "seen"
# reuses the last one the stream sent, so real ACK/NACK paths are reached too).
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("snapshot"), st.integers(min_value=0, max_value=len(SNAPSHOTS) - 1)),
        st.tuples(
            st.just("request"),
            st.fixed_dictionaries(
                {
                    "type_url": _TYPE_URLS,
                    "nonce": st.one_of(st.just(""), st.just("seen"), st.text(max_size=30)),
                    "version": st.one_of(st.just(""), st.just("seen"), st.text(max_size=30)),
                    "names": _names(),
                    "error": st.one_of(st.none(), st.text(max_size=50)),
                }
            ),
        ),
    ),
    min_size=1,
    max_size=10,
)


def _last(responses: list[Any]) -> tuple[str, str]:
    return (
        (responses[-1].nonce, getattr(responses[-1], "version_info", "")) if responses else ("", "")
    )


def _check(outcome: Any, request_type: str | None, sent: list[Any]) -> None:
    for response in outcome.responses:
        assert response.type_url in KNOWN
        assert response.SerializeToString() is not None
        sent.append(response)
    if request_type is not None and request_type not in KNOWN:
        assert outcome.responses == []
        assert [e.kind for e in outcome.events] == [EventKind.UNKNOWN_TYPE]


@given(ops=_OPS)
@cases(2000)
def test_sotw_stream_survives_any_request_sequence(ops: list[tuple[str, Any]]) -> None:
    stream = SotwStream("fuzz")
    sent: list[Any] = []
    for op, arg in ops:
        if op == "snapshot":
            _check(stream.on_snapshot(SNAPSHOTS[arg]), None, sent)
            continue
        nonce, version = _last(sent)
        request = discovery_pb2.DiscoveryRequest(
            type_url=arg["type_url"],
            response_nonce=nonce if arg["nonce"] == "seen" else arg["nonce"],
            version_info=version if arg["version"] == "seen" else arg["version"],
            resource_names=arg["names"] or [],
        )
        if arg["error"] is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=arg["error"]))
        _check(stream.on_request(request), arg["type_url"], sent)
    assert isinstance(stream.status(), dict)


@given(ops=_OPS, initial=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4))
@cases(2000)
def test_delta_stream_survives_any_request_sequence(
    ops: list[tuple[str, Any]], initial: dict[str, str]
) -> None:
    stream = DeltaStream("fuzz")
    sent: list[Any] = []
    for op, arg in ops:
        if op == "snapshot":
            _check(stream.on_snapshot(SNAPSHOTS[arg]), None, sent)
            continue
        nonce, _ = _last(sent)
        names = arg["names"] or []
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=arg["type_url"],
            response_nonce=nonce if arg["nonce"] == "seen" else arg["nonce"],
            resource_names_subscribe=names[: len(names) // 2 + 1],
            resource_names_unsubscribe=names[len(names) // 2 + 1 :],
            initial_resource_versions=initial,
        )
        if arg["error"] is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=arg["error"]))
        _check(stream.on_request(request), arg["type_url"], sent)
    assert isinstance(stream.status(), dict)


# -- one real grpc.aio server --------------------------------------------------------------

POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: fuzz}
spec:
  regions: {us-east: {}}
  gateway: {port: 10000, address: 127.0.0.1}
  models:
    - name: %s
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
"""


class _Server:
    """heliostat's ADS servicer on a real grpc.aio server, in a thread with its own loop."""

    def __init__(self) -> None:
        policy = parse_policy(POLICY % "llama")
        self.publisher = Publisher(SnapshotCache(), Inputs(policy, static_views(policy)))
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.thread.start()
        assert self._ready.wait(10)

    async def _run(self) -> None:
        server = grpc.aio.server()
        ads = AdsServer(self.publisher, StreamRegistry(), XdsMetrics(CollectorRegistry()))
        add_to_server(server, ads)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0.5)

    def publish(self, model: str) -> None:
        policy = parse_policy(POLICY % model)
        done = threading.Event()

        def go() -> None:
            self.publisher.publish(Inputs(policy, static_views(policy)))
            done.set()

        self.loop.call_soon_threadsafe(go)
        assert done.wait(5)

    def close(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    running = _Server()
    yield running
    running.close()


@pytest.fixture(scope="module")
def channel(server: _Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


_NODES = st.one_of(
    st.just(NODE),
    st.builds(
        lambda node_id, region, role: base_pb2.Node(
            id=node_id,
            locality=base_pb2.Locality(region=region),
            metadata=struct_pb2.Struct(fields={"role": struct_pb2.Value(string_value=role)}),
        ),
        st.text(max_size=20),
        st.text(max_size=20),
        st.sampled_from(["gateway", "sidecar", "", "router", "\x00"]),
    ),
)


@pytest.fixture(scope="module")
def good_stream(server: _Server, channel: grpc.Channel) -> Iterator[queue.Queue[Any]]:
    """A well-behaved node subscribed to clusters all along the fuzzing."""
    requests: queue.Queue[Any] = queue.Queue()
    received: queue.Queue[Any] = queue.Queue()
    requests.put(discovery_pb2.DiscoveryRequest(node=NODE, type_url=TypeUrl.CLUSTER.value))

    def outgoing() -> Iterator[Any]:
        while (item := requests.get()) is not None:
            yield item

    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        outgoing()
    )

    def reader() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for response in call:
                received.put(response)
                requests.put(
                    discovery_pb2.DiscoveryRequest(
                        type_url=response.type_url,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    first = received.get(timeout=10)
    assert first.type_url == TypeUrl.CLUSTER.value
    yield received
    requests.put(None)
    call.cancel()
    thread.join(5)


@given(node=_NODES, ops=_OPS, delta=st.booleans())
@cases(300)
def test_a_bad_stream_ends_alone_and_clearly(
    channel: grpc.Channel, good_stream: queue.Queue[Any], node: Any, ops: Any, delta: bool
) -> None:
    requests: list[Any] = []
    for op, arg in ops:
        if op != "request":
            continue
        names = (arg["names"] or [])[:5_000]
        if delta:
            request: Any = discovery_pb2.DeltaDiscoveryRequest(
                type_url=arg["type_url"],
                response_nonce=arg["nonce"],
                resource_names_subscribe=names,
            )
        else:
            request = discovery_pb2.DiscoveryRequest(
                type_url=arg["type_url"],
                response_nonce=arg["nonce"],
                version_info=arg["version"],
                resource_names=names,
            )
        if arg["error"] is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=arg["error"]))
        requests.append(request)
    if requests:
        requests[0].node.CopyFrom(node)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    method = stub.DeltaAggregatedResources if delta else stub.StreamAggregatedResources
    try:
        for response in method(iter(requests), timeout=5):
            assert response.type_url in KNOWN
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, "the stream hung"
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
            code,
            error.details(),  # type: ignore[attr-defined]
        )
        assert error.details()  # type: ignore[attr-defined]


def test_the_good_stream_still_gets_pushes_after_the_fuzzing(
    server: _Server, good_stream: queue.Queue[Any]
) -> None:
    while not good_stream.empty():
        good_stream.get_nowait()
    server.publish("qwen")
    pushed = good_stream.get(timeout=10)
    assert pushed.type_url == TypeUrl.CLUSTER.value
