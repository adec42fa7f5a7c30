"""bench/scenarios/shared_prefix.yaml's fleet on the planet, request by request (issue 10).

The planet's discrete engine gives every replica its own `heliostat.sim.engine.Engine`, with
a prefix cache, and places each request by its prefix's hash as Envoy's ring hash with
bounded load does (`heliostat.planet.envoy`): the in-process loop for prefix affinity. Three
regions 80 / 160 / 210 ms apart (budget 170 ms, TTFT objective 500 ms), 4 / 3 / 1 replicas,
24 groups sharing 768-token prompts (96 of question, 32 out), one gateway per region.
`--load` is each region's demand as a share of 3.9 requests/s per replica (what a 4-slot
replica with cold prefills completes), `--capacity-x` scales it for other engines.

    .venv/bin/python bench/measure/prefix_planet.py --policy heliostat --seeds 0-11 --bound 1.5

(`--bound` writes `affinity.bounded_load`, a constant; without it heliostat chooses each
region's bound from the measured costs of a spill and a wait, `affinity.step_bounds`)
prints, per seed, the share of requests within the objective (all and per origin, with the
origin's TTFT p99 and cross-region share) and the replicas' prefix-cache hit rate (tokens),
then the means, and each region's replicas' hit rate.

`--lend ORIGIN:RESCUER:SHARE` is a what-if, not heliostat's law: the paying share of ORIGIN's
users (`overflow.paying`) is SHARE to RESCUER on every tick, and ORIGIN never counts as
carrying its own users (`overflow.carries_own`), so the allocation places that share into
the rescuer's room whatever the estimates say. It measures what lending would buy.
The same what-if ran through the routing benchmark (real Envoys, `heliostat serve`) with a
`sitecustomize.py` on PYTHONPATH entering `lending(os.environ[...])` in every process (keep a
reference to the context manager: a collected one restores the law at once):

    HELIOSTAT_FORCE_LEND=ap-southeast:eu-west:0.3 PYTHONPATH=DIR:. .venv/bin/python -m bench \
        --only routing --scenario bench/scenarios/shared_prefix.yaml --policy heliostat --out OUT

`--lend` takes several pairs, comma-separated (`ap-southeast:eu-west:0.3,eu-west:us-east:0.3`).
`--lent PLACEMENT` (`heliostat.planet.discrete.LentPlacement`) says who places a lent request
among the rescuer's replicas: `lender_ring` is what heliostat publishes (the lender's Envoy,
its ring, its own in-flight counts); `rescuer_ring` / `rescuer_least` hand it to the
rescuer's gateway (its ring or least-request, with the counts of every request on its
replicas), as a hop through the rescuer's gateway would; `lender_least` is least-request
over the rescuer's replicas with the lender's counts. `--capacity` is a what-if for the
capacity estimate (`full_capacity`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
from collections.abc import Iterator
from typing import Any

from bench import routing_fleet, routing_planet
from heliostat.balance import capacity, overflow, spill
from heliostat.planet import discrete
from heliostat.planet.discrete import DiscreteRun
from heliostat.planet.fluid import RunOptions
from heliostat.planet.scenario import PolicyName, Scenario

PER_REPLICA_RPS = 3.9
FLEET = routing_planet.bench_scenario("shared_prefix")


def scenario(args: argparse.Namespace, seed: int) -> Scenario:
    """The file's fleet, SLO and requests (`bench.routing_planet`); this study's own load and
    policy (its figures in the README were measured with them, not the bench's)."""
    slo = routing_planet.slo(FLEET)
    policy: dict[str, Any] = {
        "slo": slo,
        "signals": {"interval": "500ms", "timeout": "400ms", "stale_after": "2s"},
        "affinity": {"prefix_chars": routing_fleet.PREFIX_CHARS},
    }
    if args.bound is not None:
        policy["affinity"]["bounded_load"] = args.bound
    model = routing_planet.model(FLEET)
    for knob, value in (("max_num_seqs", args.slots), ("num_gpu_blocks", args.blocks)):
        if value is not None:
            model["engine"][knob] = value
    model["prefix_groups"] = args.groups
    rate = PER_REPLICA_RPS * args.load * args.capacity_x
    return Scenario.model_validate(
        {
            "name": FLEET.name,
            "duration": f"{args.seconds}s",
            "mode": "discrete",
            "seed": seed,
            "gateways": 1,
            "model": model,
            "slo": {**slo, "end_to_end_ms": FLEET.slo.ttft_ms},
            "regions": routing_planet.regions(FLEET),
            "demand": {r: {"curve": [FLEET.count(r) * rate] * 24} for r in FLEET.regions},
            "policy": policy,
            "policies": [args.policy],
        }
    )


@contextlib.contextmanager
def lending(what: str | None) -> Iterator[None]:
    """`--lend ORIGIN:RESCUER:SHARE[,ORIGIN:RESCUER:SHARE...]` in force (see the module
    docstring); nothing when None."""
    if what is None:
        yield
        return
    forced: dict[str, tuple[str, float]] = {}
    for part in what.split(","):
        origin, rescuer, share = part.split(":")
        forced[origin] = (rescuer, float(share))
    paying, carries_own = overflow.paying, overflow.carries_own

    def forced_paying(*args: Any) -> spill.Spill:
        if args[2] in forced:
            rescuer, share = forced[args[2]]
            return spill.Spill(share, rescuer, 0.0, prefill=True)
        return paying(*args)

    def forced_carries(model: Any, own: overflow.Supply, *args: Any) -> bool:
        return False if forced_region[0] in forced else carries_own(model, own, *args)

    # `carries_own` does not name its region: `_pays_to_judge`, called just before it for
    # each region, does.
    forced_region = [""]
    judge = overflow._pays_to_judge

    def naming(model: Any, own: overflow.Supply, users: Any, r: str, demanded: float) -> bool:
        forced_region[0] = r
        return True if r in forced else judge(model, own, users, r, demanded)

    overflow.paying, overflow.carries_own = forced_paying, forced_carries  # type: ignore[assignment]
    overflow._pays_to_judge = naming  # type: ignore[assignment]
    try:
        yield
    finally:
        overflow.paying, overflow.carries_own = paying, carries_own  # type: ignore[assignment]
        overflow._pays_to_judge = judge  # type: ignore[assignment]


FULL_TIME_S = 3.0  # `--capacity full`: full seconds observed before they count


@contextlib.contextmanager
def full_capacity(how: str) -> Iterator[None]:
    """`--capacity full`, a what-if for `heliostat.balance.capacity`: besides the law's
    estimate (completions per busy second, s / o), decaying sums (the same TAU_S) over the
    scrape intervals that began with a queue (the slots full from their start), and each
    endpoint's capacity the lesser of the two once FULL_TIME_S of them are behind it. A
    replica that runs fewer requests runs each faster, so s / o reads more than it sustains
    when full wherever throughput is concave in occupancy (prefill-heavy work: this fleet's
    replica, engine alone, closed loop: 4.01/s full, s / o 5.33 at two in flight and 6.25 at
    one). Measured, it is too noisy to use as it stands: a few seconds of queued intervals
    per 30 s read 1.8-4.9/s across alike replicas (seed 0); intervals judged full at both
    ends read 2.8/s for the one replica (selection: an interval that completed more drained).

    `--capacity xF`, an oracle: the law's estimate times F (the engine-alone figures above:
    4.01 / 5.33 = 0.75 at half occupancy)."""
    if how == "law":
        yield
        return
    observe, known = capacity.observe_columns, capacity.known_columns
    sums: dict[str, tuple[float, float]] = {}

    def observing(samples: Any, slots: Any, previous: Any, dt: float, room: Any = None) -> Any:
        after = observe(samples, slots, previous, dt, room)
        was, now = previous.optional, after.optional
        for row, address in enumerate(after.addresses):
            if not (after.has["scraped_at"][row] and previous.has["scraped_at"][row]):
                continue
            interval = float(now["scraped_at"][row] - was["scraped_at"][row])
            if interval <= 0.0 or not after.has["served"][row]:
                continue
            keep = math.exp(-interval / capacity.TAU_S)
            done, full = sums.get(address, (0.0, 0.0))
            # Full from the start with a queue behind it: an interval judged by its end too
            # would keep those that completed little (a replica that completed more drains).
            queued = previous.has["waiting"][row] and was["waiting"][row] >= 1.0
            if queued:
                done, full = keep * done + now["served"][row] * interval, keep * full + interval
            else:
                done, full = keep * done, keep * full
            sums[address] = (done, full)
        return after

    def knowing(service: Any) -> Any:
        ratio, is_known = known(service)
        if how.startswith("x"):
            return ratio * float(how[1:]), is_known
        ratio = ratio.copy()
        for row, address in enumerate(service.addresses):
            done, full = sums.get(address, (0.0, 0.0))
            if full >= FULL_TIME_S and done > 0.0:
                ratio[row] = min(ratio[row], done / full)
        return ratio, is_known

    capacity.observe_columns, capacity.known_columns = observing, knowing  # type: ignore[assignment]
    try:
        yield
    finally:
        capacity.observe_columns, capacity.known_columns = observe, known  # type: ignore[assignment]


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def play(
    args: argparse.Namespace, seed: int
) -> tuple[dict[str, dict[str, Any]], dict[str, float], float]:
    """One seed: per origin its figures (`Record.by_origin`), each region's replicas' prefix-
    cache hit rate (tokens found over looked up), and every replica's together."""
    run = DiscreteRun(scenario(args, seed), RunOptions(PolicyName(args.policy)))
    discrete.LENT_PLACEMENT = discrete.LentPlacement(args.lent)
    try:
        with lending(args.lend), full_capacity(args.capacity):
            by_origin = run.run().by_origin()
    finally:
        discrete.LENT_PLACEMENT = discrete.LentPlacement.LENDER_RING
    hits: dict[str, float] = {}
    for region in FLEET.regions:
        engines = [r.engine for r in run.replicas.values() if r.region == region]
        looked = sum(e.prefix_queries for e in engines)
        if looked:
            hits[region] = sum(e.prefix_hits for e in engines) / looked
    found = sum(r.engine.prefix_hits for r in run.replicas.values())
    looked = sum(r.engine.prefix_queries for r in run.replicas.values())
    return by_origin, hits, found / max(1, looked)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (the defaults with `argv` empty)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="heliostat", choices=[p.value for p in PolicyName])
    parser.add_argument("--seeds", default="0-11", help="e.g. 0-11")
    parser.add_argument(
        "--bound",
        type=float,
        default=None,
        help="affinity.bounded_load (default: heliostat's, per region)",
    )
    parser.add_argument("--load", type=float, default=0.65)
    parser.add_argument("--capacity-x", type=float, default=1.0)
    parser.add_argument("--slots", type=int, default=None, help="default: the file's")
    parser.add_argument("--blocks", type=int, default=None, help="default: the file's")
    parser.add_argument("--groups", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--lend", default=None, help="ORIGIN:RESCUER:SHARE, a what-if (see the docstring)"
    )
    parser.add_argument(
        "--capacity",
        default="law",
        help="law | full | xF: the capacity what-ifs of `full_capacity` (see its docstring)",
    )
    parser.add_argument(
        "--lent",
        default=discrete.LentPlacement.LENDER_RING.value,
        choices=[p.value for p in discrete.LentPlacement],
        help="where a lent request lands, a what-if (heliostat.planet.discrete.LentPlacement)",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = options()
    totals: list[float] = []
    hit_rates: list[float] = []
    per_origin: dict[str, list[float]] = {}
    region_hits: dict[str, list[float]] = {}
    for seed in seeds(args.seeds):
        by_origin, hits, hit_rate = play(args, seed)
        for region, rate in hits.items():
            region_hits.setdefault(region, []).append(rate)
        offered = sum(v["requests"] for v in by_origin.values())
        met = sum(v["requests"] * v["slo_attainment"] for v in by_origin.values())
        totals.append(met / offered)
        hit_rates.append(hit_rate)
        for region, v in by_origin.items():
            per_origin.setdefault(region, []).append(v["slo_attainment"])
        cells = {
            r: (round(v["slo_attainment"], 4), v["ttft_p99_ms"], round(v["cross_region_share"], 3))
            for r, v in by_origin.items()
        }
        print(f"seed {seed}: {totals[-1]:.4f} hits {hit_rates[-1]:.3f} {cells}", flush=True)
    means = {r: round(statistics.mean(v), 4) for r, v in per_origin.items()}
    hits_by_region = {r: round(statistics.mean(v), 3) for r, v in region_hits.items()}
    print(
        f"{args.policy} bound {args.bound} lend {args.lend} lent {args.lent} "
        f"capacity {args.capacity}: within the objective "
        f"{statistics.mean(totals):.4f} (min {min(totals):.4f}), hits "
        f"{statistics.mean(hit_rates):.3f}, per origin {means}, hits by region {hits_by_region}"
    )


if __name__ == "__main__":
    main()
