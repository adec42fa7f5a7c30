"""scale.json: what one control tick costs as the fleet grows.

A tick is what `heliostat serve` does when a scrape round lands: `ControlLoop.tick`, i.e. the
control law (`compute`) over every endpoint's signal, then `Publisher.publish`, which starts a
memo round and rebuilds (translate + serialize + content-hash) the snapshot of every node
group a gateway has asked for, one per region here. The benchmark drives that very object
in-process with prepared signals, so the figure is the tick and nothing else: scraping, gRPC
and pushing to Envoys are measured by fanout.json.

Cases: endpoints x region views (a policy with 3 or 6 regions, one gateway group each).
Every tick all endpoints have a fresh signal; in a *full* tick every endpoint's published
weight and reason change (each alternates between a fresh, moderately loaded reading, weight
100, and a missed scrape that leaves it stale, neutral weight 50), in an *incremental* tick
only every tenth endpoint does, spread over every model, region and locality, so the memo
path reuses the other 90% of LbEndpoints but no locality as a whole. The figure is the
median process CPU time of the measured ticks (`ticks` per case, after two warm-up ticks;
CPU time, not wall time: the machine may be shared, and a tick never waits on I/O); the
wall-clock median is kept beside it, and so is the CPU mean (`*_mean_ms`): a tick that pays
a full garbage collection is rare, so the median leaves it out and the mean does not. Like
`serve`, the case settles the heap once its policy is in force (`heliostat.runtime.heap`),
so the garbage collector's share of a tick is what serve pays. `changed_share` is the
measured share of endpoints whose EDS entry changed per tick.

`serve` runs with LEDS by default (`--leds`): every snapshot then also carries the LEDS form
(each endpoint a resource per collection it is in, for delta gateways), which a tick builds
too. The `*_tick_ms` figures are the publisher without it (`serve --no-leds`, what this
benchmark always measured); `*_tick_leds_ms` are the same ticks as `serve` runs them by
default, with their own target rows.

Every sample counts its engine's completions as vLLM's does (`vllm:request_success_total`):
the signals layer hands the law the raw counter (`Signal.served_total`) and the rate between
the last two scrapes (`served_rate`, `signals.rates`), so the law's capacity estimator
(`balance.capacity`) learns from every scrape, as in production. A counter is its endpoint's
completions up to its scrape's time, so a missed scrape carries the older count.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from bench.common import Size, median, table
from bench.scale_policy import endpoint_count, fleet_policy
from heliostat.balance import Views, static_views
from heliostat.policy import Policy, semantics
from heliostat.runtime import heap
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.signals.record import Signal
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.types import TypeUrl

T0 = 1_700_000_000.0
INTERVAL_S = 2.0
STALE_S = 10.0  # older than the policy's stale_after (6 s)
SERVED_PER_S = 3.0  # each endpoint's completions per second (its success counter's slope)
WARMUP_TICKS = 2

# (endpoints, region views) per size, and how many ticks are measured per case.
CASES: dict[Size, list[tuple[int, int]]] = {
    "tiny": [(200, 3), (200, 6)],
    "quick": [(1_000, 3), (1_000, 6), (10_000, 3), (10_000, 6)],
    "full": [
        (1_000, 3),
        (1_000, 6),
        (10_000, 3),
        (10_000, 6),
        (50_000, 3),
        (50_000, 6),
    ],
}
TICKS: dict[Size, int] = {"tiny": 2, "quick": 3, "full": 7}
LARGE = 10_000  # beyond this a tick takes seconds: fewer of them are measured


def ticks_for(size: Size, endpoints: int) -> int:
    return TICKS[size] if endpoints <= LARGE else max(3, TICKS[size] // 2)


INCREMENTAL_EVERY = 10  # one endpoint in ten changes per incremental tick


@dataclass(frozen=True)
class TickCost:
    cpu_ms: float
    cpu_mean_ms: float  # with the rare ticks that pay a full garbage collection
    wall_ms: float
    changed_share: float
    groups_changed: float
    clusters_per_view: int
    eds_bytes_per_view: int


def run(size: Size, workdir: Path) -> dict[str, Any]:
    del workdir  # in-process: nothing to start
    cases = []
    with _logging_as_serve(), _heap_restored():
        for endpoints, views in CASES[size]:
            policy = _policy(endpoints, views)
            ticks = ticks_for(size, endpoints)
            full = measure(policy, ticks, every=1)
            incremental = measure(policy, ticks, every=INCREMENTAL_EVERY)
            full_leds = measure(policy, ticks, every=1, leds=True)
            incremental_leds = measure(policy, ticks, every=INCREMENTAL_EVERY, leds=True)
            cases.append(
                _case(endpoints, views, policy, full, incremental)
                | _leds_case(full_leds, incremental_leds)
                | {"ticks": ticks}
            )
    return {
        "size": size,
        "clock": "process CPU time per tick (median); *_wall_ms: wall clock (median)",
        "ticks_measured": "per case, `ticks`",
        "warmup_ticks": WARMUP_TICKS,
        "interval_s": INTERVAL_S,
        "incremental_share": 1 / INCREMENTAL_EVERY,
        "tick": "ControlLoop.tick: compute + Publisher.publish (memo round, translate, "
        "serialize, hash) for one gateway group per region; *_tick_ms without the LEDS form "
        "(serve --no-leds), *_tick_leds_ms with it (serve's default)",
        "config": "3 models (versions v1/v2 with a canary and prefix affinity; session "
        "affinity; plain), tenant pinned to eu-west, regions with capacity 3:2:1",
        "cases": cases,
        "targets": target_rows(cases),
    }


# Issue 17's targets for a tick's CPU: (endpoints, views, which tick, at most ms).
TARGETS = [
    (10_000, 3, "full", 100.0),
    (10_000, 3, "incremental", 20.0),
    (50_000, 6, "full", 500.0),
]


def target_rows(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target row whose case this run measured, with the figure and whether it is met:
    without LEDS, then with it (serve's default) where the case has that figure."""
    rows = []
    for suffix, label in (("", ""), ("_leds", ", LEDS (serve's default)")):
        for endpoints, views, kind, limit in TARGETS:
            for case in cases:
                measured = case.get(f"{kind}_tick{suffix}_ms")
                if (case["endpoints"], case["views"]) != (endpoints, views) or measured is None:
                    continue
                rows.append(
                    {
                        "measure": f"tick, {endpoints:,} endpoints x {views} views, {kind}{label}",
                        "target": f"<= {limit:g} ms",
                        "measured": f"{measured:.1f} ms",
                        "met": measured <= limit,
                    }
                )
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["target row", "target", "measured", "met"],
        [[r["measure"], r["target"], r["measured"], "yes" if r["met"] else "NO"] for r in rows],
    )


