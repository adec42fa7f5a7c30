"""Intra-region routing, measured: the routing benchmark's fleet and workloads, with what the
benchmark does not record (how often weights turned round, what the clusters' LB was).

A script beside the `bench` package, not a module of it: it imports its pieces
(`bench.routing_fleet`, `bench.routing_workloads`, `bench.routing` helpers) and runs chosen
workloads for chosen durations against chosen policies, then samples while heliostat runs:

- heliostat's `/debug/state` every 0.25 s: every endpoint's weight in its own region's view,
  and the model cluster's lb_policy in every view;
- every heliostat gateway's Envoy `/clusters` every 0.5 s: the weight Envoy really has.

Reversals are counted per endpoint as in `heliostat.demo.observe.reversals` (a series that
goes up then down, or down then up, turns once), over the run; per minute = turns / run
minutes. The figures of the benchmark itself (TTFT p50/p99, SLO attainment, prefix hits)
come from `bench.routing_measure.measure`, unchanged.

    .venv/bin/python bench/measure/intra_routing.py --workloads chat shared_prefix \
        --seconds 40 --policies heliostat least_request ring_hash picker --out FILE

`--mixed-speeds 1,3` alternates replica speeds (each region's replicas get 1, 3, 1, ...),
with offered load scaled to the fleet's real capacity; `--heliostat-model JSON` merges into
heliostat's model section (e.g. '{"affinity": {"mode": "always"}}').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import routing_fleet as fleet
from bench import routing_workloads as workloads
from bench.routing import (
    CLIENT_TIMEOUT_S,
    _check_reset,
    _send_with_picker,
    _settle,
    _start_static_gateways,
)
from bench.routing_envoy import STATIC_POLICIES, StaticGateway, static_bootstrap
from bench.routing_measure import measure, served_by
from heliostat.demo.observe import reversals
from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from heliostat.lab.processes import Process, free_port
from heliostat.policy import load_policy
from heliostat.sim import loadgen


class Sampler:
    """Polls heliostat and its gateways in a thread while a heliostat run is under way."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.stop = threading.Event()
        self.state: list[tuple[float, dict[str, int], dict[str, str]]] = []
        self.envoy: list[tuple[float, dict[str, int]]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.trace: list[tuple[float, str, int, dict[str, Any]]] | None = None

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        last_envoy = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                views = self.mesh.heliostat.state()["views"]["regions"]
                weights: dict[str, int] = {}
                lb: dict[str, str] = {}
                for region, clusters in views.items():
                    cluster = clusters.get(MODEL, {})
                    lb[region] = cluster.get("lb_policy", "least_request")
                    for e in cluster.get("endpoints", []):
                        if e["region"] == region:
                            weights[e["address"]] = int(e["weight"])
                            if self.trace is not None:
                                self.trace.append(
                                    (round(now, 2), e["address"], e["weight"], e["reason"])
                                )
                self.state.append((now, weights, lb))
                if now - last_envoy >= 0.5:
                    last_envoy = now
                    seen: dict[str, int] = {}
                    for region, envoy in self.mesh.envoys.items():
                        for address, host in envoy.hosts(MODEL).items():
                            if address in self.mesh.replicas[region]:
                                seen[address] = int(host.get("weight", "0"))
                    self.envoy.append((now, seen))
            except Exception:  # a slow admin answer is a missed sample, not a failed run
                pass
            self.stop.wait(0.25)

    def summary(self) -> dict[str, Any]:
        def turns(samples: list[tuple[float, dict[str, int]]]) -> dict[str, Any]:
            if len(samples) < 2:
                return {}
            minutes = (samples[-1][0] - samples[0][0]) / 60
            series: dict[str, list[int]] = {}
            for _, weights in samples:
                for address, w in weights.items():
                    values = series.setdefault(address, [])
                    if not values or values[-1] != w:
                        values.append(w)
            per = {a: reversals(v) for a, v in series.items()}
            changes = {a: len(v) - 1 for a, v in series.items()}
            return {
                "minutes": round(minutes, 2),
                "reversals_per_endpoint_per_minute_max": round(max(per.values()) / minutes, 2),
                "reversals_per_endpoint_per_minute_mean": round(
                    sum(per.values()) / len(per) / minutes, 2
                ),
                "weight_changes_per_endpoint_per_minute_mean": round(
                    sum(changes.values()) / len(changes) / minutes, 2
                ),
                "share_of_samples_at_full_weight": round(
                    sum(1 for _, ws in samples for w in ws.values() if w == 100)
                    / max(1, sum(len(ws) for _, ws in samples)),
                    3,
                ),
            }

        lb_series: dict[str, list[str]] = {}
        for _, _, lb in self.state:
            for region, policy in lb.items():
                values = lb_series.setdefault(region, [])
                if not values or values[-1] != policy:
                    values.append(policy)
        return {
            "heliostat_views": turns([(t, w) for t, w, _ in self.state]),
            "envoy_clusters": turns(self.envoy),
            "lb_policy_sequence": lb_series,
        }


def _changes(trace: list[tuple[float, str, int, dict[str, Any]]]) -> list[Any]:
    """The samples where an endpoint's weight changed, with the reason it then had."""
    last: dict[str, int] = {}
    kept = []
    for t, address, weight, reason in trace:
        if last.get(address) != weight:
            kept.append([t, address, weight, reason])
            last[address] = weight
    return kept


def _mixed(speeds: list[float]) -> Any:
    def endpoint_sim(replicas: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
        result = {}
        for addresses in replicas.values():
            for i, address in enumerate(addresses):
                result[address] = {
                    "num_gpu_blocks": fleet.KV_BLOCKS,
                    "block_size": fleet.BLOCK_SIZE,
                    "speed": speeds[i % len(speeds)],
                }
        return result

    return endpoint_sim


def _oracle_gateways(
    workdir: Path, processes: list[Process], mesh: Mesh, model: Any, speeds: list[float]
) -> dict[str, dict[str, int]]:
    """The static gateways, with one more policy, `lr_speed_weights`: least-request with each
    replica's weight proportional to its (known) speed, the oracle of capacity weights."""
    gateways: dict[str, dict[str, int]] = {p: {} for p in (*STATIC_POLICIES, "lr_speed_weights")}
    for region in fleet.PER_REGION:
        ports = {policy: free_port() for policy in STATIC_POLICIES}
        admin = free_port()
        bootstrap = static_bootstrap(region, ports, admin, mesh.replicas, fleet.rtt_ms, model)
        for cluster in bootstrap["static_resources"]["clusters"]:
            if cluster["name"] != "round_robin":
                continue
            cluster["lb_policy"] = "LEAST_REQUEST"
            for locality in cluster["load_assignment"]["endpoints"]:
                members = mesh.replicas[locality["locality"]["region"]]
                for entry in locality["lb_endpoints"]:
                    socket = entry["endpoint"]["address"]["socket_address"]
                    address = f"{socket['address']}:{socket['port_value']}"
                    speed = speeds[members.index(address) % len(speeds)]
                    entry["load_balancing_weight"] = round(100 * speed / max(speeds))
        gateway = StaticGateway(workdir, f"static-{region}", bootstrap, admin)
        processes.append(gateway)
        gateway.start()
        for policy, port in ports.items():
            gateways[policy][region] = port
        gateways["lr_speed_weights"][region] = ports["round_robin"]
    return gateways


def _workload(name: str, seconds: float, speeds: list[float] | None) -> workloads.Workload:
    built = workloads.build(name, seconds)
    if not speeds:
        return built
    # Mixed speeds: offer the same share of the fleet's *real* capacity. A replica's capacity
    # is nearly proportional to its speed; each region's replicas cycle through `speeds`.
    rng = random.Random(f"{workloads.SEED}-{name}-mixed")
    factor: dict[str, float] = {}
    for region, count in fleet.PER_REGION.items():
        mean = sum(speeds[i % len(speeds)] for i in range(count)) / count
        factor[region] = mean / fleet.SPEED
    mix = {"chat": workloads.chat_mix, "shared_prefix": workloads.shared_prefix_mix}[name]
    load = {
        r: (workloads.CHAT_LOAD if name == "chat" else workloads.SHARED_PREFIX_LOAD) * factor[r]
        for r in fleet.PER_REGION
    }
    return workloads._build(
        name,
        mix(rng),
        built.capacity_rps,
        load,
        seconds,
        rng,
        f"{built.description}; replica speeds cycling {speeds}, load scaled to capacity",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=["chat", "shared_prefix"])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument(
        "--policies", nargs="+", default=["heliostat", "least_request", "ring_hash", "picker"]
    )
    parser.add_argument("--heliostat-model", default="{}", help="JSON merged into the model")
    parser.add_argument("--mixed-speeds", default="", help="e.g. 1,3")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trace", action="store_true", help="keep heliostat's weight changes")
    args = parser.parse_args()
    speeds = [float(s) for s in args.mixed_speeds.split(",") if s]
    overrides = fleet.model_overrides()
    extra = json.loads(args.heliostat_model)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key] = {**overrides[key], **value}
        else:
            overrides[key] = value
    results: dict[str, Any] = {
        "setup": {
            "load_average_1m_start": os.getloadavg()[0],
            "seconds": args.seconds,
            "heliostat_model": overrides,
            "mixed_speeds": speeds,
        },
        "workloads": {},
    }
    processes: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="intra-routing-") as tmp:
        workdir = Path(tmp)
        try:
            mesh = start_mesh(
                workdir,
                processes,
                per_region=fleet.PER_REGION,
                slots=fleet.SLOTS,
                speed=fleet.SPEED,
                model_overrides=overrides,
                endpoint_sim=_mixed(speeds) if speeds else fleet.endpoint_sim,
            )
            model = load_policy(mesh.policy_path).spec.models[0]
            if speeds:
                gateways = _oracle_gateways(workdir, processes, mesh, model, speeds)
            else:
                gateways = _start_static_gateways(workdir, processes, mesh, model)
            gateways["heliostat"] = dict(mesh.gateways)
            for name in args.workloads:
                workload = _workload(name, args.seconds, speeds)
                for policy in args.policies:
                    mesh.reset()
                    _check_reset(mesh)
                    detail: dict[str, Any] = {}
                    if policy == "heliostat":
                        detail["settle_s"] = round(_settle(mesh, 15.0), 2)
                    shots = workload.shots(gateways[policy])
                    if policy == "picker":
                        report, _ = asyncio.run(_send_with_picker(mesh, shots))
                    elif policy == "heliostat":
                        with Sampler(mesh) as sampler:
                            if args.trace:
                                sampler.trace = []
                            report = asyncio.run(loadgen.run(shots, timeout=CLIENT_TIMEOUT_S))
                        detail["stability"] = sampler.summary()
                        if sampler.trace is not None:
                            detail["trace"] = _changes(sampler.trace)
                    else:
                        report = asyncio.run(loadgen.run(shots, timeout=CLIENT_TIMEOUT_S))
                    entry = measure(report, mesh.stats(), fleet.SLO_TTFT_MS)
                    entry.update(detail)
                    entry["served_by"] = served_by(report)
                    entry["load_average_1m"] = round(os.getloadavg()[0], 2)
                    results["workloads"].setdefault(name, {})[policy] = entry
                    print(name, policy, json.dumps(entry), flush=True)
        finally:
            for process in reversed(processes):
                process.stop()
    results["setup"]["load_average_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    _print_table(results)
    return 0


def _print_table(results: Mapping[str, Any]) -> None:
    keys = ("requests", "errors", "ttft_p50_ms", "ttft_p99_ms", "slo_attainment")
    for name, by_policy in results["workloads"].items():
        print(f"\n{name}")
        print("policy".ljust(14), *(k.rjust(14) for k in (*keys, "prefix_hit", "rev/ep/min")))
        for policy, e in by_policy.items():
            stab = e.get("stability", {}).get("envoy_clusters", {})
            turns = stab.get("reversals_per_endpoint_per_minute_max", "")
            print(
                policy.ljust(14),
                *(str(e[k]).rjust(14) for k in keys),
                str(e["prefix_hit_rate"]).rjust(14),
                str(turns).rjust(14),
            )


if __name__ == "__main__":
    sys.exit(main())
