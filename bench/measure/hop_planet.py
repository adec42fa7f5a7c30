"""Who places a lent request, with heliostat's own law: the lender's gateway or the rescuer's
(the east-west hop, branch wip/eastwest), on the planet, request by request (issue 10).

Under the law's own shares (no `--lend` what-if), every seed is played once per placement
(`--placements`, interleaved; virtual time, so a seed's figures do not depend on the machine):

- `lender`: as heliostat publishes today (`LentPlacement.LENDER_RING`, the planet's default):
  the lending gateway's Envoy places a lent request among the rescuer's replicas with its own
  cluster (ring hash with its bound where the law hashes, least-request otherwise) and its
  own in-flight counts, blind to the rescuer's own users;
- `rescuer`: the rescuer's gateway places it with its own in-flight counts, as the east-west
  hop does: `rescuer_ring` for a hashed cluster (the rescuer's ring and bound),
  `rescuer_least` for a least-request one (`--rescuer ring|least` forces one for every
  request). On these fleets the law's least-request clusters already scan every host
  (`full_scan`), so on a chat fleet `rescuer_ring` and `rescuer_least` place alike. The
  planet's rescuer places with its Envoy's counts of every request on its replicas, its own
  users' and the lent ones alike, and then counts the lent request there, not at the lender:
  the hop as built since the sixteenth session (the rescuer's own model cluster, held to its
  region's subset, `heliostat.xds.translate.east_west`);
- `hop`: the hop as first built (wip/eastwest, fifteenth session), as Envoy would run it.
  The east-west listener routed to `<model>|east-west`, a cluster of its own, and Envoy
  keeps a host's in-flight count per cluster (each cluster's hosts are its own objects:
  admin /clusters lists each host's rq_active per cluster), so the rescuer's gateway places
  lent requests by the lent requests it placed, blind to its own users (and its own users'
  cluster blind to the lent ones); the lender's Envoy keeps counting the request (its
  cluster's in-flight total);
- `null`: the lender places, with the one random draw per lent request the rescuer's
  placement makes: the spread a change of the random stream alone gives (the planet is
  chaotic: any change reshuffles every later draw), the floor the paired differences
  should be read against.

Scenarios are bench/scenarios/NAME.yaml through `bench.routing_planet.planet_scenario` (the
bench's own operator policy, prefix affinity included), except shared_prefix, which is
`prefix_planet.py`'s fleet at its default load (65% of 3.9 requests/s per replica: the fast
model reads the file's load against replicas that hit every prefix), and edge_pop, whose
edge region's `rps` becomes its demand curve (`routing_planet` does not translate it).

    PYTHONPATH=. .venv/bin/python bench/measure/hop_planet.py --scenarios regional_surge \
        --seeds 0-11

prints per seed and placement the share of requests within the objective (all, per origin),
the TTFT p99 (all, per origin), each origin's cross-region share, the replicas' prefix-cache
hit rate (token-weighted) where requests share prefixes, and for a surge (a phase offering
some, not all, regions more than their capacity after one offering none more: the bench's
`routing_targets.surge`) each rescuing region's own users before and during the surge (the
protection target: during >= before - 1 point). Users are counted by the planet's record
buckets (offered at arrival, met at first token), as tests/planet/test_surge_protection.py
counts them. Then the means, and per figure the paired difference placement - lender: mean,
min, median, max over seeds, and on how many seeds each is ahead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import statistics
from typing import Any

from bench import routing_planet
from bench.measure import prefix_planet
from bench.scenario import Scenario as BenchScenario
from heliostat.planet import discrete
from heliostat.planet.discrete import DiscreteRun, LentPlacement, _Envoy
from heliostat.planet.envoy import NO_EXCLUSIONS, Balancer, LbKind
from heliostat.planet.fluid import T0, RunOptions
from heliostat.planet.record import Record
from heliostat.planet.scenario import PolicyName, Scenario

SCENARIOS = (
    "regional_surge",
    "shared_prefix",
    "chat",
    "mixed_gpus",
    "edge_pop",
    "flash_crowd",
)
PLACEMENTS = ("lender", "rescuer", "hop", "null")


def planet(name: str, seed: int) -> Scenario:
    """bench/scenarios/NAME.yaml on the planet (see the module docstring)."""
    if name == "shared_prefix":
        return prefix_planet.scenario(prefix_planet.options([]), seed)
    bench = routing_planet.bench_scenario(name)
    edge = {r: rate for phase in bench.phases for r, rate in phase.rps.items()}
    if not edge:
        return routing_planet.planet_scenario(bench, seed)
    if any(phase.rps != bench.phases[0].rps for phase in bench.phases):
        raise ValueError(f"{name}: an edge region's rps changes between phases")
    phases = [phase.model_copy(update={"rps": {}}) for phase in bench.phases]
    document = routing_planet.planet_scenario(
        bench.model_copy(update={"phases": phases}), seed
    ).model_dump()
    for region, rate in edge.items():
        document["demand"][region] = {"curve": [rate] * 24}
    return Scenario.model_validate(document)


def surge(
    bench: BenchScenario,
) -> tuple[tuple[float, float], tuple[float, float], list[str]] | None:
    """`bench.routing_targets.surge` on the scenario file: the seconds of the phase before
    the first surge and of the surge's phases, and the rescuing regions; None without one."""
    starts = [0.0]
    for phase in bench.phases:
        starts.append(starts[-1] + phase.seconds)
    phases = bench.phases
    for index in range(1, len(phases)):
        loads, before = phases[index].load, phases[index - 1].load
        hot = sorted(r for r, v in loads.items() if v > 1.0)
        if not hot or len(hot) == len(loads) or any(v > 1.0 for v in before.values()):
            continue
        last = index
        while last + 1 < len(phases) and any(phases[last + 1].load.get(r, 0.0) > 1.0 for r in hot):
            last += 1
        budget = bench.slo.network_budget_ms
        rescuers = [
            r
            for r in sorted(loads)
            if r not in hot and any(bench.rtt_ms(r, h) <= budget for h in hot)
        ]
        return (starts[index - 1], starts[index]), (starts[index], starts[last + 1]), rescuers
    return None


