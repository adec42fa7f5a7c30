"""Test-only pieces beside `heliostat.lab`: tiny upstreams, one-model policies, requests.

The real processes (heliostat serve, Envoy, simulated fleets) come from `heliostat.lab`,
which the benchmarks and the demo share; they are re-exported here for the tests, with the
mesh the end-to-end tests of the control law share (`law_mesh`) and what they read of it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from heliostat.lab.mesh import Mesh, start_mesh
from heliostat.lab.processes import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    SimFleet,
    envoy_binary,
    free_port,
    http_get,
    started,
    wait_until,
    write_policy,
)
from heliostat.sim import loadgen
from heliostat.sim.metrics import ReplicaMetrics

__all__ = [
    "LAW_REPLICAS",
    "LAW_SLOTS",
    "LAW_SPEED",
    "LOCALHOST",
    "Envoy",
    "Heliostat",
    "Process",
    "Reply",
    "SimFleet",
    "SteadyLoad",
    "Upstream",
    "envoy_binary",
    "free_port",
    "http_get",
    "law_mesh",
    "policy_document",
    "request",
    "results_since",
    "served_by",
    "started",
    "ticks",
    "wait_ticks",
    "wait_until",
    "write_policy",
]


# -- upstreams ------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A tiny HTTP/1.1 server that says who it is and remembers what it saw."""

    port: int
    region: str
    seen: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    # A /metrics page to answer scrapes with (else 404: after a few failed scrapes heliostat
    # marks the endpoint unhealthy, and with every endpoint unhealthy Envoy's panic mode
    # routes to all of them, drained or not).
    metrics: bytes | None = None

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def start(self) -> Upstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                # heliostat scrapes /metrics; this upstream records nothing of it, and
                # exports none unless given a page.
                page = upstream.metrics if self.path == "/metrics" else None
                self.send_response(404 if page is None else 200)
                if page is not None:
                    self.send_header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("content-length", str(len(page or b"")))
                self.end_headers()
                if page:
                    self.wfile.write(page)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
                if b'"stream": true' in body or b'"stream":true' in body:
                    self._stream()
                    return
                payload = json.dumps(
                    {"replica": upstream.address, "region": upstream.region}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("x-replica-id", upstream.address)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("x-replica-id", upstream.address)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for index in range(3):
                    chunk = f"data: {json.dumps({'index': index, 't': time.time()})}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    time.sleep(0.4)
                done = b"data: [DONE]\n\n"
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                self.wfile.flush()

        self.server = ThreadingHTTPServer((LOCALHOST, self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# -- policy files ---------------------------------------------------------------------------


def policy_document(
    *,
    gateway_port: int,
    endpoints: list[tuple[str, str]],
    model: str = "llama-70b",
    extra_model: Mapping[str, Any] | None = None,
    regions: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    regions = regions or {
        "us-east": {"eu-west": 80, "ap-southeast": 210},
        "eu-west": {"ap-southeast": 160},
        "ap-southeast": {},
    }
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": "it"},
        "spec": {
            "regions": {name: {"rtt_ms": dict(rtt)} for name, rtt in regions.items()},
            "gateway": {"port": gateway_port, "address": LOCALHOST},
            "models": [
                {
                    "name": model,
                    "engine": "vllm",
                    "slo": {"ttft_ms": 800, "network_budget_ms": 150},
                    **(extra_model or {}),
                    "endpoints": [{"address": a, "region": r} for a, r in endpoints],
                }
            ],
        },
    }


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    *,
    model: str | None = "llama-70b",
    body: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    connection = http.client.HTTPConnection(LOCALHOST, port, timeout=timeout)
    try:
        all_headers = {"content-type": "application/json", **(headers or {})}
        if model is not None:
            all_headers["x-model"] = model
        payload = json.dumps(body or {"model": model, "prompt": "hello"}).encode()
        connection.request("POST", "/v1/completions", body=payload, headers=all_headers)
        response = connection.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def idle_vllm_metrics(model: str = "llama-70b") -> bytes:
    """A /metrics page as an idle vLLM serving `model` answers it: healthy, nothing queued."""
    page = ReplicaMetrics(model, block_size=16, num_gpu_blocks=4096)
    page.refresh(waiting=0, running=1, kv_usage=0.1)
    return page.render()


def served_by(replies: list[Reply]) -> Counter[str]:
    return Counter(r.headers.get("x-replica-id", f"status-{r.status}") for r in replies)


# -- the control law's mesh -----------------------------------------------------------------

# Replica capacity in the law's scenarios: 4 slots, ~0.4 s per request (24 tokens at speed 2)
# -> about 10 requests/s per replica; the mesh ticks every 0.5 s (signals.interval).
LAW_SLOTS = 4
LAW_SPEED = 2.0
# Two replicas where most users are, one in ap-southeast: its surges need a rescuer.
LAW_REPLICAS: Mapping[str, int] = {"us-east": 2, "eu-west": 2, "ap-southeast": 1}


def law_mesh(
    workdir: Path,
    processes: list[Process],
    per_region: Mapping[str, int] = LAW_REPLICAS,
    *,
    idle_ticks: int = 0,
    **options: Any,
) -> Mesh:
    """The mesh of the control law's scenarios (`start_mesh` at LAW_SLOTS and LAW_SPEED; other
    `start_mesh` options pass through). With `idle_ticks`, it returns once heliostat has
    ticked that many times on idle signals, so a scenario's load starts on a settled law
    (counted in ticks, not seconds: a loaded machine ticks late, not less; the first may come
    at once, so n ticks are at least n - 1 intervals)."""
    mesh = start_mesh(
        workdir, processes, per_region=per_region, slots=LAW_SLOTS, speed=LAW_SPEED, **options
    )
    if idle_ticks:
        wait_ticks(mesh.heliostat, idle_ticks)
    return mesh


def ticks(heliostat: Heliostat) -> int:
    """How many times heliostat's control law has ticked (`/debug/state`)."""
    return int(heliostat.state()["control"]["ticks"])


def wait_ticks(heliostat: Heliostat, count: int, timeout: float = 30.0) -> int:
    """Wait for `count` more ticks of the control law; the tick count then."""
    target = ticks(heliostat) + count
    wait_until(
        lambda: ticks(heliostat) >= target,
        timeout=timeout,
        interval=0.1,
        message=f"{count} ticks of the law",
    )
    return ticks(heliostat)


def results_since(
    report: loadgen.Report, label: str, start: float, end: float = float("inf")
) -> list[loadgen.Result]:
    """The results of `label`'s shots sent from `start` to `end` seconds after the first."""
    origin = min(r.started for r in report.results)
    return [
        r for r in report.results if r.shot.label == label and start <= r.started - origin < end
    ]


class SteadyLoad:
    """Poisson load at `rate` requests/s on one gateway of a mesh for as long as a test needs
    it, not for a duration fixed in advance: a scenario whose phases end on what happened
    (a weight cut, so many requests served) neither waits out a schedule sized for a loaded
    machine nor runs off its end when the machine is slow. Sent in back-to-back schedules of
    `chunk_s` (Poisson arrivals stay Poisson across them), each on its own client."""

    def __init__(self, mesh: Mesh, region: str, rate: float, chunk_s: float = 1.0) -> None:
        self._mesh = mesh
        self._region = region
        self._rate = rate
        self._chunk_s = chunk_s
        self._stop = threading.Event()
        self._chunks: list[Callable[[], loadgen.Report]] = []
        self._thread = threading.Thread(target=self._send, daemon=True)

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def _send(self) -> None:
        begun = time.monotonic()
        chunk = 0
        while not self._stop.is_set():
            shots = self._mesh.shots(self._region, self._rate, self._chunk_s, seed=chunk)
            self._chunks.append(self._mesh.start_load(shots))
            chunk += 1
            self._stop.wait(begun + chunk * self._chunk_s - time.monotonic())

    def stop(self) -> loadgen.Report:
        """Send no further schedule; wait for those sent and report every result."""
        self._stop.set()
        self._thread.join(timeout=self._chunk_s + 5)
        report = loadgen.Report()
        for finish in self._chunks:
            report.results.extend(finish().results)
        report.results.sort(key=lambda r: r.started)
        return report