def _case(
    endpoints: int, views: int, policy: Policy, full: TickCost, incremental: TickCost
) -> dict[str, Any]:
    return {
        "endpoints": endpoints,
        "views": views,
        "full_tick_ms": round(full.cpu_ms, 3),
        "incremental_tick_ms": round(incremental.cpu_ms, 3),
        "full_tick_mean_ms": round(full.cpu_mean_ms, 3),
        "incremental_tick_mean_ms": round(incremental.cpu_mean_ms, 3),
        "full_tick_wall_ms": round(full.wall_ms, 3),
        "incremental_tick_wall_ms": round(incremental.wall_ms, 3),
        "full_changed_share": round(full.changed_share, 4),
        "incremental_changed_share": round(incremental.changed_share, 4),
        "groups_changed_per_tick": round(full.groups_changed, 2),
        "models": len(policy.spec.models),
        "clusters_per_view": full.clusters_per_view,
        "eds_bytes_per_view": full.eds_bytes_per_view,
    }


def _leds_case(full: TickCost, incremental: TickCost) -> dict[str, Any]:
    return {
        "full_tick_leds_ms": round(full.cpu_ms, 3),
        "incremental_tick_leds_ms": round(incremental.cpu_ms, 3),
        "full_tick_leds_mean_ms": round(full.cpu_mean_ms, 3),
        "incremental_tick_leds_mean_ms": round(incremental.cpu_mean_ms, 3),
    }


def summary(result: dict[str, Any]) -> str:
    rows = [
        [
            c["endpoints"],
            c["views"],
            c["full_tick_ms"],
            c["incremental_tick_ms"],
            c.get("full_tick_leds_ms", "-"),
            c.get("incremental_tick_leds_ms", "-"),
            f"{c['full_changed_share']:.0%} / {c['incremental_changed_share']:.0%}",
        ]
        for c in result["cases"]
    ]
    measured = table(
        [
            "endpoints",
            "views",
            "full tick ms",
            "incremental tick ms",
            "full, LEDS",
            "incremental, LEDS",
            "EDS entries changed",
        ],
        rows,
    )
    goals = result.get("targets") or []
    return measured + ("\n\n" + targets_table(goals) if goals else "")


# -- measuring -----------------------------------------------------------------------------


def _policy(endpoints: int, views: int) -> Policy:
    """The fleet policy, validated as the loader would (minus YAML: 50,000 endpoints of
    YAML take longer to dump than every tick measured here)."""
    document = fleet_policy(endpoints, views)
    assert endpoint_count(document) == endpoints
    policy = Policy.model_validate(document)
    problems = semantics.check(policy)
    if problems:
        raise ValueError("; ".join(p.message for p in problems[:5]))
    return policy


