"""heliostat's own metrics about its signal sources.

Several sources (the direct scraper and one Prometheus source per server) may share one
registry, and prometheus_client refuses to register a name twice, so the metric objects exist
once per registry (`SignalMetrics.for_registry`) and every source reports into them.

Signal age changes with the clock, not with scrapes, so it is computed when the registry is
collected, from each source's latest published snapshot (replaced whole after each round, so
a collection from another thread never sees a dict being changed).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from heliostat.signals.record import Signal

SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Published(Protocol):
    def signals(self) -> Mapping[tuple[str, str], Signal]: ...

    @property
    def clock(self) -> Callable[[], float]: ...


class _SignalCollector(Collector):
    def __init__(self) -> None:
        self._sources: weakref.WeakSet[_Published] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, source: _Published) -> None:
        with self._lock:
            self._sources.add(source)

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "heliostat_signal_age_seconds",
            "Seconds since the last successful scrape of an endpoint (absent if never).",
            labels=["model", "endpoint"],
        )
        failures = GaugeMetricFamily(
            "heliostat_signal_consecutive_failures",
            "Scrapes of an endpoint that failed in a row since its last success.",
            labels=["model", "endpoint"],
        )
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            now = source.clock()
            for (model, address), signal in source.signals().items():
                signal_age = signal.age(now)
                if signal_age is not None:
                    age.add_metric([model, address], signal_age)
                failures.add_metric([model, address], signal.consecutive_failures)
        yield age
        yield failures

    def describe(self) -> Iterator[Metric]:
        return iter(())


class SignalMetrics:
    """The metric objects of one registry, shared by every source registered on it."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, SignalMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.errors = Counter(
            "heliostat_scrape_errors",
            "Failed signal scrapes, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "heliostat_scrape_duration_seconds",
            "Time to fetch and read one endpoint's signals (or one Prometheus query).",
            ["source"],
            buckets=SCRAPE_BUCKETS,
            registry=registry,
        )
        self._collector = _SignalCollector()
        registry.register(self._collector)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> SignalMetrics:
        with cls._lock:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls(registry)
                cls._by_registry[registry] = metrics
            return metrics

    def track(self, source: _Published) -> None:
        """Report `source`'s signal ages at collection time (held weakly)."""
        self._collector.add(source)