def users(record: Record, region: str, window: tuple[float, float]) -> float | None:
    """The share of `region`'s users within the objective in [start, end) (record buckets)."""
    offered = met = 0.0
    for index, bucket in enumerate(record.series[region]):
        if window[0] <= index * record.bucket_s < window[1]:
            offered += bucket.users.offered
            met += bucket.users.met
    return met / offered if offered else None


class Hop(DiscreteRun):
    """The planet's run with the rescuer placing (`rescuer`: by the cluster's kind with
    `--rescuer auto`; `hop`: the east-west cluster's own counts), counting the lent
    requests the rescuer placed by the lender's balancer kind."""

    def __init__(self, scenario: Scenario, options: RunOptions, how: str, placement: str) -> None:
        super().__init__(scenario, options)
        self.how = how
        self.placement = placement
        self.lent: dict[str, int] = {}
        # `hop`: each rescuer gateway's `<model>|east-west` cluster, its own in-flight counts
        # (Envoy keeps a host's counts per cluster), and the lent requests it placed.
        self.east_west = {r: [_Envoy(r) for _ in envoys] for r, envoys in self.envoys.items()}
        self.through: dict[int, _Envoy] = {}

    def _place_lent(self, request: Any, view: Any, balancer: Balancer, host: str) -> str:
        rescuer = self.replicas[host].region
        if rescuer == request.gateway:
            return host
        kind = balancer.config.kind
        self.lent[kind.value] = self.lent.get(kind.value, 0) + 1
        if self.placement == "null":  # the lender's host; the random draw the rescuer's makes
            self.rng.choice(self.envoys[rescuer])
            return host
        if self.placement == "hop":
            return self._through_east_west(request, balancer, host, rescuer)
        if self.how == "auto":
            discrete.LENT_PLACEMENT = (
                LentPlacement.RESCUER_RING
                if kind is LbKind.RING_HASH
                else LentPlacement.RESCUER_LEAST
            )
        return super()._place_lent(request, view, balancer, host)

    def _through_east_west(self, request: Any, balancer: Balancer, host: str, rescuer: str) -> str:
        """wip/eastwest as Envoy runs it: the rescuer's gateway places the request on
        `<model>|east-west`, its own replicas balanced as its own cluster (the same key
        hashed with its bound, or least-request), by that cluster's counts: the lent
        requests it placed, not its own users' (another cluster's hosts). The lender's
        Envoy keeps counting the request as before (its cluster's in-flight total and its
        bound)."""
        assert self.router is not None
        own = self.router.view(rescuer, T0 + self.now)
        if own is None or request.cluster not in self._routes_of(own).clusters:
            return host
        mine = self._balancer(own, request.cluster)
        localities = [
            loc for loc in mine.localities if loc.region == rescuer and loc.priority == 0
        ] or [loc for loc in balancer.localities if loc.region == rescuer]
        local = Balancer(
            [dataclasses.replace(loc, priority=0, weight=1) for loc in localities], mine.config
        )
        gateway = self.rng.choice(self.east_west[rescuer])
        placed = self._host(local, gateway, NO_EXCLUSIONS, request)
        if placed is None:
            return host
        self.through[id(request)] = gateway
        return placed

    def _send(self, request: Any, host: str) -> None:
        gateway = self.through.get(id(request))
        if gateway is not None:
            gateway.active[host] = gateway.active.get(host, 0) + 1
            gateway.cluster_active[request.cluster] = (
                gateway.cluster_active.get(request.cluster, 0) + 1
            )
        super()._send(request, host)

    def _release(self, request: Any) -> None:
        gateway = self.through.pop(id(request), None)
        if gateway is not None and request.host is not None:
            gateway.active[request.host] = max(0, gateway.active.get(request.host, 0) - 1)
            gateway.cluster_active[request.cluster] = max(
                0, gateway.cluster_active.get(request.cluster, 0) - 1
            )
        super()._release(request)


