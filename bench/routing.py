"""Routing quality, side by side: heliostat against the routers of the field, on scenarios.

heliostat's claim: weights, priorities and shares pushed over xDS, with Envoy's own balancers
doing the per-request work, route LLM traffic at least as well as a per-request endpoint
picker, with no added hop. This benchmark measures it in one run, through real Envoys, on
scenarios that are data (`bench/scenarios/*.yaml`, format in bench/README.md):

- the scenario (`scenario`): regions and RTTs, simulated vLLM replicas per region (an edge
  region has none), the SLO, the kind of requests and phases of offered load per origin;
- the fleet (`routing_fleet`, `heliostat.lab.mesh`): one `heliostat sim fleet` process per
  region with replicas, started once per scenario and reset (`/sim/reset`: queues, prefix
  caches and statistics) before each policy's run; heliostat's policy derived from the
  scenario by the same operator rules for every scenario;
- the workload (`routing_workloads`): built once from the scenario's seed, calibrated to the
  replicas' computed capacity, offered at every region's gateway of the policy under test:
  same send times, same prompts, same origins;
- the policies, each reached through one Envoy gateway per region: `heliostat` (a real
  `heliostat serve` and its xDS-configured gateways), `round_robin`, `least_request`,
  `ring_hash` (static gateways, locality failover by RTT), `envoy_orca` (static gateways on
  Envoy's `load_aware_locality`, fed by the replicas' ORCA reports) (`routing_envoy`), and
  `picker` (llm-d's endpoint picker defaults, re-implemented in `routing_picker`);
- the measures (`routing_measure`, from the client and the replicas only), heliostat's
  published shares and weight reversals (`routing_shares`, sampled from /debug/state), and
  the issue's targets checked against them (`routing_targets`).

Before heliostat's run the fleet is idle (reset) and heliostat is given time to see it so (its
views steady, no region lending), up to a bound; the other policies keep no state between
runs (the picker is created fresh for its run). The time waited is reported.

Benchmarks report; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import routing_fleet as fleet
from bench import routing_picker, routing_targets
from bench.common import Size, table
from bench.routing_affinity import (
    GATEWAY_STATS,
    SPILL_LOG_LEVEL,
    per_replica,
    placement,
    spills,
    stat_deltas,
)
from bench.routing_envoy import STATIC_POLICIES, static_bootstrap
from bench.routing_measure import FIELDS, by_phase, measure, served_by
from bench.routing_picker import HASH_BLOCK_CHARS, Picker
from bench.routing_shares import Sampler, read_state, summarise
from bench.routing_workloads import Workload, build
from bench.scenario import Scenario, describe, load_all, scenario_files
from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from heliostat.lab.processes import EnvoyProcess, Process, free_port
from heliostat.policy import Model, load_policy
from heliostat.sim import loadgen
from heliostat.sim.tokens import CHARS_PER_TOKEN

POLICIES = ("heliostat", "round_robin", "least_request", "ring_hash", "envoy_orca", "picker")
BASELINES = POLICIES[1:]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CLIENT_TIMEOUT_S = 30.0
ORCA_STATS = (
    "lb_zone_routing_all_directly",
    "lb_zone_routing_sampled",
    "lb_zone_routing_cross_zone",
    "lb_recalculate_zone_structures",
)


@dataclass(frozen=True)
class Plan:
    settle_max_s: float
    """Longest wait for heliostat to see the reset fleet idle before its run."""


PLANS: Mapping[Size, Plan] = {
    "tiny": Plan(settle_max_s=0.5),
    "quick": Plan(settle_max_s=5.0),
    "full": Plan(settle_max_s=15.0),
}


def run(
    size: Size, workdir: Path, scenarios: Sequence[Path] = (), policies: Sequence[str] = ()
) -> dict[str, Any]:
    """The policies given (default: every one, in POLICIES' order) on every scenario file
    given (default: every file in bench/scenarios/). A run of some policies only, heliostat
    alone for one, compares versions of one policy; its targets against a baseline left out
    read "n/a" (`routing_targets`)."""
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown routing policies: {', '.join(unknown)} (known: {POLICIES})")
    chosen = tuple(p for p in POLICIES if p in policies) if policies else POLICIES
    paths = list(scenarios) or scenario_files(SCENARIOS)
    loaded = load_all(paths)  # every file checked before anything starts
    plan = PLANS[size]
    began = time.monotonic()
    load_before = os.getloadavg()
    workloads: dict[str, dict[str, dict[str, Any]]] = {}
    details: dict[str, dict[str, dict[str, Any]]] = {}
    setups: dict[str, dict[str, Any]] = {}
    for path, scenario in zip(paths, loaded, strict=True):
        where = workdir / scenario.name
        where.mkdir(parents=True, exist_ok=True)
        print(f"  scenario {scenario.name} ({path})", flush=True)
        entries, detail, setup = _run_scenario(scenario, size, where, plan, chosen)
        setups[scenario.name] = {"file": str(path), **setup}
        workloads[scenario.name] = entries
        details[scenario.name] = detail
    result: dict[str, Any] = {
        "size": size,
        "setup": {
            **_setup(size, plan, chosen),
            "scenarios": setups,
            "total_s": round(time.monotonic() - began, 1),
            # Other work on the machine skews timings: say how busy it was.
            "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
            "cpus": os.cpu_count(),
        },
        "workloads": workloads,
        "details": details,
    }
    # The protection target's figures for every policy, and the targets checked.
    result["protection"] = {
        name: routing_targets.protection(setups[name], details[name]) for name in workloads
    }
    result["targets"] = routing_targets.evaluate(result)
    return result


EAST_WEST = True
"""Whether heliostat's gateways serve and use the east-west hop (`start_mesh(east_west=...)`):
lent requests are placed by the rescuer's gateway in its own model cluster, with its own
users' in-flight counts. Off until `load_reports` counted lent requests once (the rescuer's
gateway reports them too: regional_surge 85.3% SLO, 151 refused, against the kept 97.2%);
with that, one pair of runs per scenario on busy cores favoured the hop (regional_surge
96.9% against 88.5%, edge_pop 99.0% against 96.5%) and the planet gave +0.6 / +1.2 points
(README, "the east-west hop")."""


def _run_scenario(
    scenario: Scenario, size: Size, workdir: Path, plan: Plan, policies: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    workload = build(scenario, size)
    processes: list[Process] = []
    began = time.monotonic()
    try:
        mesh = start_mesh(
            workdir,
            processes,
            per_region=fleet.per_region(scenario),
            model_overrides=fleet.model_overrides(scenario),
            endpoint_sim=fleet.endpoint_sim(scenario),
            regions=fleet.rtt_table(scenario),
            # heliostat's gateways only (the static ones are separate): a region's lent
            # requests go through the rescuer's east-west gateway, into its own cluster.
            east_west=EAST_WEST,
        )
        model = load_policy(mesh.policy_path).spec.models[0]
        # The static gateways only when a policy runs on them: heliostat alone leaves the
        # machine to its own processes.
        statics = (
            _start_static_gateways(workdir, processes, mesh, model, scenario)
            if set(STATIC_POLICIES) & set(policies)
            else {}
        )
        gateways = {p: {r: ports[p] for r, (_, ports) in statics.items()} for p in STATIC_POLICIES}
        gateways["heliostat"] = dict(mesh.gateways)
        setup_s = time.monotonic() - began
        entries: dict[str, dict[str, Any]] = {}
        details: dict[str, dict[str, Any]] = {}
        for policy in policies:
            entries[policy], details[policy] = _run_policy(
                mesh, scenario, workload, policy, gateways[policy], plan, statics
            )
    finally:
        for process in reversed(processes):
            process.stop()
    setup = {
        "scenario": describe(scenario),
        "fleet": fleet.describe(scenario),
        "workload": workload.describe(),
        "setup_s": round(setup_s, 1),
        "total_s": round(time.monotonic() - began, 1),
    }
    return entries, details, setup


def _start_static_gateways(
    workdir: Path, processes: list[Process], mesh: Mesh, model: Model, scenario: Scenario
) -> dict[str, tuple[EnvoyProcess, dict[str, int]]]:
    """One static Envoy per region, a listener per static policy: region -> (Envoy, ports)."""
    started: dict[str, tuple[EnvoyProcess, dict[str, int]]] = {}
    for region in scenario.regions:
        ports = {policy: free_port() for policy in STATIC_POLICIES}
        admin = free_port()
        bootstrap = static_bootstrap(
            region, ports, admin, mesh.replicas, scenario.rtt_ms, model, scenario.within_budget
        )
        gateway = EnvoyProcess(workdir, f"static-{region}", bootstrap, admin, log_level="warning")
        processes.append(gateway)
        gateway.start(wait=False)  # they start side by side
        started[region] = (gateway, ports)
    for gateway, _ in started.values():
        gateway.wait_ready()
    return started


def _run_policy(
    mesh: Mesh,
    scenario: Scenario,
    workload: Workload,
    policy: str,
    gateways: Mapping[str, int],
    plan: Plan,
    statics: Mapping[str, tuple[EnvoyProcess, dict[str, int]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    mesh.reset()
    _check_reset(mesh)
    detail: dict[str, Any] = {}
    if policy == "heliostat":
        detail["settle_s"] = round(_settle(mesh, scenario, plan.settle_max_s), 2)
    sampler = Sampler(mesh.heliostat, MODEL) if policy == "heliostat" else None
    orca_before = _orca_stats(statics) if policy == "envoy_orca" else {}
    gateway_before = _gateway_stats(mesh) if policy == "heliostat" else {}
    log_marks = _watch_spills(mesh) if policy == "heliostat" else {}
    shots = workload.shots(gateways)
    began = time.monotonic()
    if sampler is not None:
        sampler.start()
    try:
        if policy == "picker":
            report, picker_stats = asyncio.run(_send_with_picker(mesh, scenario, shots))
            detail["picker"] = picker_stats
        else:
            report = asyncio.run(loadgen.run(shots, timeout=CLIENT_TIMEOUT_S))
    finally:
        samples = sampler.stop() if sampler is not None else []
    detail["wall_s"] = round(time.monotonic() - began, 2)
    detail["load_average_1m"] = round(os.getloadavg()[0], 2)
    slo = scenario.slo.ttft_ms
    replica_stats = mesh.stats()
    entry = measure(report, replica_stats, slo, workload.seconds, CLIENT_TIMEOUT_S)
    detail["served_by"] = served_by(report)
    detail["placement"] = placement(report)
    detail["replicas"] = per_replica(replica_stats)
    detail["by_phase"] = by_phase(
        report, workload.phase_of, len(workload.phases), slo, CLIENT_TIMEOUT_S
    )
    if sampler is not None:
        published = summarise(samples, workload.seconds)
        entry["shares"] = published.pop("shares")
        entry["weight_reversals"] = published.pop("weight_reversals")
        entry["share_reversals"] = published.pop("share_reversals")
        entry["max_reversals_per_min"] = published.pop("max_reversals_per_min")
        detail["published"] = {**published, "sample_errors": sampler.errors}
    if policy == "heliostat":
        detail["gateway_stats"] = stat_deltas(gateway_before, _gateway_stats(mesh))
        detail["spills"] = _read_spills(mesh, log_marks)
    if policy == "envoy_orca":
        after = _orca_stats(statics)
        detail["load_aware_locality"] = {
            region: {k: after[region].get(k, 0) - orca_before[region].get(k, 0) for k in ORCA_STATS}
            for region in after
        }
    print(f"    {policy:<14} " + _brief(entry), flush=True)
    return entry, detail


def _orca_stats(
    statics: Mapping[str, tuple[EnvoyProcess, dict[str, int]]],
) -> dict[str, dict[str, int]]:
    """load_aware_locality's own counters on each static gateway (its locality decisions)."""
    found: dict[str, dict[str, int]] = {}
    for region, (gateway, _) in statics.items():
        stats = gateway.stats("^cluster\\.envoy_orca\\.lb_")
        found[region] = {k.removeprefix("cluster.envoy_orca."): v for k, v in stats.items()}
    return found


