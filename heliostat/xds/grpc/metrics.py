"""Prometheus metrics of the xDS server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from heliostat.xds.protocol.events import Event
from heliostat.xds.resources.types import TypeUrl


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.streams = Gauge(
            "heliostat_xds_streams", "Open ADS streams.", ["mode"], registry=registry
        )
        self.events = Counter(
            "heliostat_xds_events_total",
            "Protocol events per type: sent responses, ACKs, NACKs, stale requests, held pushes.",
            ["mode", "type", "event"],
            registry=registry,
        )

        self.refused = Counter(
            "heliostat_xds_refused_total",
            "Streams refused or ended by heliostat: identity (certificate does not name the "
            "node), streams (too many open), rate (too many requests per second).",
            ["reason"],
            registry=registry,
        )
        for reason in ("identity", "streams", "rate"):
            self.refused.labels(reason)

        # Two events per stream and push: the labelled counters are looked up once each,
        # by the event's own type and kind (no enum property read per event).
        self._event_counters: dict[tuple[str, object, str], Counter] = {}

    def record(self, mode: str, event: Event) -> None:
        key = (mode, event.type_url, event.kind)
        counter = self._event_counters.get(key)
        if counter is None:
            type_url = event.type_url
            type_name = type_url.short if isinstance(type_url, TypeUrl) else "unknown"
            counter = self.events.labels(mode, type_name, event.kind.value)
            self._event_counters[key] = counter
        counter.inc()
