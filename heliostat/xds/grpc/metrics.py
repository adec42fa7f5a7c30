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

        # Two events per stream and push: the labelled counters are looked up once each.
        self._event_counters: dict[tuple[str, str, str], Counter] = {}

    def record(self, mode: str, event: Event) -> None:
        type_name = event.type_url.short if isinstance(event.type_url, TypeUrl) else "unknown"
        key = (mode, type_name, event.kind.value)
        counter = self._event_counters.get(key)
        if counter is None:
            counter = self._event_counters[key] = self.events.labels(*key)
        counter.inc()
