"""gRPC health follows readiness; convergence is measured from push to the last ACK; the
admin state narrows by query. No sockets: the servicers and the tracker are called directly."""

from __future__ import annotations

from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from heliostat.admin.query import QueryError, narrow
from heliostat.xds.grpc.convergence import ConvergenceTracker
from heliostat.xds.grpc.health import HealthServer
from heliostat.xds.grpc.registry import StreamEntry, StreamRegistry
from heliostat.xds.protocol.events import TypeStatus
from heliostat.xds.resources.nodes import NodeGroup, Role


def test_health_is_serving_only_while_ready() -> None:
    ready = {"ok": False}
    server = HealthServer(lambda: (ready["ok"], "starting"), ["a.B"])
    assert server.status("") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.status("a.B") == health_pb2.HealthCheckResponse.NOT_SERVING
    ready["ok"] = True
    assert server.status("") == health_pb2.HealthCheckResponse.SERVING
    assert server.status("a.B") == health_pb2.HealthCheckResponse.SERVING
    assert server.status("c.D") is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stream(registry: StreamRegistry, node_id: str, group: NodeGroup) -> dict[str, TypeStatus]:
    types = {"CDS": TypeStatus(sent_version="a", acked_version="a", responses=1)}
    registry.add(StreamEntry(node_id, group, "sotw", "peer", 0.0, lambda: types))
    return types


def count(registry: CollectorRegistry) -> float:
    return float(registry.get_sample_value("heliostat_convergence_seconds_count") or 0.0)


def test_convergence_waits_for_every_stream_of_the_group_to_ack_a_new_response() -> None:
    streams, metrics, clock = StreamRegistry(), CollectorRegistry(), Clock()
    group = NodeGroup(Role.GATEWAY, "eu-west")
    first, second = stream(streams, "gw-1", group), stream(streams, "gw-2", group)
    tracker = ConvergenceTracker(streams, metrics, clock)
    tracker.pushed([group])
    tracker.acked(group)  # both in sync, but on the old version: nothing sent yet
    assert count(metrics) == 0
    clock.now += 0.2
    first["CDS"] = TypeStatus(sent_version="b", acked_version="b", responses=2)
    tracker.acked(group)
    assert count(metrics) == 0  # gw-2 has not got it
    second["CDS"] = TypeStatus(sent_version="b", acked_version="a", responses=2)
    tracker.acked(group)
    assert count(metrics) == 0  # sent, not ACKed
    clock.now += 0.1
    second["CDS"] = TypeStatus(sent_version="b", acked_version="b", responses=2)
    tracker.acked(group)
    assert count(metrics) == 1
    assert metrics.get_sample_value("heliostat_convergence_seconds_sum") == pytest.approx(0.3)


def test_a_newer_push_keeps_the_first_start() -> None:
    streams, metrics, clock = StreamRegistry(), CollectorRegistry(), Clock()
    group = NodeGroup(Role.GATEWAY, "us-east")
    types = stream(streams, "gw", group)
    tracker = ConvergenceTracker(streams, metrics, clock)
    tracker.pushed([group])
    clock.now += 0.5
    tracker.pushed([group])
    clock.now += 0.25
    types["CDS"] = TypeStatus(sent_version="c", acked_version="c", responses=2)
    tracker.acked(group)
    assert metrics.get_sample_value("heliostat_convergence_seconds_sum") == pytest.approx(0.75)


STATE: dict[str, Any] = {
    "nodes": [{"node_id": "gw-1"}, {"node_id": "gw-2"}],
    "policy": {"name": "p"},
    "views": {
        "regions": {"eu": {"a": {"model": "a"}, "a.batch": {"model": "a"}, "b": {"model": "b"}}},
        "neutral": {"a": {"model": "a"}, "b": {"model": "b"}},
    },
    "signals": {"models": {"a": [1], "b": [2]}},
    "control": {"ticks": 3, "decisions": {"models": {"a": {"x": 1}, "b": {"y": 2}}}},
}


def test_debug_state_narrows_by_keys_node_and_model() -> None:
    assert narrow(STATE, {"only": "nodes", "node": "gw-2"}) == {"nodes": [{"node_id": "gw-2"}]}
    by_model = narrow(STATE, {"model": "a"})
    assert set(by_model["views"]["regions"]["eu"]) == {"a", "a.batch"}
    assert by_model["signals"]["models"] == {"a": [1]}
    assert by_model["control"]["decisions"]["models"] == {"a": {"x": 1}}
    assert by_model["control"]["ticks"] == 3
    with pytest.raises(QueryError, match="unknown keys \\['nodez'\\]"):
        narrow(STATE, {"only": "nodez"})