def play(name: str, seed: int, placement: str, rescuer: str) -> dict[str, Any]:
    """One seed, one placement: its figures (see the module docstring)."""
    scenario = planet(name, seed)
    run = Hop(scenario, RunOptions(PolicyName.HELIOSTAT), rescuer, placement)
    if placement == "lender":
        discrete.LENT_PLACEMENT = LentPlacement.LENDER_RING
    else:
        # Anything but LENDER_RING makes the run call `_place_lent`; `auto` sets it per
        # request there.
        discrete.LENT_PLACEMENT = LentPlacement(
            f"rescuer_{'ring' if rescuer == 'auto' else rescuer}"
        )
    try:
        record = run.run()
    finally:
        discrete.LENT_PLACEMENT = LentPlacement.LENDER_RING
    summary = record.summary(scenario.slo.end_to_end_ms / 1000.0)
    by_origin = record.by_origin()
    row: dict[str, Any] = {
        "slo": summary["slo_attainment"],
        "p99": summary["ttft_p99_ms"],
        "origins": {
            r: (v["slo_attainment"], v["ttft_p99_ms"], v["cross_region_share"])
            for r, v in by_origin.items()
        },
        "lent": dict(run.lent),
    }
    looked = sum(r.engine.prefix_queries for r in run.replicas.values())
    if scenario.model.prefix_groups and looked:
        row["hits"] = sum(r.engine.prefix_hits for r in run.replicas.values()) / looked
    bench = routing_planet.bench_scenario(name)
    found = surge(bench)
    if found is not None:
        before, during, rescuers = found
        row["protection"] = {
            r: (users(record, r, before), users(record, r, during)) for r in rescuers
        }
    return row


def seeds(text: str) -> list[int]:
    return prefix_planet.seeds(text)


def figures(row: dict[str, Any]) -> dict[str, float]:
    """A row's figures by name, flat: what a seed's line prints and the comparison reads."""
    out: dict[str, float] = {"slo": row["slo"], "p99": row["p99"]}
    for region, (slo, p99, cross) in sorted(row["origins"].items()):
        out[f"slo {region}"] = slo
        if p99 is not None:
            out[f"p99 {region}"] = p99
        out[f"cross {region}"] = cross
    if "hits" in row:
        out["hits"] = row["hits"]
    for region, (before, during) in row.get("protection", {}).items():
        if before is not None and during is not None:
            out[f"{region} before"] = before
            out[f"{region} during"] = during
            out[f"{region} during-before"] = during - before
    return out


