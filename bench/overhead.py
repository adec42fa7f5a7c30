"""Overhead: request latency through an Envoy configured by heliostat vs a static Envoy, both
in front of the same instant upstream.

Three paths to one upstream process (`bench.overhead_upstream`, answers as soon as it has
read a request):

- direct: the client to the upstream, no proxy (the floor of this machine);
- bare: a statically configured Envoy, router filter only (`bench.overhead_static`);
- heliostat: an Envoy whose listener, routes, cluster and endpoint all come from
  `heliostat serve` over xDS, for a policy whose one endpoint is that upstream.

The same client sends the same request (an OpenAI completion with `x-model`) over one
keep-alive connection per path, one request at a time, rotating the order of the paths
every round so drift and noise from the other processes on the machine hit all three alike.
At quick and full size a second phase repeats this with CONCURRENCY requests in flight per
path (closed loop, asyncio client). Nothing is asserted: the figures are reported.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Size, median, percentile, table
from bench.overhead_static import StaticEnvoy
from heliostat.lab.mesh import MODEL, mesh_document
from heliostat.lab.processes import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    free_port,
    http_get,
    wait_until,
    write_policy,
)
from heliostat.wire import MODEL_HEADER

PATHS = ("direct", "bare", "heliostat")
REGION = "us-east"
BODY = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 1}).encode()
# A long-context request: json_to_metadata buffers and parses the whole body, the bare
# Envoy streams it through, so this is where heliostat's per-request work is largest.
LARGE_PROMPT_BYTES = 64 * 1024
LARGE_BODY = json.dumps(
    {"model": MODEL, "prompt": "lorem ipsum " * (LARGE_PROMPT_BYTES // 12), "max_tokens": 1}
).encode()
HEADERS = {"content-type": "application/json", MODEL_HEADER: MODEL}
CONCURRENCY = 8


@dataclass(frozen=True)
class Plan:
    warmup: int  # per path, discarded
    sequential: int  # per path
    concurrent: int  # per path; 0 skips the phase
    large: int  # sequential requests with LARGE_BODY per path; 0 skips the phase


PLANS: Mapping[Size, Plan] = {
    "tiny": Plan(warmup=50, sequential=300, concurrent=0, large=0),
    "quick": Plan(warmup=300, sequential=6000, concurrent=3000, large=1000),
    "full": Plan(warmup=1000, sequential=30000, concurrent=30000, large=10000),
}


# -- the sequential client ---------------------------------------------------------------------


class Client:
    """One keep-alive connection to one path; `send` returns the latency in ms, or None."""

    def __init__(self, port: int, body: bytes = BODY) -> None:
        self.connection = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
        self.body = body
        self.errors = 0

    def send(self) -> float | None:
        started = time.perf_counter()
        try:
            self.connection.request("POST", "/v1/completions", body=self.body, headers=HEADERS)
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()  # reconnects on the next request
            self.errors += 1
            return None
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            self.errors += 1
            return None
        return elapsed

    def close(self) -> None:
        self.connection.close()


def _sequential(
    ports: Mapping[str, int], warmup: int, count: int, body: bytes = BODY
) -> dict[str, Any]:
    clients = {name: Client(port, body) for name, port in ports.items()}
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    try:
        for _ in range(warmup):
            for client in clients.values():
                client.send()
        for client in clients.values():
            client.errors = 0
        names = list(ports)
        for index in range(count):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                value = clients[name].send()
                if value is not None:
                    latencies[name].append(value)
    finally:
        for client in clients.values():
            client.close()
    return {name: _figures(latencies[name], clients[name].errors) for name in ports}


# -- the concurrent client ---------------------------------------------------------------------

_REQUEST = (
    b"POST /v1/completions HTTP/1.1\r\n"
    + f"host: {LOCALHOST}\r\n".encode()
    + b"".join(f"{k}: {v}\r\n".encode() for k, v in HEADERS.items())
    + f"content-length: {len(BODY)}\r\n\r\n".encode()
    + BODY
)


async def _worker(port: int, count: int, into: list[float]) -> int:
    """`count` requests over one keep-alive connection; returns the number of failures."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    errors = 0
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(_REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                into.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1
    finally:
        writer.close()
    return errors


async def _concurrent_block(port: int, count: int, into: list[float]) -> int:
    per_worker = max(1, count // CONCURRENCY)
    results = await asyncio.gather(
        *(_worker(port, per_worker, into) for _ in range(CONCURRENCY)), return_exceptions=True
    )
    return sum(r if isinstance(r, int) else per_worker for r in results)


def _concurrent(ports: Mapping[str, int], count: int) -> dict[str, Any]:
    """Blocks of BLOCK requests per path in rotating order, CONCURRENCY in flight each."""
    block = CONCURRENCY * 50
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    errors = dict.fromkeys(ports, 0)
    names = list(ports)

    async def main() -> None:
        for name in names:  # warm-up block, discarded
            await _concurrent_block(ports[name], block, [])
        for index in range(max(1, count // block)):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                errors[name] += await _concurrent_block(ports[name], block, latencies[name])

    asyncio.run(main())
    return {name: _figures(latencies[name], errors[name]) for name in ports}


def _figures(values: list[float], errors: int) -> dict[str, Any]:
    return {
        "requests": len(values) + errors,
        "errors": errors,
        "p50_ms": round(median(values), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "mean_ms": round(sum(values) / len(values), 3) if values else 0.0,
    }


# -- the processes -----------------------------------------------------------------------------


def _http_filters(envoy: Envoy) -> list[str]:
    """The HTTP filter chain heliostat gave the gateway's listener, from its config dump."""
    names: list[str] = []
    for config in envoy.config_dump(include_eds=False)["configs"]:
        for listener in config.get("dynamic_listeners", []):
            chains = listener.get("active_state", {}).get("listener", {}).get("filter_chains", [])
            for chain in chains:
                for network_filter in chain.get("filters", []):
                    typed = network_filter.get("typed_config", {})
                    names += [f["name"] for f in typed.get("http_filters", [])]
    return names


def _answers(port: int) -> bool:
    client = Client(port)
    try:
        return client.send() is not None
    finally:
        client.close()


def run(size: Size, workdir: Path) -> dict[str, Any]:
    plan = PLANS[size]
    upstream_port = free_port()
    upstream = Process(
        [
            sys.executable,
            str(Path(__file__).with_name("overhead_upstream.py")),
            "--port",
            str(upstream_port),
        ],
        workdir / "instant-upstream.log",
    )
    processes: list[Process] = [upstream]
    try:
        upstream.start()
        wait_until(
            lambda: http_get(f"http://{LOCALHOST}:{upstream_port}/health")[0] == 200,
            timeout=10,
            message=f"instant upstream up (log: {upstream.log_path})",
        )
        bare = StaticEnvoy(
            workdir, admin_port=free_port(), listener_port=free_port(), upstream_port=upstream_port
        )
        processes.append(bare)
        bare.start()
        document = mesh_document(
            free_port(), {REGION: [f"{LOCALHOST}:{upstream_port}"]}, slots=4, speed=1.0
        )
        policy = workdir / "policy.yaml"
        write_policy(policy, document)
        heliostat = Heliostat(policy, workdir)
        processes.append(heliostat)
        heliostat.start()
        gateway_port = free_port()
        gateway = Envoy(
            workdir,
            heliostat,
            node_id="gw-overhead",
            region=REGION,
            delta=False,
            listener_port=gateway_port,
        )
        processes.append(gateway)
        gateway.start()
        ports = {"direct": upstream_port, "bare": bare.listener_port, "heliostat": gateway_port}
        for name, port in ports.items():
            wait_until(functools.partial(_answers, port), timeout=15, message=f"{name} answers")
        wait_until(  # scraped, so the endpoint carries its real weight, not the start-up one
            lambda: (
                gateway.hosts(MODEL).get(f"{LOCALHOST}:{upstream_port}", {}).get("weight") == "100"
            ),
            timeout=15,
            message="heliostat gateway has the scraped endpoint",
        )
        filters = _http_filters(gateway)
        sequential = _sequential(ports, plan.warmup, plan.sequential)
        concurrent = _concurrent(ports, plan.concurrent) if plan.concurrent else None
        large = _sequential(ports, plan.warmup // 4, plan.large, LARGE_BODY) if plan.large else None
    finally:
        for process in reversed(processes):
            process.stop()
    return {
        "bare_p50_ms": sequential["bare"]["p50_ms"],
        "bare_p99_ms": sequential["bare"]["p99_ms"],
        "heliostat_p50_ms": sequential["heliostat"]["p50_ms"],
        "heliostat_p99_ms": sequential["heliostat"]["p99_ms"],
        "direct_p50_ms": sequential["direct"]["p50_ms"],
        "direct_p99_ms": sequential["direct"]["p99_ms"],
        "added_p50_ms": round(sequential["heliostat"]["p50_ms"] - sequential["bare"]["p50_ms"], 3),
        "size": size,
        "sequential": sequential,
        "concurrent": concurrent,
        "concurrency": CONCURRENCY if concurrent else 1,
        "large_body": None if large is None else {"body_bytes": len(LARGE_BODY), **large},
        "heliostat_http_filters": filters,
        "bare_http_filters": ["envoy.filters.http.router"],
        "notes": NOTES,
    }


NOTES = (
    "Client-observed latency of one POST /v1/completions (x-model header, a ~60-byte JSON "
    "body) per request, same client and count for every path, paths interleaved in rotating "
    "order; the *_p50_ms/*_p99_ms fields are the sequential phase (one request in flight). "
    "Both Envoys run one worker thread (--concurrency 1) on loopback. heliostat adds no hop: "
    "its gateway forwards straight to the upstream like the bare one; the difference is what "
    "its configuration does per request: the json_to_metadata filter buffers and parses the "
    "JSON body (model, stream) before routing, the route table matches x-model (after the "
    "batch and stream variants of the route) and adds x-heliostat-origin-region, the route "
    "carries a retry policy and priority HIGH, the cluster outlier detection and circuit "
    "breakers. No Lua filter unless a model asks for prefix keys, no hash policy without "
    "affinity (heliostat_http_filters lists the chain actually served). large_body repeats "
    "the sequential phase with a 64 KiB prompt, where buffering and parsing the body costs "
    "most. The concurrent phase is a closed loop of `concurrency` Python clients per path: "
    "its figures include the client's own queueing on a 2-core machine shared with both "
    "Envoys and the upstream."
)


def summary(result: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    phases = [("sequential", result["sequential"])]
    if result["concurrent"]:
        phases.append((f"concurrent x{result['concurrency']}", result["concurrent"]))
    if result["large_body"]:
        large = result["large_body"]
        phases.append((f"sequential, {large['body_bytes'] // 1024} KiB body", large))
    for phase, figures in phases:
        for name in PATHS:
            f = figures[name]
            rows.append([phase, name, f["requests"], f["errors"], f["p50_ms"], f["p99_ms"]])
    head = (
        f"heliostat-configured Envoy vs static Envoy (same upstream): p50 "
        f"{result['heliostat_p50_ms']} vs {result['bare_p50_ms']} ms, p99 "
        f"{result['heliostat_p99_ms']} vs {result['bare_p99_ms']} ms; filters: "
        + ", ".join(result["heliostat_http_filters"])
    )
    return head + "\n\n" + table(["phase", "path", "requests", "errors", "p50 ms", "p99 ms"], rows)
