"""What the demo measures, as plain data, and the arithmetic the judges and the view share.

Three sources, each asked only what it alone knows:

- the replicas (`/sim/stats`): how many requests of each origin region each one received.
  This is where a request *went*, counted by whoever served it;
- Envoy (`/clusters` on each region's own gateway): the weight, priority and health every
  host really has in the data plane;
- heliostat (`/debug/state`, `/metrics`): the signals it scraped, the overflow shares it
  decided, how many node groups it pushed a new snapshot to.

Replica counters restart from zero when a fleet process restarts, so every replica reading
carries its fleet's *generation*; a delta across two generations is the newer reading alone.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReplicaReading:
    region: str
    up: bool
    generation: int  # how many times its fleet process was (re)started before this reading
    by_origin: Mapping[str, int] = field(default_factory=dict)  # cumulative, per origin region

    @property
    def received(self) -> int:
        return sum(self.by_origin.values())


@dataclass(frozen=True, slots=True)
class Signal:
    """heliostat's latest scrape of one replica."""

    waiting: float | None
    running: float | None
    kv: float | None
    stale: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """Why heliostat gave an endpoint its weight (its view's `reason`)."""

    state: str  # healthy, saturated, unhealthy, stale, draining, static
    saturation: float | None = None  # the smoothed level the weight came from
    driver: str | None = None  # queue, kv or running: what dominated the last scrape


@dataclass(frozen=True, slots=True)
class Host:
    """One upstream host as a gateway's Envoy has it."""

    region: str
    weight: int
    priority: int
    health: str  # Envoy's health_flags: "healthy", "/failed_outlier_check", ...

    @property
    def healthy(self) -> bool:
        return self.health == "healthy"


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the story began
    replicas: Mapping[str, ReplicaReading]  # address -> reading
    signals: Mapping[str, Signal] = field(default_factory=dict)
    gateways: Mapping[str, Mapping[str, Host]] = field(default_factory=dict)  # gateway region
    sends: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # region -> shares
    pushes: float | None = None  # heliostat_control_pushes_total
    reasons: Mapping[str, Reason] = field(default_factory=dict)  # address -> heliostat's why


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as its client saw it; times in seconds since the story began."""

    origin: str  # the gateway (region) it was sent to
    at: float  # when it was scheduled
    started: float
    ended: float
    ok: bool
    served_in: str | None  # the replica's region (x-replica-region), None when it failed
    status: int = 200
    error: str | None = None
    ttft: float | None = None  # seconds to the first streamed token

    def in_flight_at(self, before: float, after: float) -> bool:
        """Was it running at some moment between `before` and `after`?"""
        return self.started < after and self.ended > before


def window(samples: Sequence[Sample], t0: float, t1: float) -> tuple[Sample, Sample] | None:
    """The first sample at or after t0 and the last at or before t1, if they differ."""
    inside = [s for s in samples if t0 <= s.t <= t1]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]


def served(first: Sample, last: Sample) -> dict[str, Counter[str]]:
    """origin region -> serving region -> requests received between two samples.

    A replica down in `last` is left out (what it received before dying is unknown); one
    whose fleet restarted in between counts from zero.
    """
    result: dict[str, Counter[str]] = {}
    for address, end in last.replicas.items():
        if not end.up:
            continue
        begin = first.replicas.get(address)
        fresh = begin is None or not begin.up or begin.generation != end.generation
        for origin, count in end.by_origin.items():
            before = 0 if fresh or begin is None else begin.by_origin.get(origin, 0)
            delta = count - before if count >= before else count
            if delta:
                result.setdefault(origin, Counter())[end.region] += delta
    return result


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def received_per_replica(first: Sample, last: Sample) -> dict[str, int]:
    """address -> requests it received between two samples (same rules as `served`)."""
    result: dict[str, int] = {}
    for address, end in last.replicas.items():
        if not end.up:
            continue
        begin = first.replicas.get(address)
        fresh = begin is None or not begin.up or begin.generation != end.generation
        before = 0 if fresh or begin is None else begin.received
        result[address] = end.received - before if end.received >= before else end.received
    return result


def push_rate(first: Sample, last: Sample) -> float | None:
    """heliostat's snapshot pushes per second between two samples."""
    if first.pushes is None or last.pushes is None or last.t <= first.t:
        return None
    return max(0.0, last.pushes - first.pushes) / (last.t - first.t)


def weight_series(samples: Iterable[Sample], gateway: str) -> dict[str, list[int]]:
    """address -> the weights one gateway's Envoy had, sample after sample (changes only)."""
    series: dict[str, list[int]] = {}
    for sample in samples:
        for address, host in sample.gateways.get(gateway, {}).items():
            values = series.setdefault(address, [])
            if not values or values[-1] != host.weight:
                values.append(host.weight)
    return series


def reversals(values: Sequence[float]) -> int:
    """How often a series turned round (up then down, or down then up): flapping's count."""
    turns = 0
    direction = 0
    for a, b in itertools.pairwise(values):
        step = (b > a) - (b < a)
        if step and direction and step != direction:
            turns += 1
        if step:
            direction = step
    return turns


def weight_changes(samples: Iterable[Sample], gateways: Iterable[str]) -> tuple[int, int]:
    """(weight changes summed over every host of the gateways, most reversals of one host)."""
    listed = list(samples)
    changes = turns = 0
    for gateway in gateways:
        for values in weight_series(listed, gateway).values():
            changes += max(0, len(values) - 1)
            turns = max(turns, reversals(values))
    return changes, turns


def share_changes(samples: Iterable[Sample]) -> tuple[int, int]:
    """(changes, most reversals) of heliostat's published overflow shares, sender -> rescuer.

    Shares are locality weights in Envoy: a share that goes up and down again and again is
    flapping just as much as an endpoint weight that does (an absent share counts as 0).
    """
    listed = list(samples)
    pairs = {(r, q) for s in listed for r, sends in s.sends.items() for q in sends}
    changes = turns = 0
    for sender, rescuer in sorted(pairs):
        values: list[float] = []
        for sample in listed:
            value = sample.sends.get(sender, {}).get(rescuer, 0.0)
            if not values or values[-1] != value:
                values.append(value)
        changes += max(0, len(values) - 1)
        turns = max(turns, reversals(values))
    return changes, turns