def _gateway_stats(mesh: Mesh) -> dict[str, dict[str, int]]:
    """heliostat's gateways' cluster counters that bear on affinity (`GATEWAY_STATS`)."""
    return {region: envoy.stats(GATEWAY_STATS) for region, envoy in mesh.envoys.items()}


def _set_log_level(envoy: EnvoyProcess, level: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{envoy.admin_port}/logging?{SPILL_LOG_LEVEL}={level}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def _watch_spills(mesh: Mesh) -> dict[str, int]:
    """Turn on the bounded-load balancer's debug lines on heliostat's gateways for the run;
    where each gateway's log stands now. (Envoy then writes a line or two per request: a
    cost charged to heliostat, never to a baseline.)"""
    marks = {}
    for region, envoy in mesh.envoys.items():
        _set_log_level(envoy, "debug")
        marks[region] = envoy.log_path.stat().st_size if envoy.log_path.exists() else 0
    return marks


def _read_spills(mesh: Mesh, marks: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per gateway, the spills its log showed since `marks` (`routing_affinity.spills`)."""
    found: dict[str, dict[str, Any]] = {}
    for region, envoy in mesh.envoys.items():
        _set_log_level(envoy, "info")
        with envoy.log_path.open("rb") as log:
            log.seek(marks.get(region, 0))
            text = log.read().decode(errors="replace")
        found[region] = spills(text, mesh.region_of, region)
    return found


def _check_reset(mesh: Mesh) -> None:
    """Every policy starts from the same fleet: empty queues, caches and counters."""
    for address, stats in mesh.stats().items():
        if stats["received"] or stats["prefix_cache"]["queries"]:
            raise RuntimeError(f"replica {address} kept state across /sim/reset: {stats}")


def candidate_regions(scenario: Scenario, origin: str) -> list[str]:
    """Where the picker may send a request from `origin`: the regions with replicas within
    the budget, nearest first; with none, the nearest region with replicas."""
    with_replicas = [r for r in scenario.by_distance(origin) if not scenario.is_edge(r)]
    near = set(scenario.within_budget(origin))
    return [r for r in with_replicas if r in near] or with_replicas[:1]


async def _send_with_picker(
    mesh: Mesh, scenario: Scenario, shots: Sequence[loadgen.Shot]
) -> tuple[loadgen.Report, dict[str, Any]]:
    """The picker scrapes in the client's event loop and names each request's endpoint."""
    endpoints = {a: region for region, addresses in mesh.replicas.items() for a in addresses}
    picker = Picker(
        endpoints,
        lambda origin: candidate_regions(scenario, origin),
        scenario.rtt_ms,
        model=MODEL,
        lru_blocks=_lru_blocks(scenario),
        origins=list(scenario.regions),
    )
    await picker.start()
    try:
        report = await loadgen.run(shots, timeout=CLIENT_TIMEOUT_S, prepare=picker.prepare)
    finally:
        await picker.stop()
    return report, picker.describe_stats()


def _lru_blocks(scenario: Scenario) -> int:
    """Prefix-index blocks per endpoint: as many characters as the largest KV pool holds."""
    pools = [
        int(k.get("num_gpu_blocks", 2048)) * int(k.get("block_size", 16))
        for r in scenario.regions
        for k in scenario.knobs(r)
    ]
    return max(pools) * CHARS_PER_TOKEN // HASH_BLOCK_CHARS


def _settle(mesh: Mesh, scenario: Scenario, limit_s: float) -> float:
    """Wait (up to `limit_s`) until heliostat's views are steady on the idle fleet; seconds."""
    began = time.monotonic()
    previous: Any = None
    while time.monotonic() - began < limit_s:
        try:
            state = mesh.heliostat.state()
            current = read_state(state, MODEL)
            if current == previous and _idle(state, scenario):
                break
            previous = current
        except Exception:  # a slow admin answer is not a reason to stop the benchmark
            pass
        time.sleep(0.5)  # a signal interval: a steady view has been recomputed since
    return time.monotonic() - began


def _idle(state: Mapping[str, Any], scenario: Scenario) -> bool:
    """Every endpoint healthy, and every region with replicas keeps its traffic at home."""
    shares, _ = read_state(state, MODEL)
    for region, clusters in state["views"]["regions"].items():
        cluster = clusters.get(MODEL)
        if cluster is None:
            return False
        if any(str(e["health"]).upper() != "HEALTHY" for e in cluster["endpoints"]):
            return False
        if not scenario.is_edge(region) and shares.get(region) != {region: 1.0}:
            return False
    return True


def _brief(entry: Mapping[str, Any]) -> str:
    return (
        f"n={entry['requests']} err={entry['errors']} refused={entry['refused']} "
        f"ttft p50/p99={entry['ttft_p50_ms']}/{entry['ttft_p99_ms']} ms "
        f"slo={entry['slo_attainment']:.3f} goodput={entry['goodput_rps']} "
        f"hit={entry['prefix_hit_rate']:.2f} cross={entry['cross_region_share']:.2f}"
    )


def _setup(size: Size, plan: Plan, chosen: Sequence[str] = POLICIES) -> dict[str, Any]:
    return {
        "size": size,
        "heliostat_settle_max_s": plan.settle_max_s,
        "order": "for each scenario, policies in this order, the fleet reset before each",
        "policies": {
            "heliostat": "heliostat serve + its xDS-configured Envoy per region, with the "
            "operator policy derived from the scenario (routing_fleet)",
            "round_robin": "static Envoy per region, locality failover by RTT, ROUND_ROBIN",
            "least_request": "static Envoy per region, locality failover by RTT, LEAST_REQUEST",
            "ring_hash": "static Envoy per region, locality failover by RTT, RING_HASH on "
            "heliostat's prefix key, no bounded load",
            "envoy_orca": "static Envoy per region, load_aware_locality (least request inside "
            "a locality) over the regions within the budget, fed by the replicas' ORCA "
            "reports (asked for with endpoint-load-metrics-format: TEXT); the rest by RTT",
            "picker": "llm-d endpoint picker defaults re-implemented in the harness, "
            "header -> per-endpoint cluster on a static Envoy",
        },
        "policy_order": list(chosen),
        "picker": routing_picker.describe(),
        "client": {
            "generator": "heliostat.sim.loadgen (open loop, streamed, aiohttp)",
            "timeout_s": CLIENT_TIMEOUT_S,
            "ttft": "send to first streamed content byte, at the client",
        },
        "measures": {
            "errors": "failed requests: non-200 answers that are not fast refusals, "
            "transport errors, timeouts",
            "refused": "429 or 503 answered by the gateway itself (no x-replica-id) in under 50 ms",
            "slo_attainment": "share of all requests served with TTFT <= the scenario's "
            "ttft_ms (refused and failed requests miss it)",
            "goodput_rps": "requests served within the SLO / seconds of offered load",
            "admitted_ttft_p99_ms": "TTFT p99 of the requests not refused, failed ones "
            f"counted at the client timeout ({CLIENT_TIMEOUT_S:g} s)",
            "cross_region_share": "served requests answered by a replica outside their "
            "origin region (x-replica-region response header)",
            "prefix_hit_rate": "replicas' /sim/stats prefix_cache hits / queries (tokens)",
            "orca_reports": "answers carrying an endpoint-load-metrics header",
            "shares": "heliostat only: per view, the share of its traffic each region gets "
            "(first priority's locality weights), sampled from /debug/state",
            "weight_reversals": "heliostat only: per endpoint, changes of direction of its "
            "EDS weight while load was offered (largest over the views)",
        },
    }


_LABELS = {
    "requests": "requests",
    "errors": "errors",
    "refused": "refused",
    "ttft_p50_ms": "TTFT p50 ms",
    "ttft_p99_ms": "TTFT p99 ms",
    "slo_attainment": "SLO met",
    "goodput_rps": "goodput rps",
    "prefix_hit_rate": "prefix hit rate",
    "cross_region_share": "cross-region",
    "throughput_rps": "throughput rps",
    "admitted_ttft_p99_ms": "admitted p99 ms",
    "orca_reports": "ORCA reports",
}


def summary(result: dict[str, Any]) -> str:
    """Per scenario, the policies side by side; then the targets."""
    blocks = []
    for name, by_policy in result["workloads"].items():
        policies = [p for p in POLICIES if p in by_policy]
        rows = [[_LABELS[key], *(by_policy[p].get(key, "—") for p in policies)] for key in FIELDS]
        blocks.append(f"{name}\n\n" + table(["", *policies], rows))
    checks = result.get("targets") or routing_targets.evaluate(result)
    rows = [
        [c["scenario"], c["target"], c["heliostat"], c["reference"], c["verdict"]] for c in checks
    ]
    blocks.append(
        "targets (heliostat against the baselines)\n\n"
        + table(["scenario", "target", "heliostat", "reference", "verdict"], rows)
    )
    return "\n\n".join(blocks)
