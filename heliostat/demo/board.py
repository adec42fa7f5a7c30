"""What the live view shows at one moment, computed from the record (pure, no rich).

Everything "recent" is over the last RECENT seconds: long enough to smooth a few requests a
second into a share, short enough that a phase change shows within a few refreshes.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from heliostat.demo.judge import Verdict
from heliostat.demo.observe import (
    Reason,
    RequestRecord,
    Sample,
    push_rate,
    received_per_replica,
    served,
    shares,
    window,
)
from heliostat.demo.story import REGIONS, Phase, Story

RECENT = 5.0


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    address: str
    up: bool
    waiting: float | None
    running: float | None
    kv: float | None
    weight: int | None  # in its own region's gateway
    health: str | None
    rps: float  # requests it received per second, recently
    reason: Reason | None = None  # why heliostat gave it that weight


@dataclass(frozen=True, slots=True)
class RegionPanel:
    region: str
    replicas: tuple[ReplicaRow, ...]
    offered_rps: float  # requests sent to this region's gateway per second, recently
    served_in: Mapping[str, float]  # share of this gateway's recent requests per serving region
    ok: int
    failed: int
    ttft_p50: float | None  # seconds, recent successful requests
    sends: Mapping[str, float]  # heliostat's published overflow shares from this region


@dataclass(frozen=True, slots=True)
class Board:
    t: float
    story: Story
    phase: Phase | None
    remaining: float  # seconds left in the phase
    panels: tuple[RegionPanel, ...]
    requests: int
    failed: int
    pushes: float | None
    push_rate: float | None
    verdicts: tuple[Verdict, ...]


def build(
    story: Story,
    t: float,
    samples: Sequence[Sample],
    requests: Sequence[RequestRecord],
    replicas: Mapping[str, Sequence[str]],
    arrivals: Sequence[tuple[float, str, str]] = (),
    verdicts: Sequence[Verdict] = (),
) -> Board:
    phase = story.phase_at(t)
    recent = window(samples, t - RECENT, t) if samples else None
    latest = samples[-1] if samples else None
    matrix = served(*recent) if recent else {}
    received = received_per_replica(*recent) if recent else {}
    span = (recent[1].t - recent[0].t) if recent else 0.0
    lately = [r for r in requests if t - RECENT <= r.ended <= t]
    begin = bisect.bisect_left(arrivals, (t - RECENT,))
    end = bisect.bisect_right(arrivals, (t, "\uffff"))
    sent = Counter(origin for _, origin, _ in arrivals[begin:end])
    panels = []
    for region in REGIONS:
        rows = []
        for address in replicas.get(region, ()):
            reading = latest.replicas.get(address) if latest else None
            signal = latest.signals.get(address) if latest else None
            host = latest.gateways.get(region, {}).get(address) if latest else None
            up = bool(reading and reading.up)
            rows.append(
                ReplicaRow(
                    address=address,
                    up=up,
                    waiting=signal.waiting if signal and up else None,
                    running=signal.running if signal and up else None,
                    kv=signal.kv if signal and up else None,
                    weight=host.weight if host else None,
                    health=host.health if host else None,
                    rps=received.get(address, 0) / span if span else 0.0,
                    reason=latest.reasons.get(address) if latest else None,
                )
            )
        mine = [r for r in lately if r.origin == region]
        ttfts = [r.ttft for r in mine if r.ok and r.ttft is not None]
        panels.append(
            RegionPanel(
                region=region,
                replicas=tuple(rows),
                offered_rps=sent.get(region, 0) / min(RECENT, t) if t > 0 else 0.0,
                served_in=shares(matrix.get(region, Counter())),
                ok=sum(r.ok for r in mine),
                failed=sum(not r.ok for r in mine),
                ttft_p50=statistics.median(ttfts) if ttfts else None,
                sends=dict(latest.sends.get(region, {})) if latest else {},
            )
        )
    return Board(
        t=t,
        story=story,
        phase=phase,
        remaining=max(0.0, phase.end - t) if phase else 0.0,
        panels=tuple(panels),
        requests=len(requests),
        failed=sum(not r.ok for r in requests),
        pushes=latest.pushes if latest else None,
        push_rate=push_rate(*recent) if recent else None,
        verdicts=tuple(verdicts),
    )
