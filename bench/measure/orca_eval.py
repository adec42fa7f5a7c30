"""Envoy 1.40's ORCA-driven load balancers against least-request, on simulated vLLM replicas.

What is evaluated (issue 10, item 5): could per-response load feedback be heliostat's fast
inner loop? vLLM (and `heliostat sim`, which answers exactly as vLLM does) returns an ORCA
load report in the `endpoint-load-metrics` response header when the request carries
`endpoint-load-metrics-format: TEXT`, on unary answers only: a streamed answer carries none.

Three clusters of the same replicas, each behind its own listener of one static Envoy 1.40
whose node is in region `local`; every route adds `endpoint-load-metrics-format: TEXT` and
`x-heliostat-origin-region: local` (the replicas charge the RTT from it):

- `least_request`: LEAST_REQUEST (choice-of-two), what heliostat configures;
- `cswrr`: `client_side_weighted_round_robin`, utilisation from
  `named_metrics.kv_cache_usage_perc` (blackout 1 s, update 1 s, so it may act within a run);
- `lal`: `load_aware_locality` (child least-request, update 1 s): it weighs the localities
  of priority 0 by reported headroom and keeps traffic local while the local locality is
  within 0.1 of the others' utilisation.

Experiments (each variant gets the same seeded arrivals; replicas are reset before each):

1. `mixed` (intra-region): the local region only, two replicas of speeds 1 and 3 (4 slots,
   256 KV blocks), offered 70% of their joint capacity; unary, then streamed.
2. `spill` (between regions, both in priority 0 as heliostat puts an in-budget rescuer):
   one local replica (speed 1.5) offered 150% of its capacity, two remote replicas
   (speed 1.5, 80 ms away) idle otherwise; unary, then streamed. (least_request here has
   the remote locality at priority 1, Envoy's plain failover, which moves nothing while the
   local host is healthy.)

Figures: per-replica share of requests, TTFT p50/p99 (streamed) or latency p50/p99 (unary:
the whole answer), share of answers that carried a load report, share served remotely.

    .venv/bin/python bench/measure/orca_eval.py --seconds 30 --out bench/measure/results/orca.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import percentile
from bench.routing_envoy import StaticGateway
from bench.routing_workloads import calibrate, chat_mix
from heliostat.lab.mesh import MODEL
from heliostat.lab.processes import LOCALHOST, Process, SimFleet, free_port, write_policy
from heliostat.sim import loadgen
from heliostat.sim.orca import FORMAT_HEADER, REPORT_HEADER

SLOTS = 4
KV_BLOCKS = 256
BASE_SPEED = 1.5  # bench.routing_fleet's speed, at which `calibrate` measures capacity
RTT_MS = 80
VARIANTS = ("least_request", "cswrr", "lal", "lal_kv", "lal_kv_waiting")
# load_aware_locality told which of vLLM's named metrics make its utilisation (the field is
# documented as not implemented yet; measured to see whether 1.40 reads it).
LAL_METRICS = {
    "lal_kv": ["named_metrics.kv_cache_usage_perc"],
    "lal_kv_waiting": [
        "named_metrics.kv_cache_usage_perc",
        "named_metrics.num_requests_waiting",
    ],
}
_LB = "envoy.load_balancing_policies"
_HTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HCM = "envoy.filters.network.http_connection_manager"
_TYPES = "type.googleapis.com/envoy.extensions.load_balancing_policies"


def _policy(replicas: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, Any]:
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": "orca"},
        "spec": {
            "regions": {"local": {"rtt_ms": {"remote": RTT_MS}}, "remote": {}},
            "models": [
                {
                    "name": MODEL,  # the model the chat mix's bodies name
                    "endpoints": [
                        {
                            "address": address,
                            "region": region,
                            "sim": {
                                "max_num_seqs": SLOTS,
                                "speed": speed,
                                "num_gpu_blocks": KV_BLOCKS,
                                "block_size": 16,
                            },
                        }
                        for region, members in replicas.items()
                        for address, speed in members
                    ],
                }
            ],
        },
    }


def _endpoint(address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}


def _least_request() -> dict[str, Any]:
    return {
        "typed_extension_config": {
            "name": f"{_LB}.least_request",
            "typed_config": {"@type": f"{_TYPES}.least_request.v3.LeastRequest"},
        }
    }


def _lb_policy(variant: str) -> dict[str, Any]:
    if variant == "least_request":
        return {"policies": [_least_request()]}
    if variant == "cswrr":
        config = {
            "@type": f"{_TYPES}.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin",
            "blackout_period": "1s",
            "weight_update_period": "1s",
            "metric_names_for_computing_utilization": ["named_metrics.kv_cache_usage_perc"],
        }
        name = f"{_LB}.client_side_weighted_round_robin"
    else:
        config = {
            "@type": f"{_TYPES}.load_aware_locality.v3.LoadAwareLocality",
            "endpoint_picking_policy": {"policies": [_least_request()]},
            "weight_update_period": "1s",
        }
        if variant in LAL_METRICS:
            config["metric_names_for_computing_utilization"] = LAL_METRICS[variant]
        name = f"{_LB}.load_aware_locality"
    return {"policies": [{"typed_extension_config": {"name": name, "typed_config": config}}]}


def _cluster(variant: str, replicas: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, Any]:
    localities = []
    for region, members in replicas.items():
        # least_request: plain RTT failover (remote at priority 1); the ORCA policies see
        # priority 0 only, so the remote region is put there, as heliostat puts an
        # in-budget rescuer into a region's priority 0.
        priority = 1 if region == "remote" and variant == "least_request" else 0
        localities.append(
            {
                "locality": {"region": region},
                "priority": priority,
                "lb_endpoints": [_endpoint(a) for a, _ in members],
            }
        )
    return {
        "name": variant,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_balancing_policy": _lb_policy(variant),
        "load_assignment": {"cluster_name": variant, "endpoints": localities},
        "typed_extension_protocol_options": {
            _HTTP: {
                "@type": f"type.googleapis.com/{_HTTP}",
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


def _listener(variant: str, port: int) -> dict[str, Any]:
    route = {
        "match": {"prefix": "/"},
        "route": {"cluster": variant, "timeout": "0s"},
        "request_headers_to_add": [
            {"header": {"key": FORMAT_HEADER, "value": "TEXT"}},
            {"header": {"key": "x-heliostat-origin-region", "value": "local"}},
        ],
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": variant,
        "route_config": {"virtual_hosts": [{"name": variant, "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": variant,
        "address": {"socket_address": {"address": LOCALHOST, "port_value": port}},
        "filter_chains": [{"filters": [{"name": _HCM, "typed_config": manager}]}],
    }


def _bootstrap(
    replicas: Mapping[str, Sequence[tuple[str, float]]], ports: Mapping[str, int], admin: int
) -> dict[str, Any]:
    return {
        "node": {"id": "orca-eval", "cluster": "orca-eval", "locality": {"region": "local"}},
        "admin": {"address": {"socket_address": {"address": LOCALHOST, "port_value": admin}}},
        "static_resources": {
            "listeners": [_listener(v, p) for v, p in ports.items()],
            "clusters": [_cluster(v, replicas) for v in ports],
        },
    }


def _shots(port: int, rate: float, seconds: float, stream: bool, seed: int) -> list[loadgen.Shot]:
    rng = random.Random(seed)
    mix = chat_mix(random.Random(f"{seed}-mix"))
    url = f"http://{LOCALHOST}:{port}/v1/completions"
    return [
        loadgen.Shot(at, url, {}, {**mix(), "stream": stream}, "local")
        for at in loadgen.poisson_times(rate, seconds, rng)
    ]


def _figures(report: loadgen.Report, stream: bool) -> dict[str, Any]:
    ok = report.ok
    times = [1000 * (r.ttft if stream and r.ttft is not None else r.latency) for r in ok]
    return {
        "requests": len(report.results),
        "errors": len(report.results) - len(ok),
        ("ttft" if stream else "latency") + "_p50_ms": round(percentile(times, 50), 1),
        ("ttft" if stream else "latency") + "_p99_ms": round(percentile(times, 99), 1),
        "with_load_report": round(sum(1 for r in ok if REPORT_HEADER in r.headers) / len(ok), 3)
        if ok
        else 0.0,
        "served_remotely": round(sum(1 for r in ok if r.replica_region == "remote") / len(ok), 3)
        if ok
        else 0.0,
    }


def experiment(
    workdir: Path,
    processes: list[Process],
    name: str,
    replicas: Mapping[str, Sequence[tuple[str, float]]],
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    policy = workdir / f"{name}.yaml"
    write_policy(policy, _policy(replicas))
    fleet = SimFleet(policy, workdir, speed=None)
    processes.append(fleet)
    fleet.start()
    ports = {v: free_port() for v in VARIANTS}
    admin = free_port()
    gateway = StaticGateway(workdir, f"orca-{name}", _bootstrap(replicas, ports, admin), admin)
    processes.append(gateway)
    gateway.start()
    results: dict[str, Any] = {"rate_rps": round(rate, 2), "replicas": {}}
    speeds = {a: (r, s) for r, members in replicas.items() for a, s in members}
    results["replicas"] = {a: {"region": r, "speed": s} for a, (r, s) in speeds.items()}
    for stream in (False, True):
        kind = "streamed" if stream else "unary"
        for variant in VARIANTS:
            for address in speeds:
                fleet.reset(address)
            shots = _shots(ports[variant], rate, seconds, stream, seed=11)
            report = asyncio.run(loadgen.run(shots, timeout=60))
            entry = _figures(report, stream)
            entry["statuses"] = dict(Counter(r.status for r in report.results))
            counts = Counter(r.replica for r in report.ok)
            entry["share_by_replica"] = {
                f"{a} (speed {s})": round(counts.get(a, 0) / max(1, len(report.ok)), 3)
                for a, (_, s) in speeds.items()
            }
            results.setdefault(kind, {})[variant] = entry
            print(name, kind, variant, json.dumps(entry), flush=True)
    gateway.stop()
    fleet.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=("mixed", "spill"), default=None)
    args = parser.parse_args()
    capacity = calibrate(chat_mix, 6)  # one replica at BASE_SPEED, requests/s
    out: dict[str, Any] = {"load_average_1m_start": os.getloadavg()[0], "seconds": args.seconds}
    processes: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="orca-eval-") as tmp:
        workdir = Path(tmp)
        try:
            mixed = {
                "local": [(f"{LOCALHOST}:{free_port()}", 1.0), (f"{LOCALHOST}:{free_port()}", 3.0)]
            }
            joint = capacity * (1.0 + 3.0) / BASE_SPEED
            if args.only in (None, "mixed"):
                rate = 0.7 * joint
                out["mixed"] = experiment(workdir, processes, "mixed", mixed, rate, args.seconds)
            spill = {
                "local": [(f"{LOCALHOST}:{free_port()}", BASE_SPEED)],
                "remote": [(f"{LOCALHOST}:{free_port()}", BASE_SPEED) for _ in range(2)],
            }
            if args.only in (None, "spill"):
                rate = 1.5 * capacity
                out["spill"] = experiment(workdir, processes, "spill", spill, rate, args.seconds)
        finally:
            for process in reversed(processes):
                process.stop()
    out["load_average_1m_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
