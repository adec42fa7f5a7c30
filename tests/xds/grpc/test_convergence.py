"""Convergence tracking at fleet size: every ACK asks whether its group converged, so the
answer must not walk every stream each time; streams that leave are not waited for."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from heliostat.xds.grpc.convergence import ConvergenceTracker
from heliostat.xds.grpc.registry import StreamEntry, StreamRegistry
from heliostat.xds.protocol.events import TypeStatus
from heliostat.xds.resources.nodes import NodeGroup, Role

GROUP = NodeGroup(Role.GATEWAY, "eu-west")


class Node:
    """One stream's status, counting how often the tracker reads it."""

    def __init__(self, registry: StreamRegistry, node_id: str, group: NodeGroup = GROUP) -> None:
        self.types = {"EDS": TypeStatus(sent_version="a", acked_version="a", responses=1)}
        self.reads = 0
        self.remove = registry.add(StreamEntry(node_id, group, "delta", "peer", 0.0, self.status))

    def status(self) -> dict[str, TypeStatus]:
        self.reads += 1
        return self.types

    def ack_new_version(self) -> None:
        self.types["EDS"] = TypeStatus(sent_version="b", acked_version="b", responses=2)


def converged(metrics: CollectorRegistry) -> float:
    return float(metrics.get_sample_value("heliostat_convergence_seconds_count") or 0.0)


def test_a_push_to_many_streams_reads_each_streams_status_a_bounded_number_of_times() -> None:
    streams, metrics = StreamRegistry(), CollectorRegistry()
    nodes = [Node(streams, f"gw-{i}") for i in range(500)]
    others = [Node(streams, f"us-{i}", NodeGroup(Role.GATEWAY, "us-east")) for i in range(100)]
    tracker = ConvergenceTracker(streams, metrics)
    tracker.pushed([GROUP])
    order = list(nodes)
    random.Random(7).shuffle(order)
    for count, node in enumerate(order, 1):
        node.ack_new_version()
        tracker.acked(GROUP)
        assert converged(metrics) == (1 if count == len(nodes) else 0)
    # A look at the baseline, then a few per ACK and per stream: not every stream on every
    # ACK (about 500 x 500 / 2 reads before).
    assert sum(n.reads for n in nodes) <= 8 * len(nodes)
    assert all(n.reads == 0 for n in others)


def test_a_stream_that_disconnects_is_not_waited_for() -> None:
    streams, metrics = StreamRegistry(), CollectorRegistry()
    first, gone, last = (Node(streams, f"gw-{i}") for i in range(3))
    tracker = ConvergenceTracker(streams, metrics)
    tracker.pushed([GROUP])
    first.ack_new_version()
    tracker.acked(GROUP)
    last.ack_new_version()
    tracker.acked(GROUP)
    assert converged(metrics) == 0  # `gone` has not got it yet
    gone.remove()
    tracker.acked(GROUP)
    assert converged(metrics) == 1


def test_a_push_reads_each_streams_response_count_without_building_its_status() -> None:
    """The baseline a push takes on every stream of its group, before any of them sends,
    comes from the stream's own count when it keeps one (the protocols do)."""
    streams, metrics = StreamRegistry(), CollectorRegistry()
    nodes = [Node(streams, f"gw-{i}") for i in range(50)]
    counts = {f"gw-{i}": 1 for i in range(len(nodes))}  # node id -> responses sent
    for entry in streams.entries():
        entry.responses = lambda node_id=entry.node_id: counts[node_id]  # type: ignore[misc]
    tracker = ConvergenceTracker(streams, metrics)
    tracker.pushed([GROUP])
    assert sum(n.reads for n in nodes) == 0
    # Converges as before once each stream got a response since and is in sync.
    for i, node in enumerate(nodes):
        node.ack_new_version()
        counts[f"gw-{i}"] = 2
        tracker.acked(GROUP)
        assert converged(metrics) == (1 if i == len(nodes) - 1 else 0)
