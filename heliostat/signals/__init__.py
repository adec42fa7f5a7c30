"""Signals: what each model server reports (queue, running, KV use, prefix hits), as records.

Sources (`Scraper` reads servers directly, `PrometheusSource` reads a Prometheus server,
`CompositeSource` routes per model as the policy says) all implement `SignalSource` and
publish `Signal` records keyed by (model, address). Engine specifics live in `adapters`.

The names below load on first use (PEP 562): the scrape worker (`signals.worker`) imports
this package for its reads alone, and importing every source with it (the policy schema,
pydantic) cost its start ~0.4 s, which `serve` waits for before it serves.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_FROM: dict[str, str] = {
    "ADAPTERS": "heliostat.signals.adapters",
    "WANTED": "heliostat.signals.adapters",
    "adapt": "heliostat.signals.adapters",
    "read_exposition": "heliostat.signals.adapters",
    "CompositeSource": "heliostat.signals.composite",
    "debug_view": "heliostat.signals.debug",
    "SampleIndex": "heliostat.signals.exposition",
    "targets_from_policy": "heliostat.signals.from_policy",
    "SignalMetrics": "heliostat.signals.metrics",
    "PrometheusSource": "heliostat.signals.prometheus",
    "DEFAULT_MAX_BODY_BYTES": "heliostat.signals.record",
    "ENGINES": "heliostat.signals.record",
    "Failure": "heliostat.signals.record",
    "Reading": "heliostat.signals.record",
    "Reason": "heliostat.signals.record",
    "ScrapeTarget": "heliostat.signals.record",
    "Signal": "heliostat.signals.record",
    "Scraper": "heliostat.signals.scraper",
    "SignalSource": "heliostat.signals.source",
}


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


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
