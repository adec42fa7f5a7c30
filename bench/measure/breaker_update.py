"""Envoy 1.40: a cluster's circuit-breaker max_requests moved through CDS, or through a
runtime override (issue 10: `refusal.in_flight` moves the cap while requests are in flight).

    .venv/bin/python bench/measure/breaker_update.py cds       # or: runtime

A local Envoy (127.0.0.1 only), path-based CDS, one cluster `m` with max_requests 2 in
front of an upstream that answers after 4 s. Three requests: two admitted, one overflows
(503, x-envoy-overloaded). At 0.9 s the cap goes to 3 (`cds`: a new cluster version with
max_requests 3; `runtime`: the admin layer's circuit_breakers.m.default.max_requests=3).
At 1.9 s three more requests. Printed: every request's status and when it finished, and
the cluster's counters. Measured 2026-12-08 (bench/measure/results/flash-split.md):
`cds` admits all three (5 in flight under a cap of 3: the rebuilt cluster's count starts
at 0), the two in flight on the old cluster finish with 200 (its connections drained
after, none with a request active); `runtime` admits one (3 in flight) and refuses two,
no cluster modified, no connection closed.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

UPSTREAM, LISTENER, ADMIN = 18431, 18432, 18433
HOLD_S = 4.0


class Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        time.sleep(HOLD_S)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def write_cds(directory: str, max_requests: int, version: str) -> None:
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": UPSTREAM}}}
    cluster = {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": "m",
        "connect_timeout": "1s",
        "type": "STATIC",
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_requests": max_requests,
                    "max_pending_requests": 1000,
                    "max_connections": 1000,
                }
            ]
        },
        "load_assignment": {
            "cluster_name": "m",
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }
    tmp = os.path.join(directory, "cds.tmp")
    with open(tmp, "w") as out:
        json.dump({"version_info": version, "resources": [cluster]}, out)
    os.rename(tmp, os.path.join(directory, "cds.json"))  # the move is what Envoy watches


def bootstrap(directory: str) -> dict[str, Any]:
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "h",
        "http_filters": [router],
        "route_config": {
            "validate_clusters": False,
            "virtual_hosts": [
                {
                    "name": "v",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "m", "timeout": "30s"}}
                    ],
                }
            ],
        },
    }
    listener = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": LISTENER}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    return {
        "node": {"id": "n", "cluster": "c"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN}}},
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
        "dynamic_resources": {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {"path": os.path.join(directory, "cds.json")},
            }
        },
        "static_resources": {"listeners": [listener]},
    }


def stats(pattern: str) -> None:
    url = f"http://127.0.0.1:{ADMIN}/stats?filter={pattern}"
    for line in urllib.request.urlopen(url).read().decode().splitlines():
        if "No recorded values" not in line:
            print("   ", line)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "cds"
    directory = tempfile.mkdtemp(prefix=f"breaker-{mode}-")
    upstream = Server(("127.0.0.1", UPSTREAM), Slow)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    write_cds(directory, 2, "1")
    with open(os.path.join(directory, "boot.json"), "w") as out:
        json.dump(bootstrap(directory), out)
    envoy = os.path.join(os.path.dirname(sys.executable), "envoy")
    log = open(os.path.join(directory, "envoy.log"), "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            envoy,
            "-c",
            os.path.join(directory, "boot.json"),
            "--base-id",
            "731",
            "--concurrency",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    results: dict[str, tuple[object, ...]] = {}
    t0 = time.time()

    def get(tag: str) -> None:
        try:
            answer = urllib.request.urlopen(f"http://127.0.0.1:{LISTENER}/", timeout=20)
            results[tag] = (answer.status, round(time.time() - t0, 2))
        except urllib.error.HTTPError as error:
            overloaded = error.headers.get("x-envoy-overloaded")
            results[tag] = (error.code, round(time.time() - t0, 2), overloaded)

    def send(prefix: str) -> list[threading.Thread]:
        threads = [threading.Thread(target=get, args=(f"{prefix}{i}",)) for i in range(3)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        return threads

    try:
        for _ in range(100):
            try:
                if b"m::" in urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/clusters").read():
                    break
            except OSError:
                pass
            time.sleep(0.1)
        t0 = time.time()
        first = send("a")
        time.sleep(0.8)
        print("before the change:", dict(results))
        stats("cluster.m.upstream_rq_active")
        if mode == "cds":
            write_cds(directory, 3, "2")
        else:
            key = "circuit_breakers.m.default.max_requests=3"
            request = urllib.request.Request(
                f"http://127.0.0.1:{ADMIN}/runtime_modify?{key}", method="POST"
            )
            urllib.request.urlopen(request)
        time.sleep(1.0)
        print("after the change:")
        stats("cluster.m.upstream_rq_active|cluster_manager.cluster_modified")
        second = send("b")
        time.sleep(0.5)
        print("three more sent:")
        stats("cluster.m.upstream_rq_active")
        for thread in first + second:
            thread.join()
        print("results:", json.dumps(results, sort_keys=True))
        stats(
            "cluster.m.upstream_cx_destroy|cluster.m.upstream_cx_total|cluster.m.upstream_rq_rx_reset"
        )
    finally:
        process.terminate()
        process.wait()
        log.close()
        upstream.shutdown()


if __name__ == "__main__":
    main()
