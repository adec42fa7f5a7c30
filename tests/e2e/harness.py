"""Test-only pieces beside `heliostat.lab`: tiny upstreams, one-model policies, requests.

The real processes (heliostat serve, Envoy, simulated fleets) come from `heliostat.lab`,
which the benchmarks and the demo share; they are re-exported here for the tests.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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

__all__ = [
    "LOCALHOST",
    "Envoy",
    "Heliostat",
    "Process",
    "Reply",
    "SimFleet",
    "Upstream",
    "envoy_binary",
    "free_port",
    "http_get",
    "policy_document",
    "request",
    "served_by",
    "started",
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
                # heliostat scrapes /metrics; this upstream exports none and records nothing.
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

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


def served_by(replies: list[Reply]) -> Counter[str]:
    return Counter(r.headers.get("x-replica-id", f"status-{r.status}") for r in replies)
