"""Routing quality, side by side: heliostat against the routers of the field, on the same work.

heliostat's claim: endpoint weights pushed over xDS, plus Envoy's own least-request and
bounded-load hashing, route LLM traffic about as well as a per-request picker, with no added
hop. This benchmark measures it in one run, through real Envoys, on one simulated fleet:

- the fleet (`routing_fleet`): 3 regions, 4 / 3 / 1 simulated vLLM replicas (us-east,
  eu-west, ap-southeast; the lab's RTTs), one `heliostat sim fleet` process per region,
  started once and reset (`/sim/reset`: queues, prefix caches and statistics) before each
  policy's run;
- the workloads (`routing_workloads`): `chat`, `shared_prefix`, `regional_surge`, each built
  once from a seed, calibrated to the replicas' computed capacity, and offered at every
  region's gateway of the policy under test: same send times, same prompts, same origins;
- the policies, each reached through one Envoy gateway per region:
  `heliostat` (a real `heliostat serve` with the operator's policy and its xDS-configured
  gateways), `round_robin`, `least_request`, `ring_hash` (static gateways with RTT-ordered
  locality failover, `routing_envoy`), and `picker` (llm-d's endpoint picker defaults,
  re-implemented in `routing_picker`, routing each request to the endpoint it names);
- the measures (`routing_measure`): requests, errors, TTFT p50/p99, SLO attainment, prefix
  hit rate, cross-region share and throughput, from the client and the replicas only.

Before heliostat's run the fleet is idle (reset) and heliostat is given time to see it idle
(its weights at the maximum and no overflow), up to a bound; the other policies keep no state
between runs (the picker is created fresh for its run). The time waited is reported.

Benchmarks report; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import routing_fleet as fleet
from bench import routing_picker
from bench.common import Size, table
from bench.routing_envoy import STATIC_POLICIES, StaticGateway, static_bootstrap
from bench.routing_measure import FIELDS, measure, per_origin_ttft_p99, served_by
from bench.routing_picker import HASH_BLOCK_CHARS, Picker
from bench.routing_workloads import WORKLOADS, Workload, build
from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from heliostat.lab.processes import Process, free_port
from heliostat.policy import Model, load_policy
from heliostat.sim import loadgen
from heliostat.sim.tokens import CHARS_PER_TOKEN

POLICIES = ("heliostat", "round_robin", "least_request", "ring_hash", "picker")
CLIENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Plan:
    durations_s: Mapping[str, float]
    """Seconds of arrivals per run, by workload (shared_prefix runs longer: its caches warm
    up per region, and a short run would measure mostly cold starts)."""
    settle_max_s: float
    """Longest wait for heliostat to see the reset fleet idle before its run."""


PLANS: Mapping[Size, Plan] = {
    "tiny": Plan(dict.fromkeys(WORKLOADS, 0.5), settle_max_s=0.5),
    "quick": Plan({"chat": 5.0, "shared_prefix": 7.0, "regional_surge": 4.0}, settle_max_s=5.0),
    "full": Plan({"chat": 40.0, "shared_prefix": 60.0, "regional_surge": 40.0}, settle_max_s=15.0),
}


def run(size: Size, workdir: Path) -> dict[str, Any]:
    plan = PLANS[size]
    workloads = [build(name, plan.durations_s[name]) for name in WORKLOADS]
    processes: list[Process] = []
    began = time.monotonic()
    load_before = os.getloadavg()
    try:
        mesh = start_mesh(
            workdir,
            processes,
            per_region=fleet.PER_REGION,
            slots=fleet.SLOTS,
            speed=fleet.SPEED,
            model_overrides=fleet.model_overrides(),
            endpoint_sim=fleet.endpoint_sim,
        )
        model = load_policy(mesh.policy_path).spec.models[0]
        gateways = _start_static_gateways(workdir, processes, mesh, model)
        gateways["heliostat"] = dict(mesh.gateways)
        setup_s = time.monotonic() - began
        results: dict[str, dict[str, dict[str, float | int]]] = {}
        details: dict[str, dict[str, dict[str, Any]]] = {}
        for workload in workloads:
            for policy in POLICIES:
                entry, detail = _run_policy(mesh, workload, policy, gateways[policy], plan)
                results.setdefault(workload.name, {})[policy] = entry
                details.setdefault(workload.name, {})[policy] = detail
    finally:
        for process in reversed(processes):
            process.stop()
    return {
        "size": size,
        "setup": {
            **_setup(size, plan, workloads, setup_s, time.monotonic() - began),
            # Other work on the machine skews timings: say how busy it was.
            "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
            "cpus": os.cpu_count(),
        },
        "workloads": results,
        "details": details,
    }


def _start_static_gateways(
    workdir: Path, processes: list[Process], mesh: Mesh, model: Model
) -> dict[str, dict[str, int]]:
    """One static Envoy per region, a listener per static policy; policy -> region -> port."""
    gateways: dict[str, dict[str, int]] = {p: {} for p in STATIC_POLICIES}
    launched = []
    for region in fleet.PER_REGION:
        ports = {policy: free_port() for policy in STATIC_POLICIES}
        admin = free_port()
        bootstrap = static_bootstrap(region, ports, admin, mesh.replicas, fleet.rtt_ms, model)
        gateway = StaticGateway(workdir, f"static-{region}", bootstrap, admin)
        processes.append(gateway)
        gateway.start(wait=False)  # the three start side by side
        launched.append(gateway)
        for policy, port in ports.items():
            gateways[policy][region] = port
    for gateway in launched:
        gateway.wait_ready()
    return gateways


def _run_policy(
    mesh: Mesh, workload: Workload, policy: str, gateways: Mapping[str, int], plan: Plan
) -> tuple[dict[str, float | int], dict[str, Any]]:
    mesh.reset()
    _check_reset(mesh)
    detail: dict[str, Any] = {}
    if policy == "heliostat":
        detail["settle_s"] = round(_settle(mesh, plan.settle_max_s), 2)
    shots = workload.shots(gateways)
    began = time.monotonic()
    if policy == "picker":
        report, picker_stats = asyncio.run(_send_with_picker(mesh, shots))
        detail["picker"] = picker_stats
    else:
        report = asyncio.run(loadgen.run(shots, timeout=CLIENT_TIMEOUT_S))
    detail["wall_s"] = round(time.monotonic() - began, 2)
    detail["load_average_1m"] = round(os.getloadavg()[0], 2)
    entry = measure(report, mesh.stats(), fleet.SLO_TTFT_MS)
    detail["served_by"] = served_by(report)
    detail["ttft_p99_ms_by_origin"] = per_origin_ttft_p99(report)
    print(f"  {workload.name:<15} {policy:<14} " + _brief(entry), flush=True)
    return entry, detail


def _check_reset(mesh: Mesh) -> None:
    """Every policy starts from the same fleet: empty queues, caches and counters."""
    for address, stats in mesh.stats().items():
        if stats["received"] or stats["prefix_cache"]["queries"]:
            raise RuntimeError(f"replica {address} kept state across /sim/reset: {stats}")


async def _send_with_picker(
    mesh: Mesh, shots: Sequence[loadgen.Shot]
) -> tuple[loadgen.Report, dict[str, Any]]:
    """The picker scrapes in the client's event loop and names each request's endpoint."""
    endpoints = {a: region for region, addresses in mesh.replicas.items() for a in addresses}
    picker = Picker(
        endpoints,
        fleet.within_budget,
        fleet.rtt_ms,
        model=MODEL,
        lru_blocks=_lru_blocks(),
    )
    await picker.start()
    try:
        report = await loadgen.run(shots, timeout=CLIENT_TIMEOUT_S, prepare=picker.prepare)
    finally:
        await picker.stop()
    return report, picker.describe_stats()


def _lru_blocks() -> int:
    """Prefix-index blocks per endpoint: as many characters as a replica's KV pool holds."""
    return fleet.KV_BLOCKS * fleet.BLOCK_SIZE * CHARS_PER_TOKEN // HASH_BLOCK_CHARS


