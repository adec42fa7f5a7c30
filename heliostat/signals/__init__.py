"""Signals: what each model server reports (queue, running, KV use, prefix hits), as records.

Sources (`Scraper` reads servers directly, `PrometheusSource` reads a Prometheus server,
`CompositeSource` routes per model as the policy says) all implement `SignalSource` and
publish `Signal` records keyed by (model, address). Engine specifics live in `adapters`.
"""

from heliostat.signals.adapters import ADAPTERS, WANTED, adapt, read_exposition
from heliostat.signals.composite import CompositeSource
from heliostat.signals.debug import debug_view
from heliostat.signals.exposition import SampleIndex
from heliostat.signals.from_policy import targets_from_policy
from heliostat.signals.metrics import SignalMetrics
from heliostat.signals.prometheus import PrometheusSource
from heliostat.signals.record import (
    DEFAULT_MAX_BODY_BYTES,
    ENGINES,
    Failure,
    Reading,
    Reason,
    ScrapeTarget,
    Signal,
)
from heliostat.signals.scraper import Scraper
from heliostat.signals.source import SignalSource

__all__ = [
    "ADAPTERS",
    "DEFAULT_MAX_BODY_BYTES",
    "ENGINES",
    "WANTED",
    "CompositeSource",
    "Failure",
    "PrometheusSource",
    "Reading",
    "Reason",
    "SampleIndex",
    "ScrapeTarget",
    "Scraper",
    "Signal",
    "SignalMetrics",
    "SignalSource",
    "adapt",
    "debug_view",
    "read_exposition",
    "targets_from_policy",
]