def ahead(name: str, difference: float) -> int:
    """1 when a difference placement - lender of this figure favours the placement, -1 when
    it favours the lender, 0 for a tie or a figure with no better side (a cross share)."""
    if name.startswith("cross") or difference == 0:
        return 0
    lower = name.startswith("p99")
    return 1 if (difference < 0) == lower else -1


def report(name: str, flat: dict[str, list[dict[str, float]]]) -> None:
    """The means of each placement, and each one's paired differences from the lender's."""
    print(f"== {name}: {len(flat['lender'])} seeds")
    for placement, columns in flat.items():
        keys = [k for k in columns[0] if all(k in c for c in columns)]
        means = {k: statistics.mean(c[k] for c in columns) for k in keys}
        shown = {k: round(v, 4) if abs(v) < 10 else round(v, 1) for k, v in means.items()}
        print(f"  {placement:8s} means {shown}")
    for other in flat:
        if other != "lender":
            paired(other, flat[other], flat["lender"])


def paired(other: str, theirs: list[dict[str, float]], lender: list[dict[str, float]]) -> None:
    print(
        f"  {other} - lender, paired by seed: mean (standard error) / min / median / max, "
        f"seeds ahead {other}:lender"
    )
    for key in lender[0]:
        diffs = [
            a[key] - b[key] for a, b in zip(theirs, lender, strict=True) if key in a and key in b
        ]
        if not diffs:
            continue
        wins = [ahead(key, d) for d in diffs]
        scale = 1.0 if key.startswith("p99") else 100.0
        unit = "ms" if key.startswith("p99") else "pt"
        error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        print(
            f"    {key:28s} {scale * statistics.mean(diffs):+8.2f} {unit} "
            f"({scale * error:6.2f}) / {scale * min(diffs):+8.2f} "
            f"/ {scale * statistics.median(diffs):+8.2f} / {scale * max(diffs):+8.2f}   "
            f"{wins.count(1)}:{wins.count(-1)}"
        )


LINE = re.compile(r"^(\S+) seed (\d+) (\S+): (\{.*\}) lent \{.*\}$")


def logged(paths: list[str]) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """The seeds' lines of earlier runs (`--log`): scenario -> placement -> seed -> figures.
    The planet runs in virtual time, so runs of other seed ranges combine."""
    found: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for path in paths:
        with open(path) as lines:
            for line in lines:
                match = LINE.match(line.strip())
                if match:
                    name, seed, placement, shown = match.groups()
                    by_seed = found.setdefault(name, {}).setdefault(placement, {})
                    by_seed[int(seed)] = ast.literal_eval(shown)
    return found


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--seeds", default="0-11", help="e.g. 0-11")
    parser.add_argument(
        "--log",
        default=None,
        help="FILE[,FILE...]: report the seeds' lines of earlier runs instead of running",
    )
    parser.add_argument(
        "--placements", default=",".join(PLACEMENTS), help="lender first, comma-separated"
    )
    parser.add_argument(
        "--rescuer",
        default="auto",
        choices=["auto", "ring", "least"],
        help="auto: rescuer_ring for a hashed cluster, rescuer_least otherwise",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = options()
    placements = args.placements.split(",")
    if args.log is not None:
        for name, by_placement in logged(args.log.split(",")).items():
            if name not in args.scenarios.split(","):
                continue
            present = [p for p in placements if p in by_placement]
            common = sorted(set.intersection(*(set(by_placement[p]) for p in present)))
            report(name, {p: [by_placement[p][seed] for seed in common] for p in present})
        return
    for name in args.scenarios.split(","):
        flat: dict[str, list[dict[str, float]]] = {p: [] for p in placements}
        for seed in seeds(args.seeds):
            order = placements if seed % 2 == 0 else placements[::-1]
            for placement in order:
                row = play(name, seed, placement, args.rescuer)
                flat[placement].append(figures(row))
                shown = {
                    k: round(v, 4) if abs(v) < 10 else round(v, 1)
                    for k, v in flat[placement][-1].items()
                }
                print(f"{name} seed {seed} {placement}: {shown} lent {row['lent']}", flush=True)
        report(name, flat)


if __name__ == "__main__":
    main()
