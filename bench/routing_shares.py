"""What heliostat published during a run: its shares over time and how often weights reversed.

A thread samples `heliostat serve`'s /debug/state every SAMPLE_S while the load runs. From
each region's view of the model's cluster it reads

- the **shares**: how that region's gateways split its traffic between regions, i.e. the
  locality weights of the first priority level that has endpoints, normalised to 1 (what
  Envoy's locality-weighted LB does with them while that level is healthy). An edge region's
  view has no locality of its own, so its shares are all elsewhere;
- the **weights**: every endpoint's EDS weight in that view.

A **reversal** is a change of direction: a value that was rising falls, or one that was falling
rises (samples that do not change it are skipped). Counted per endpoint (its largest count over
the views) and per share (view -> region), over the seconds in which load was offered: the
stability target bounds them per minute under constant load. A reversal faster than a sample
can be missed, so the counts are a lower bound at SAMPLE_S resolution. The sampling runs only
during heliostat's run: its cost (one admin request to serve, one JSON parse in the client's
process, every SAMPLE_S) is charged to heliostat, never to a baseline.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from heliostat.lab.processes import Heliostat

SAMPLE_S = 0.25


@dataclass(frozen=True)
class Sample:
    t: float
    shares: Mapping[str, Mapping[str, float]]
    """view region -> serving region -> share of the view's traffic."""
    weights: Mapping[str, Mapping[str, int]]
    """view region -> endpoint address -> EDS weight."""


def read_view(cluster: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """Shares and weights of one region's view of a cluster (as /debug/state shows it)."""
    endpoints = [e for e in cluster.get("endpoints", []) if isinstance(e, Mapping)]
    weights = {str(e["address"]): int(e.get("weight") or 0) for e in endpoints}
    if not endpoints:
        return {}, weights
    first = min(int(e.get("priority") or 0) for e in endpoints)
    localities: dict[str, float] = {}
    for e in endpoints:
        if int(e.get("priority") or 0) != first:
            continue
        region = str(e.get("region"))
        given = e.get("locality_weight")
        if given is None:  # no locality weights: hosts' weights split the traffic
            localities[region] = localities.get(region, 0.0) + float(e.get("weight") or 0)
        else:
            localities[region] = float(given)
    total = sum(localities.values())
    if total <= 0:
        return {}, weights
    return {r: round(w / total, 4) for r, w in sorted(localities.items())}, weights


def read_state(state: Mapping[str, Any], model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    shares: dict[str, dict[str, float]] = {}
    weights: dict[str, dict[str, int]] = {}
    for region, clusters in state.get("views", {}).get("regions", {}).items():
        cluster = clusters.get(model) if isinstance(clusters, Mapping) else None
        if isinstance(cluster, Mapping):
            shares[region], weights[region] = read_view(cluster)
    return shares, weights


@dataclass
class Sampler:
    """Samples heliostat's state in a thread from `start` to `stop` (t = seconds since start)."""

    heliostat: Heliostat
    model: str
    interval_s: float = SAMPLE_S
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        began = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(began,), daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.samples

    def _run(self, began: float) -> None:
        while not self._stop.is_set():
            try:
                shares, weights = read_state(self.heliostat.state(), self.model)
                self.samples.append(Sample(round(time.monotonic() - began, 3), shares, weights))
            except Exception:  # a slow or failed answer costs one sample, not the run
                self.errors += 1
            self._stop.wait(self.interval_s)


def reversals(values: Sequence[float]) -> int:
    """How many times the direction of change flips along `values`."""
    count = 0
    direction = 0
    for before, after in itertools.pairwise(values):
        if after == before:
            continue
        now = 1 if after > before else -1
        if direction and now != direction:
            count += 1
        direction = now
    return count


def summarise(samples: Sequence[Sample], until_s: float) -> dict[str, Any]:
    """The time series of shares (every sample) and reversal counts over [0, until_s]."""
    window = [s for s in samples if s.t <= until_s]
    views = sorted({v for s in window for v in s.shares} | {v for s in window for v in s.weights})
    per_endpoint: dict[str, int] = {}
    per_share: dict[str, int] = {}
    changes: dict[str, int] = {}  # any change of an endpoint's weight (a ring-hash ring moves)
    for view in views:
        addresses = sorted({a for s in window for a in s.weights.get(view, {})})
        for address in addresses:
            series = [
                s.weights[view][address] for s in window if address in s.weights.get(view, {})
            ]
            per_endpoint[address] = max(per_endpoint.get(address, 0), reversals(series))
            moved = sum(1 for a, b in itertools.pairwise(series) if a != b)
            changes[address] = max(changes.get(address, 0), moved)
        targets = sorted({r for s in window for r in s.shares.get(view, {})})
        for region in targets:
            series_f = [s.shares.get(view, {}).get(region, 0.0) for s in window]
            per_share[f"{view}->{region}"] = reversals(series_f)
    minutes = until_s / 60 if until_s > 0 else 0.0
    worst = max([0, *per_endpoint.values(), *per_share.values()])
    return {
        "sample_s": SAMPLE_S,
        "samples": len(samples),
        "window_s": round(until_s, 3),
        "weight_reversals": per_endpoint,
        "share_reversals": per_share,
        "weight_changes": changes,
        "max_reversals": worst,
        "max_reversals_per_min": round(worst / minutes, 2) if minutes else 0.0,
        "shares": [{"t": s.t, "shares": s.shares} for s in samples],
    }