def _settle(mesh: Mesh, limit_s: float) -> float:
    """Wait (up to `limit_s`) until heliostat's views show the idle fleet; seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        try:
            if _idle(mesh.heliostat.state()):
                break
        except Exception:  # a slow admin answer is not a reason to stop the benchmark
            pass
        time.sleep(0.1)
    return time.monotonic() - began


def _idle(state: Mapping[str, Any]) -> bool:
    """Every region's view: full weights, and priority 0 holds only the region's own."""
    for region, clusters in state["views"]["regions"].items():
        cluster = clusters.get(MODEL)
        if cluster is None:
            return False
        for endpoint in cluster["endpoints"]:
            if endpoint["weight"] < 100 or str(endpoint["health"]).upper() != "HEALTHY":
                return False
            if endpoint["priority"] == 0 and endpoint["region"] != region:
                return False
    return True


def _brief(entry: Mapping[str, float | int]) -> str:
    return (
        f"n={entry['requests']} err={entry['errors']} "
        f"ttft p50/p99={entry['ttft_p50_ms']}/{entry['ttft_p99_ms']} ms "
        f"slo={entry['slo_attainment']:.2f} hit={entry['prefix_hit_rate']:.2f} "
        f"cross={entry['cross_region_share']:.2f} rps={entry['throughput_rps']}"
    )


def _setup(
    size: Size, plan: Plan, workloads: Sequence[Workload], setup_s: float, total_s: float
) -> dict[str, Any]:
    return {
        "size": size,
        "duration_s_per_run": dict(plan.durations_s),
        "heliostat_settle_max_s": plan.settle_max_s,
        "order": "for each workload, policies in this order, the fleet reset before each",
        "policies": {
            "heliostat": "heliostat serve + its xDS-configured Envoy per region: ring hash "
            "with bounded load on the prompt prefix key, control-law weights, bounded overflow",
            "round_robin": "static Envoy per region, locality failover by RTT, ROUND_ROBIN",
            "least_request": "static Envoy per region, locality failover by RTT, LEAST_REQUEST",
            "ring_hash": "static Envoy per region, locality failover by RTT, RING_HASH on "
            "heliostat's prefix key, no bounded load",
            "picker": "llm-d endpoint picker defaults re-implemented in the harness, "
            "header -> per-endpoint cluster on a static Envoy",
        },
        "policy_order": list(POLICIES),
        "fleet": fleet.describe(),
        "picker": {**routing_picker.describe(), "lru_blocks_per_endpoint": _lru_blocks()},
        "workloads": {w.name: w.describe() for w in workloads},
        "client": {
            "generator": "heliostat.sim.loadgen (open loop, streamed, aiohttp)",
            "timeout_s": CLIENT_TIMEOUT_S,
            "ttft": "send to first streamed content byte, at the client",
        },
        "measures": {
            "cross_region_share": "successful requests answered by a replica outside the "
            "gateway's region (x-replica-region response header)",
            "prefix_hit_rate": "replicas' /sim/stats prefix_cache hits / queries (tokens)",
            "slo_attainment": f"share of all requests with TTFT <= {fleet.SLO_TTFT_MS:g} ms",
        },
        "setup_s": round(setup_s, 1),
        "total_s": round(total_s, 1),
    }


_LABELS = {
    "requests": "requests",
    "errors": "errors",
    "ttft_p50_ms": "TTFT p50 ms",
    "ttft_p99_ms": "TTFT p99 ms",
    "slo_attainment": "SLO attainment",
    "prefix_hit_rate": "prefix hit rate",
    "cross_region_share": "cross-region share",
    "throughput_rps": "throughput rps",
}


def summary(result: dict[str, Any]) -> str:
    """Per workload, the five policies side by side; then heliostat vs least_request vs picker."""
    blocks = []
    setup = result.get("setup", {})
    slo = setup.get("fleet", {}).get("slo_ttft_ms", fleet.SLO_TTFT_MS)
    for name, by_policy in result["workloads"].items():
        policies = [p for p in POLICIES if p in by_policy]
        rows = [[_LABELS[key], *(by_policy[p][key] for p in policies)] for key in FIELDS]
        blocks.append(f"{name}\n\n" + table(["", *policies], rows))
    notes = []
    for name, by_policy in result["workloads"].items():
        trio = [p for p in ("heliostat", "least_request", "picker") if p in by_policy]
        p99 = " / ".join(f"{by_policy[p]['ttft_p99_ms']:g}" for p in trio)
        attained = " / ".join(f"{by_policy[p]['slo_attainment']:.0%}" for p in trio)
        hits = " / ".join(f"{by_policy[p]['prefix_hit_rate']:.0%}" for p in trio)
        notes.append(
            f"- {name}: TTFT p99 {p99} ms, SLO ({slo:g} ms) {attained}, prefix hits {hits}"
        )
    closing = "heliostat / least_request / picker:\n" + "\n".join(notes)
    return "\n\n".join([*blocks, closing])
