"""The xDS event counters count every event under its labels (cached per label set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.protocol.events import Event, EventKind
from heliostat.xds.resources.types import TypeUrl


def test_events_are_counted_per_mode_type_and_kind() -> None:
    registry = CollectorRegistry()
    metrics = XdsMetrics(registry)
    for _ in range(3):
        metrics.record("delta", Event(EventKind.ACK, TypeUrl.LB_ENDPOINT))
    metrics.record("sotw", Event(EventKind.NACK, TypeUrl.ENDPOINT))
    metrics.record("sotw", Event(EventKind.UNKNOWN_TYPE, "type.googleapis.com/x.Y"))

    def count(mode: str, type_name: str, event: str) -> float | None:
        labels = {"mode": mode, "type": type_name, "event": event}
        return registry.get_sample_value("heliostat_xds_events_total", labels)

    assert count("delta", "LEDS", "ack") == 3
    assert count("sotw", "EDS", "nack") == 1
    assert count("sotw", "unknown", "unknown_type") == 1
    assert count("delta", "EDS", "ack") is None
