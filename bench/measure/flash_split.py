"""Where a full planet's admitted tail comes from (issue 10: flash_crowd's admitted p99).

bench/scenarios/FILE.yaml (default flash_crowd) on the planet's discrete engine, request by
request, heliostat's law as `serve` ticks it. Every admitted request (served: not refused
by the gateway) is kept with its arrival, origin and time to first token, and with what its
region's gateway was doing when it arrived: refusing (a drop fraction published) and/or
capping what it has in flight (`max_requests`). Printed per seed and pooled over the seeds:

- the admitted p99 and the share late, overall;
- split by time: before the region's first refusal, and after it (by phase too);
- split by origin region;
- the late requests: how many arrived while the region neither refused nor capped, while
  it refused without a cap, while capped, while its view lent (served at home or away);
- `--by-flight`: per origin, late / admitted by the requests its gateway had in flight on
  the cluster when each arrived (where a cap would have to sit to refuse only late ones).

Common random numbers: arrivals and each request's shape (class, prompt, output) come from
their own stream, so two versions of the law (run the script from each tree, PYTHONPATH=.)
see the same requests; the engine's own stream serves routing choices only. (In
`DiscreteRun` one stream serves both, and any change of the law shifted every later
arrival: 12-seed means then moved by 0.5 points between two runs of the same law.)

    PYTHONPATH=. .venv/bin/python bench/measure/flash_split.py --seeds 0-11

`--scenario NAME` plays another bench scenario (chat, mixed_gpus, regional_surge, ...):
its SLO attainment (refused counted as missed) and refusals are printed too, to check that
a change costs the scenarios that are not full nothing. `--max-share X` is a what-if (the
operator's `overflow.max_share`: 0, no region lends). `--affinity` keeps the bench's
prefix affinity (the planet tests of the chat fleets run without it). `--json FILE`
writes the per-seed figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench import routing_planet
from heliostat.balance import TrafficClass
from heliostat.planet.discrete import DiscreteRun, _Request
from heliostat.planet.fluid import T0, RunOptions
from heliostat.planet.gateway import ENVOY_MAX_REQUESTS, _breaker
from heliostat.planet.scenario import PolicyName


@dataclass
class Admitted:
    at: float  # arrival at the gateway, s since start
    origin: str
    ttft: float  # s, as the user sees it
    refusing: bool  # the origin's view dropped a share when it arrived
    capped: bool  # the origin's view capped requests in flight when it arrived
    in_flight: int = 0  # its gateway's requests in flight on its cluster when it arrived
    cap: int | None = None  # that cluster's cap then
    lending: bool = False  # the origin's view sent some of its users elsewhere then
    remote: bool = False  # served in another region than its origin


@dataclass
class Run:
    admitted: list[Admitted] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    offered: dict[str, int] = field(default_factory=dict)
    first_refusal: dict[str, float] = field(default_factory=dict)
    met: int = 0


class SplitRun(DiscreteRun):
    """A discrete run that keeps every admitted request (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.split = Run()
        self._state: dict[int, tuple[bool, bool, int, int | None, bool]] = {}
        self._arriving = (False, False)
        # Common random numbers: arrivals and each request's shape come from their own
        # stream, so two versions of the law see the same requests (the engine's one stream
        # is also spent on routing choices, and a change of the law shifted every arrival).
        self.shapes = random.Random(f"{self.scenario.seed}-arrivals")
        self.trace: list[dict[str, Any]] = []

    def _state_of(self, gateway: str) -> tuple[bool, bool]:
        if self.router is None:
            return False, False
        view = self.router.view(gateway, T0 + self.now)
        if view is None:
            return False, False
        refusing = any(c.drop_overload_percent > 0 for c in view.clusters)
        capped = any(c.max_requests is not None for c in view.clusters)
        return refusing, capped

    def _next_arrival(self, origin: str, after: float) -> None:
        rate = self.demand.rate(origin, after)
        if rate <= 0:
            self._at(after + 1.0, "idle_origin", origin)
            return
        self._at(after + self.shapes.expovariate(rate), "arrival", origin)

    def _on_arrival(self, origin: str) -> None:
        """`DiscreteRun._on_arrival` with the request's shape drawn from `shapes`."""
        state = self._state_of(origin)
        if state[0] or state[1]:
            self.split.first_refusal.setdefault(origin, self.now)
        self.split.offered[origin] = self.split.offered.get(origin, 0) + 1
        self._arriving = state
        self._next_arrival(origin, self.now)
        batch = self.shapes.random() < self.scenario.model.batch_share
        prompt = self.prompts.draw(self.shapes)
        output = self.outputs.draw(self.shapes)
        groups = self.scenario.model.prefix_groups
        group = self.shapes.randrange(groups) if groups else None
        self.record.offered(origin, self.now, 1.0)
        self._sample(origin, offered=1.0)
        gateway = self._gateway_of(origin)
        if gateway is None:
            self.record.failed(origin, self.now, 1.0)
            self._sample(origin, failed=1.0)
            return
        envoy = self.rng.choice(self.envoys[gateway])
        request = _Request(
            next(self._ids),
            origin,
            gateway,
            envoy,
            self.now - self.scenario.rtt_ms(origin, gateway) / 2000.0,
            prompt,
            output,
            TrafficClass.BATCH if batch else TrafficClass.INTERACTIVE,
        )
        request.group = group
        if self.router is None:
            self._pick(request)
            return
        view = self.router.view(gateway, T0 + self.now)
        if view is None:
            self.record.refused(origin, self.now, 1.0)
            self._sample(origin, refused=1.0)
            return
        routes = self._routes_of(view)
        targets = routes.models[0].targets[(None, request.traffic_class)].clusters
        names = [n for n, _ in targets]
        weights = [w for _, w in targets]
        request.cluster = self.rng.choices(names, weights)[0]
        cluster_view, _model = routes.clusters[request.cluster]
        if self.rng.random() * 100 < cluster_view.drop_overload_percent:
            self._drop(request)
            self.record.refused(origin, self.now, 1.0)
            self._sample(origin, refused=1.0)
            return
        breaker = _breaker(self.model, request.traffic_class)
        limit = breaker.max_requests if breaker.max_requests is not None else ENVOY_MAX_REQUESTS
        if cluster_view.max_requests is not None:
            limit = min(limit, cluster_view.max_requests)
        if envoy.cluster_active.get(request.cluster, 0) >= limit:
            self._drop(request)
            self.record.refused(origin, self.now, 1.0)
            self._sample(origin, refused=1.0)
            return
        self._try(request, view)

    def _try(self, request: Any, view: Any) -> None:
        if request.rid not in self._state:
            cluster = view.cluster(request.cluster)
            cap = cluster.max_requests if cluster is not None else None
            regions = {
                e.region
                for c in view.clusters
                for loc in c.localities
                if loc.priority == 0
                for e in loc.endpoints
                if c.name == request.cluster
            }
            self._state[request.rid] = (
                *self._arriving,
                request.envoy.cluster_active.get(request.cluster, 0),
                cap,
                regions != {request.gateway},
            )
        super()._try(request, view)

    def _on_tick(self, payload: Any) -> None:
        super()._on_tick(payload)
        state = self.router.law.state  # type: ignore[union-attr]
        if state is None:
            return
        model = next(iter(state.models.values()))
        for r, region in model.regions.items():
            refused = model.refusals.get(r)
            waiting = sum(
                rep.engine.num_waiting for rep in self.replicas.values() if rep.region == r
            )
            running = sum(
                rep.engine.num_running for rep in self.replicas.values() if rep.region == r
            )
            self.trace.append(
                {
                    "t": round(self.now, 2),
                    "region": r,
                    "demand": round(region.demand, 2),
                    "measured": round(region.measured, 2),
                    "raw": round(region.raw_capacity, 2),
                    "backlog": region.backlog,
                    "waiting": waiting,
                    "running": running,
                    "late": region.late,
                    "unplaced": round(region.unplaced, 2),
                    "refuse": refused.interactive.published if refused else None,
                    "cap": refused.in_flight if refused else None,
                    "shares": region.shares,
                }
            )

    def _first_token(self, replica: Any, req: Any) -> None:
        request = self._by_engine_request.get(id(req))
        if request is not None:
            back = self.scenario.rtt_ms(request.gateway, replica.region) / 2000.0
            user = self.scenario.rtt_ms(request.origin, request.gateway) / 2000.0
            ttft = self.now + back + user - request.sent_at
            refusing, capped, flying, cap, lending = self._state.pop(
                request.rid, (False, False, 0, None, False)
            )
            self.split.admitted.append(
                Admitted(
                    request.sent_at,
                    request.origin,
                    ttft,
                    refusing,
                    capped,
                    flying,
                    cap,
                    lending,
                    replica.region != request.origin,
                )
            )
            if ttft <= self.scenario.slo.end_to_end_ms / 1000.0:
                self.split.met += 1
        super()._first_token(replica, req)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def describe(rows: list[Admitted], slo: float) -> str:
    if not rows:
        return "n=0"
    ttfts = [a.ttft for a in rows]
    late = sum(t > slo for t in ttfts)
    p99 = quantile(ttfts, 0.99) or 0.0
    return f"n={len(rows)} late={late} ({late / len(rows):.1%}) p99={1000 * p99:.0f} ms"


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def play(args: argparse.Namespace, slo: float) -> tuple[list[Run], list[dict[str, Any]]]:
    """Every seed's run, with its row of figures (printed unless --quiet)."""
    bench = routing_planet.bench_scenario(args.scenario)
    runs: list[Run] = []
    rows: list[dict[str, Any]] = []
    for seed in seeds_of(args.seeds):
        planet = routing_planet.planet_scenario(bench, seed, affinity=args.affinity)
        if args.max_share is not None:  # a what-if: the operator caps what a region lends
            document = planet.model_dump()
            document["policy"] = {**document["policy"], "overflow": {"max_share": args.max_share}}
            planet = type(planet).model_validate(document)
        run = SplitRun(planet, RunOptions(PolicyName(args.policy)))
        totals = run.run().totals
        split = run.split
        runs.append(split)
        attainment = totals.met / totals.offered if totals.offered else 0.0
        p99 = quantile([a.ttft for a in split.admitted], 0.99) or 0.0
        row = {
            "seed": seed,
            "offered": totals.offered,
            "refused": totals.refused,
            "failed": totals.failed,
            "slo_attainment": round(attainment, 4),
            "admitted_within": round(totals.met / max(1.0, totals.served), 4),
            "admitted_p99_ms": round(1000 * p99, 1),
            "goodput_rps": round(totals.met / planet.duration, 2),
            "first_refusal": {r: round(t, 2) for r, t in sorted(split.first_refusal.items())},
        }
        rows.append(row)
        if args.trace and seed == seeds_of(args.seeds)[0]:
            trace(run, args.trace, slo)
        if not args.quiet:
            print(
                f"seed {seed}: SLO {attainment:.2%} refused {totals.refused:.0f} "
                f"failed {totals.failed:.0f} admitted {describe(split.admitted, slo)} "
                f"goodput {row['goodput_rps']}/s first refusal {row['first_refusal']}"
            )
    return runs, rows


def trace(run: SplitRun, region: str, slo: float) -> None:
    for entry in run.trace:
        if entry["region"] == region:
            print(entry)
    for a in run.split.admitted:
        if a.origin == region and a.ttft > slo:
            print(
                f"late: at {a.at:.2f} ttft {a.ttft:.3f} in flight {a.in_flight} "
                f"cap {a.cap} refusing {a.refusing} lending {a.lending}"
            )


def summary(rows: list[dict[str, Any]], pooled: list[Admitted], slo: float) -> None:
    attainments = [r["slo_attainment"] for r in rows]
    p99s = [r["admitted_p99_ms"] for r in rows]
    print(
        f"SLO attainment mean {statistics.mean(attainments):.2%} "
        f"(min {min(attainments):.2%}); refused {sum(r['refused'] for r in rows):.0f} "
        f"of {sum(r['offered'] for r in rows):.0f}; failed "
        f"{sum(r['failed'] for r in rows):.0f}; goodput "
        f"{statistics.mean(r['goodput_rps'] for r in rows):.2f}/s"
    )
    print(
        f"admitted p99 per seed: median {statistics.median(p99s):.0f} ms, "
        f"min {min(p99s):.0f}, max {max(p99s):.0f}"
    )
    print(f"pooled admitted: {describe(pooled, slo)}")


def by_time(
    runs: list[Run], pooled: list[Admitted], phases: list[tuple[float, float]], slo: float
) -> None:
    """Before the origin's first refusal or cap and after it; by phase; by 5 s; by origin."""
    before: list[Admitted] = []
    after: list[Admitted] = []
    for run in runs:
        for a in run.admitted:
            first = run.first_refusal.get(a.origin, math.inf)
            (before if a.at < first else after).append(a)
    print(f"  before the region's first refusal: {describe(before, slo)}")
    print(f"  after it:                          {describe(after, slo)}")
    for i, (lo, hi) in enumerate(phases):
        rows = [a for a in pooled if lo <= a.at < hi]
        print(f"  phase {i} [{lo:.0f}, {hi:.0f}) s:   {describe(rows, slo)}")
    for lo in range(0, int(phases[-1][1]), 5):
        rows = [a for a in pooled if lo <= a.at < lo + 5]
        print(f"    [{lo:2d}, {lo + 5:2d}) s: {describe(rows, slo)}")
    for origin in sorted({a.origin for a in pooled}):
        rows = [a for a in pooled if a.origin == origin]
        print(f"  origin {origin}: {describe(rows, slo)}")
        b = [a for a in before if a.origin == origin]
        c = [a for a in after if a.origin == origin]
        print(f"      before {describe(b, slo)}; after {describe(c, slo)}")


def by_state(pooled: list[Admitted], slo: float) -> None:
    """By what the origin's gateway did when the request arrived."""
    neither = [a for a in pooled if not a.refusing and not a.capped]
    dropping = [a for a in pooled if a.refusing and not a.capped]
    capped = [a for a in pooled if a.capped]
    print(f"  arrived with no refusal, no cap: {describe(neither, slo)}")
    print(f"  arrived while dropping, no cap:  {describe(dropping, slo)}")
    print(f"  arrived while capped:            {describe(capped, slo)}")
    lending = [a for a in pooled if a.lending]
    print(f"  arrived while its view lent:     {describe(lending, slo)}")
    print(f"     served at home: {describe([a for a in lending if not a.remote], slo)}")
    print(f"     served remote:  {describe([a for a in lending if a.remote], slo)}")
    for origin in sorted({a.origin for a in lending}):
        print(f"     {origin}: {describe([a for a in lending if a.origin == origin], slo)}")
    print(f"  served remote, all: {describe([a for a in pooled if a.remote], slo)}")
    over = [a for a in capped if a.cap is not None and a.in_flight >= a.cap]
    print(f"  capped, arrived past the cap (a retry or a stale count): {describe(over, slo)}")


def by_flight(pooled: list[Admitted], slo: float) -> None:
    """Per origin, late / admitted by the requests its gateway had in flight at arrival."""
    for origin in sorted({a.origin for a in pooled}):
        counts: dict[int, list[int]] = {}
        for a in pooled:
            if a.origin == origin and not a.lending:
                entry = counts.setdefault(a.in_flight, [0, 0])
                entry[0] += 1
                entry[1] += a.ttft > slo
        print(f"  {origin}, P(late | in flight at arrival), not lending:")
        cells = (f"{n}:{late}/{total}" for n, (total, late) in sorted(counts.items()))
        print("    " + " ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="flash_crowd")
    parser.add_argument("--seeds", default="0-11")
    parser.add_argument("--affinity", action="store_true")
    parser.add_argument("--policy", default="heliostat")
    parser.add_argument("--json")
    parser.add_argument("--by-flight", action="store_true")
    parser.add_argument("--max-share", type=float, help="what-if: overflow.max_share")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--trace", help="REGION: print the law's state per tick (first seed)")
    args = parser.parse_args()
    bench = routing_planet.bench_scenario(args.scenario)
    slo = bench.slo.ttft_ms / 1000.0
    phases = []
    at = 0.0
    for phase in bench.phases:
        phases.append((at, at + phase.seconds))
        at += phase.seconds
    runs, rows = play(args, slo)
    pooled = [a for run in runs for a in run.admitted]
    print(f"== {args.scenario}, {args.policy}, seeds {args.seeds}, affinity {args.affinity}")
    summary(rows, pooled, slo)
    by_time(runs, pooled, phases, slo)
    by_state(pooled, slo)
    if args.by_flight:
        by_flight(pooled, slo)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"per_seed": rows}, out, indent=1)


if __name__ == "__main__":
    main()