class _Fleet:
    """Signals for every endpoint, rebuilt before each tick (outside the timed part)."""

    def __init__(self, policy: Policy, every: int, counted: bool = True) -> None:
        self.counted = counted  # False: engines without success counters (no service rates)
        self.keys = [(m.name, e.address) for m in policy.spec.models for e in m.endpoints]
        self.every = every
        self.now = T0
        self.current: dict[tuple[str, str], Signal] = {}

    def advance(self, tick: int) -> None:
        self.now = T0 + tick * INTERVAL_S
        missed = tick % 2 == 1
        signals = {}
        for index, (model, address) in enumerate(self.keys):
            moving = index % self.every == 0
            scraped = self.now - STALE_S if moving and missed else self.now
            # The success counter as scraped at that time, and its rate (`signals.rates`).
            served = SERVED_PER_S * (scraped - T0 + (index % 97))
            signals[model, address] = Signal(
                model=model,
                address=address,
                engine="vllm",
                waiting=1.0,
                running=6.0,
                kv_usage=0.3,
                max_num_seqs=16,
                scraped_at=scraped,
                served_total=served if self.counted else None,
                served_rate=SERVED_PER_S if self.counted else None,
            )
        self.current = signals

    def signals(self) -> dict[tuple[str, str], Signal]:
        return self.current

    def clock(self) -> float:
        return self.now


def measure(
    policy: Policy, ticks: int, every: int, counted: bool = True, leds: bool = False
) -> TickCost:
    """Tick a ControlLoop wired as `serve` wires it; median cost of the measured ticks
    (`counted`: the samples carry success counters, as vLLM's do; `leds`: snapshots carry
    the LEDS form too, as `serve` builds them by default)."""
    fleet = _Fleet(policy, every, counted)
    cache = SnapshotCache()
    publisher = Publisher(cache, Inputs(policy, static_views(policy)), leds=leds)
    groups = [NodeGroup(Role.GATEWAY, region) for region in sorted(policy.spec.regions)]
    for group in groups:  # one gateway per region has connected
        publisher.snapshot_for(group, f"gw-{group.region}")
    loop = ControlLoop(publisher, fleet.signals, CollectorRegistry(), clock=fleet.clock)
    heap.settle()  # as serve does once its policy is in force (heliostat.runtime.heap)
    cpu: list[float] = []
    wall: list[float] = []
    changed: list[float] = []
    pushed: list[float] = []
    before = _endpoint_views(loop.views, policy)
    for tick in range(WARMUP_TICKS + ticks):
        fleet.advance(tick)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        changed_groups = loop.tick()
        cpu1, wall1 = time.process_time(), time.perf_counter()
        after = _endpoint_views(loop.views, policy)
        if tick >= WARMUP_TICKS:
            cpu.append((cpu1 - cpu0) * 1000)
            wall.append((wall1 - wall0) * 1000)
            moved = sum(1 for key, view in after.items() if before.get(key) is not view)
            changed.append(moved / len(after))
            pushed.append(len(changed_groups))
        before = after
    snapshots = [s for s in (cache.get(g) for g in groups) if s is not None]
    return TickCost(
        cpu_ms=median(cpu),
        cpu_mean_ms=statistics.fmean(cpu),
        wall_ms=median(wall),
        changed_share=statistics.fmean(changed),
        groups_changed=statistics.fmean(pushed),
        clusters_per_view=len(snapshots[0].resources(TypeUrl.CLUSTER)),
        eds_bytes_per_view=round(
            statistics.fmean(
                sum(len(r.packed.value) for r in s.resources(TypeUrl.ENDPOINT).values())
                for s in snapshots
            )
        ),
    )


def _endpoint_views(views: Views, policy: Policy) -> dict[tuple[str, str], object]:
    """Every endpoint's published view object (the law reuses the object when it held)."""
    found: dict[tuple[str, str], object] = {}
    for model in policy.spec.models:
        cluster = views.neutral.cluster(model.name)
        if cluster is not None:
            for endpoint in cluster.endpoints():
                found[model.name, endpoint.address] = endpoint
    return found


@contextlib.contextmanager
def _heap_restored() -> Iterator[None]:
    """Each case settles the heap as serve does; the benchmarks run after this one in the
    same process get the collector as they found it."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        heap.unsettle(thresholds)


@contextlib.contextmanager
def _logging_as_serve() -> Iterator[None]:
    """Filter debug logs as `serve` does at its default level: a tick logs at debug, and
    structlog's unconfigured default would print (and time) every one of them."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield
    finally:
        structlog.configure(**saved)
