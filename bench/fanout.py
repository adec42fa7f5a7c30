"""fanout.json: how long one weight change takes to reach every subscribed gateway.

For each case (clients x mode) a fresh `heliostat serve` (a real process, logging at its
default level, info) serves a realistic policy: 3 regions with capacity 3:2:1, 3 models of
about 100 endpoints each, one with versions, a canary and prefix affinity, one with session
affinity, and a tenant pinned to eu-west (bench/scale_policy.py). Every endpoint answers
/metrics from one light process (bench/fanout_metrics.py: a fixed vLLM page), so serve
scrapes the whole fleet as in production and its weights settle. Once every endpoint's
weight comes from a scrape, a separate process (bench/ads_clients.py) opens N ADS streams,
SotW or delta, each a gateway with its own node id, spread over the regions, and subscribes
like Envoy (`subscribe_s`: until every client has ACKed its first full configuration).

Once nothing has been pushed for 1.5 signal intervals, the benchmark drains one endpoint
(`POST /drain` on serve's admin API, as `heliostat drain` does: a weight change that every
region's view carries) and stamps the moment with `time.time()`. Every client stamps when
it ACKed the first EDS (with LEDS, LbEndpoint) response received after that moment on the
same clock; the ACK latency is the difference. Mode `delta` is delta streams against serve
as it runs by default: each endpoint its own LEDS resource (heliostat.xds.translate.leds);
a node's assignments stay under a pending version until its endpoints were still for 30 s
(`--leds-settle-after`, heliostat.xds.grpc.settle), and this benchmark's changes come a few
seconds apart, so each is one LEDS response. `delta-settled` is the same against
`serve --leds-settle-after 0`: every change finds the assignments settled, as the first
change after 30 s of still endpoints does, and sends them pending first (and settled again
once the fan-out is done): three responses. That extra response is the price of a
reconnect that re-sends nothing after a crash (heliostat.xds.grpc.settle says why it cannot
ride with the LEDS one); a clean stop settles every node anyway, so a long
--leds-settle-after makes it rarer. `delta-eds` is delta streams against
`serve --no-leds` (whole assignments, as SotW).
Each change drains another endpoint (an undrain would ramp the weight back up over several
ticks, which is several pushes). `bytes_per_push` is the median over clients of the bytes
of every response a client received for the change (EDS, LEDS and anything else; in
`delta-settled` that includes the assignments sent before the endpoint under a pending
version and, once no stream has the change in flight, under their own:
heliostat.xds.protocol.held and heliostat.xds.grpc.settle; the latency is not held up by
the latter). `rss_mb` is serve's VmRSS
(/proc/PID/status) with every client subscribed, before the changes; `rss_idle_mb` is the
same before any client connected, `rss_peak_mb` its high-water mark (VmHWM) by the end.
`tick_mean_ms` is serve's own mean control tick (`heliostat_control_compute_seconds`) over
the case: the part of a change's latency spent computing and translating, before any byte
goes to a client.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Size, median, percentile, table
from bench.scale import targets_table
from bench.scale_policy import endpoint_count, fleet_policy, regions
from heliostat.lab.processes import (
    LOCALHOST,
    Heliostat,
    LabError,
    Process,
    TimedOut,
    http_get,
    started,
    wait_until,
    write_policy,
)

ROOT = Path(__file__).resolve().parent.parent
# delta: delta streams against serve's default (LEDS: each endpoint its own resource);
# delta-settled: the same with assignments settled before every change (the first change
# after serve's --leds-settle-after of still endpoints); delta-eds: against
# `serve --no-leds` (whole assignments).
MODES = ("sotw", "delta", "delta-settled", "delta-eds")
SERVE_ARGS = {"delta-settled": ["--leds-settle-after", "0"], "delta-eds": ["--no-leds"]}
REGION_COUNT = 3
MODELS = 3
QUIET_TICKS = 1.5  # no push for longer than this many signal intervals: settled
STREAMS_PER_CHANNEL = 50
METRICS_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Plan:
    endpoints: int
    clients: tuple[int, ...]
    changes: int
    interval_s: float = 2.0  # the policy's signals.interval (its default)
    # The policy's signals.timeout: longer than the default 500 ms because one process
    # answers for every endpoint, and a timed-out scrape round would move weights (pushes)
    # in the middle of the measurement when the machine is busy.
    timeout_s: float = 1.5
    quiet_after_s: float = 1.0  # after a change: its responses are in, nothing follows
    # Client counts measured with delta streams only (SotW at that size measures the same
    # push path at three times the bytes, and would double the run).
    delta_only: tuple[int, ...] = ()
    # Streams per client process: beyond this the clients' own event loop, not serve,
    # would set the latency, so larger counts are spread over several processes.
    clients_per_process: int = 2_500

    @property
    def quiet_before_s(self) -> float:
        return QUIET_TICKS * self.interval_s


PLANS: dict[Size, Plan] = {
    # tiny proves the benchmark runs (in `make test`, on a busy machine): scrape and tick
    # faster than the default, so it settles in seconds, with a lenient scrape deadline
    # (its ten clients in two processes, so the merging of several client processes runs)
    "tiny": Plan(
        endpoints=30,
        clients=(10,),
        changes=1,
        interval_s=1.0,
        timeout_s=1.0,
        quiet_after_s=0.3,
        clients_per_process=5,
    ),
    "quick": Plan(endpoints=300, clients=(100, 1000), changes=2),
    "full": Plan(endpoints=300, clients=(100, 1000), changes=4, delta_only=(5000,)),
}


def run(
    size: Size,
    workdir: Path,
    only: list[tuple[int, str]] | None = None,
    plan: Plan | None = None,
) -> dict[str, Any]:
    """Every case of `size`'s plan, or `only` those (clients, mode) pairs at its sizes."""
    plan = plan or PLANS[size]
    metrics = MetricsFleet(workdir, plan.endpoints)
    with started(metrics):
        document = fleet_policy(
            plan.endpoints,
            REGION_COUNT,
            models=MODELS,
            address=_addresser(metrics.ports()),
            interval=f"{plan.interval_s:g}s",
            timeout=f"{plan.timeout_s * 1000:g}ms",
        )
        policy = workdir / "fanout-policy.yaml"
        write_policy(policy, document)
        targets = _drain_targets(document, plan.changes)
        runs = [(c, mode) for c in plan.clients for mode in MODES]
        runs += [(c, "delta") for c in plan.delta_only]
        if only is not None:
            runs = only
        cases: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for clients, mode in runs:
            # One case that cannot run (its clients never subscribe) is reported, and the
            # cases already measured are kept: a full run is 20 minutes of them.
            try:
                cases.append(measure(policy, workdir, clients, mode, targets, plan))
            except LabError as exc:
                print(f"  fanout {clients} {mode}: failed: {exc}", flush=True)
                failed.append({"clients": clients, "mode": mode, "error": str(exc)})
    return {
        "size": size,
        "endpoints": endpoint_count(document),
        "regions": regions(REGION_COUNT),
        "models": MODELS,
        "client_counts": sorted({clients for clients, _ in runs}),
        "clients_per_process": plan.clients_per_process,
        "changes_per_case": plan.changes,
        "streams_per_channel": STREAMS_PER_CHANNEL,
        "signals_interval_s": plan.interval_s,
        "signals_timeout_s": plan.timeout_s,
        "change": "POST /drain of one endpoint (another one each change); latency: change "
        "-> each client's ACK of the first EDS (or, with LEDS, LbEndpoint) response after it",
        "modes": "sotw; delta: serve's default, LEDS for delta nodes; delta-settled: the same "
        "with --leds-settle-after 0; delta-eds: serve --no-leds",
        "metrics": "every endpoint serves a fixed vLLM /metrics page from one process",
        "cases": cases,
        "failed_cases": failed,
        "targets": target_rows(cases),
    }


# Issue 17's targets at 1,000 streams: (mode, case field, at most, unit, what). `delta` is
# serve's default (LEDS); the opt-out `delta-eds` sends whole assignments (10 KB per push
# here, by construction), so only its latency and memory are held to the targets.
TARGETS = [
    ("delta", "ack_p99_ms", 300.0, "ms", "one change to 1,000 delta streams, ACK p99"),
    (
        "delta-settled",
        "ack_p99_ms",
        300.0,
        "ms",
        "the same, assignments settled (first change after 30 s still)",
    ),
    ("sotw", "ack_p99_ms", 600.0, "ms", "one change to 1,000 SotW streams, ACK p99"),
    ("delta", "bytes_per_push", 5_000.0, "B", "bytes per stream for one endpoint's change"),
    ("delta", "rss_peak_mb", 200.0, "MB", "serve's peak memory, 1,000 delta streams"),
    ("sotw", "rss_peak_mb", 200.0, "MB", "serve's peak memory, 1,000 SotW streams"),
    ("delta-eds", "ack_p99_ms", 300.0, "ms", "one change to 1,000 delta streams, no LEDS, p99"),
    ("delta-eds", "rss_peak_mb", 200.0, "MB", "serve's peak memory, 1,000 delta, no LEDS"),
]
TARGET_CLIENTS = 1_000


def target_rows(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target row whose case this run measured, with the figure and whether it is met."""
    rows = []
    for mode, key, limit, unit, what in TARGETS:
        for case in cases:
            if (case["clients"], case["mode"]) == (TARGET_CLIENTS, mode):
                rows.append(
                    {
                        "measure": what,
                        "target": f"<= {limit:g} {unit}",
                        "measured": f"{case[key]:g} {unit}",
                        "met": case[key] <= limit,
                    }
                )
    return rows


def summary(result: dict[str, Any]) -> str:
    rows = [
        [
            c["clients"],
            c["mode"],
            c["ack_p50_ms"],
            c["ack_p99_ms"],
            c["ack_max_ms"],
            c["bytes_per_push"],
            c["rss_mb"],
            f"{c['acked']}/{c['clients'] * c['changes']}",
        ]
        for c in result["cases"]
    ]
    measured = table(
        ["clients", "mode", "ACK p50 ms", "p99 ms", "max ms", "bytes/push", "RSS MB", "ACKed"],
        rows,
    )
    for case in result.get("failed_cases") or []:
        measured += f"\n\n{case['clients']} {case['mode']} clients: FAILED: {case['error']}"
    goals = result.get("targets") or []
    if not goals:
        return measured
    return measured + "\n\n" + targets_table(goals)


# -- one case ----------------------------------------------------------------------------------


def measure(
    policy: Path,
    workdir: Path,
    clients: int,
    mode: str,
    targets: list[tuple[str, str]],
    plan: Plan,
) -> dict[str, Any]:
    serve = QuietHeliostat(policy, workdir, SERVE_ARGS.get(mode, []))
    fleet = ClientFleet(
        workdir, serve, clients, "sotw" if mode == "sotw" else "delta", plan.clients_per_process
    )
    processes: list[Process] = []
    try:
        serve.start()
        processes.append(serve)
        _wait_scraped(serve)
        idle = _memory(serve)["VmRSS"]
        began = time.monotonic()
        processes.extend(fleet.parts)  # stopped whatever happens, started or not
        fleet.start()
        subscribe_s = time.monotonic() - began
        _wait_quiet(fleet, plan.quiet_before_s, timeout=60.0)
        rss = _memory(serve)["VmRSS"]
        latencies: list[float] = []
        sizes: list[float] = []
        responses: list[float] = []
        all_acked: list[float] = []
        changed_at: list[float] = []
        serve_cpu: list[float] = []
        clients_cpu: list[float] = []
        for model, address in targets:
            cpu_before = _cpu_s(serve), sum(_cpu_s(part) for part in fleet.parts)
            t0 = time.time()
            changed_at.append(t0)
            _drain(serve, model, address)
            acked = fleet.command(f"await {t0!r} 60", timeout=90.0)
            if acked["missing"]:
                raise LabError(
                    f"{len(acked['missing'])}+ of {clients} {mode} clients never ACKed the "
                    f"change (e.g. {acked['missing'][:3]}); logs in {workdir}"
                )
            _wait_quiet(fleet, plan.quiet_after_s, timeout=30.0)
            serve_cpu.append(_cpu_s(serve) - cpu_before[0])
            clients_cpu.append(sum(_cpu_s(part) for part in fleet.parts) - cpu_before[1])
            rows = fleet.command(f"report {t0!r} {time.time()!r}", timeout=30.0)["clients"]
            change = [(row[2] - t0) * 1000 for row in rows]
            latencies += change
            all_acked.append(max(change))
            sizes += [float(row[3]) for row in rows]
            responses += [float(row[4]) for row in rows]
        peak = _memory(serve)["VmHWM"]
        ticks = _metric(serve, "heliostat_control_compute_seconds_count")
        tick_mean_ms = _metric(serve, "heliostat_control_compute_seconds_sum") / ticks * 1000
    finally:
        for process in reversed(processes):
            process.stop()
    return {
        "clients": clients,
        "mode": mode,
        "ack_p50_ms": round(percentile(latencies, 50), 2),
        "ack_p99_ms": round(percentile(latencies, 99), 2),
        "ack_max_ms": round(max(latencies), 2),
        "ack_min_ms": round(min(latencies), 2),
        "all_acked_ms": [round(v, 2) for v in all_acked],
        "bytes_per_push": round(median(sizes)),
        "responses_per_push": median(responses),
        "rss_mb": round(rss / 1024, 1),
        "rss_idle_mb": round(idle / 1024, 1),
        "rss_peak_mb": round(peak / 1024, 1),
        "rss_per_client_kb": round((rss - idle) / clients, 1),
        "subscribe_s": round(subscribe_s, 2),
        "tick_mean_ms": round(tick_mean_ms, 2),
        # CPU seconds (user + system, every thread) from just before each change until
        # its responses are in and quiet_after_s passed: what a change costs each side,
        # whatever else the machine runs (which the latencies include).
        "serve_cpu_ms_per_change": [round(v * 1000, 1) for v in serve_cpu],
        "clients_cpu_ms_per_change": [round(v * 1000, 1) for v in clients_cpu],
        "ticks": int(ticks),
        "changes": len(targets),
        "acked": len(latencies),
        "client_processes": len(fleet.parts),
        "changed_at": changed_at,  # time.time() of each change (to line up with profiles)
    }


def _metric(serve: Heliostat, name: str) -> float:
    """One of serve's metrics, summed over its labels. The lab's `Heliostat.metric` gives
    /metrics 2 s, which a loaded machine exceeded while serve held a thousand streams (a
    full run died on it); the figure is read once per case, so waiting longer costs nothing."""
    _, text = http_get(serve.url("/metrics"), timeout=METRICS_TIMEOUT_S)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def _drain(serve: Heliostat, model: str, address: str) -> None:
    request = urllib.request.Request(
        serve.url("/drain"),
        data=json.dumps({"model": model, "endpoint": address}).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200:
            raise LabError(f"drain {model} {address}: HTTP {response.status}")


def _wait_scraped(serve: Heliostat) -> None:
    """Until every endpoint's weight comes from a scrape: gateways then subscribe to the
    settled configuration once, and the idle memory includes the fleet's signals."""

    seen: Counter[str] = Counter()

    def scraped() -> bool:
        neutral = serve.state()["views"]["neutral"]
        seen.clear()
        seen.update(str(e["reason"].get("state")) for c in neutral.values() for e in c["endpoints"])
        return bool(seen) and set(seen) == {"healthy"}

    try:
        wait_until(scraped, timeout=30.0, interval=0.25, message="every endpoint scraped")
    except TimedOut:
        raise TimedOut(
            f"endpoints never all scraped healthy (states: {dict(seen)}); a busy machine "
            f"makes scrapes time out, see {serve.log_path}"
        ) from None


def _wait_quiet(fleet: ClientFleet, quiet_s: float, timeout: float) -> None:
    """Until no client has received anything for `quiet_s` seconds."""

    def quiet() -> bool:
        status = fleet.command("status", timeout=10.0)
        if status["failed"]:
            raise LabError(f"ADS clients failed: {status['errors']}")
        return bool(time.time() - status["last_response_at"] >= quiet_s)

    wait_until(quiet, timeout=timeout, interval=0.2, message="no more pushes")


def _memory(serve: Heliostat) -> dict[str, int]:
    """VmRSS and VmHWM of serve, in kB."""
    if serve.proc is None:
        raise LabError("heliostat serve is not running")
    found = {}
    for line in Path(f"/proc/{serve.proc.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _cpu_s(process: Process) -> float:
    """CPU seconds `process` has used so far (user + system, all threads)."""
    if process.proc is None:
        raise LabError(f"{process.args[:3]} is not running")
    fields = Path(f"/proc/{process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _addresser(ports: list[int]) -> Any:
    free = iter(ports)

    def address(_model: int, _region: int, _n: int) -> str:
        return f"{LOCALHOST}:{next(free)}"

    return address


def _drain_targets(document: dict[str, Any], changes: int) -> list[tuple[str, str]]:
    """One endpoint per change, in turn from each model and region, never the same twice."""
    models = document["spec"]["models"]
    names = regions(REGION_COUNT)
    targets = []
    for k in range(changes):
        model = models[k % len(models)]
        region = names[k % len(names)]
        here = [e["address"] for e in model["endpoints"] if e["region"] == region]
        targets.append((model["name"], here[(k // len(models)) % len(here)]))
    return targets


# -- the processes -----------------------------------------------------------------------------


class QuietHeliostat(Heliostat):
    """`heliostat serve` at its default log level: the lab's debug logging would write a
    line per xDS event, thousands per change with a thousand clients, and time that too."""

    def __init__(self, policy: Path, workdir: Path, args: list[str] | None = None) -> None:
        super().__init__(policy, workdir, extra_args=args or [])
        self.args[self.args.index("--log-level") + 1] = "info"


class MetricsFleet(Process):
    """bench/fanout_metrics.py: a fixed vLLM /metrics page on `count` free ports."""

    def __init__(self, workdir: Path, count: int) -> None:
        self.ports_file = workdir / "metrics-ports.json"
        super().__init__(
            [
                sys.executable,
                "-m",
                "bench.fanout_metrics",
                "--count",
                str(count),
                "--ports-file",
                str(self.ports_file),
            ],
            workdir / "fanout-metrics.log",
        )

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        log.close()
        wait_until(
            lambda: self.ports_file.exists() or not self.running,
            timeout=30,
            message=f"metrics ports (log: {self.log_path})",
        )
        if not self.running:
            raise LabError(f"fanout_metrics exited: {self.log()}")

    def ports(self) -> list[int]:
        return [int(p) for p in json.loads(self.ports_file.read_text())]


class AdsClients(Process):
    """bench/ads_clients.py, driven over its stdin/stdout; `start` returns once every client
    holds a full configuration."""

    def __init__(
        self, workdir: Path, serve: Heliostat, clients: int, mode: str, part: int = 0
    ) -> None:
        self.clients = clients
        super().__init__(
            [
                sys.executable,
                "-m",
                "bench.ads_clients",
                "--xds",
                f"{LOCALHOST}:{serve.xds_port}",
                "--clients",
                str(clients),
                "--mode",
                mode,
                "--regions",
                ",".join(regions(REGION_COUNT)),
                "--streams-per-channel",
                str(STREAMS_PER_CHANNEL),
                "--connect-timeout",
                "120",
                "--prefix",
                f"bench-gw-{part}",
            ],
            workdir / f"ads-clients-{mode}-{clients}-{part}.log",
        )

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        log.close()

    def wait_ready(self) -> None:
        ready = self._read(timeout=150.0)
        if ready.get("event") != "ready":
            raise LabError(f"ADS clients did not subscribe: {ready}")

    def command(self, line: str, timeout: float) -> dict[str, Any]:
        self.send(line)
        return self._read(timeout)

    def send(self, line: str) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise LabError("ADS clients are not running")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float) -> dict[str, Any]:
        return self._read(timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        if self.proc is None or self.proc.stdout is None:
            raise LabError("ADS clients are not running")
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise TimedOut(f"ADS clients said nothing for {timeout}s (log: {self.log_path})")
        line = self.proc.stdout.readline()
        if not line:
            raise LabError(f"ADS clients exited: {self.log()[-2000:]}")
        return dict(json.loads(line.decode()))

    def stop(self, sig: int | None = None) -> None:
        if self.proc is not None and self.running and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        proc = self.proc
        super().stop() if sig is None else super().stop(sig)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()


class ClientFleet:
    """Clients spread over as many bench/ads_clients.py processes as `per_process` asks, so
    thousands of streams are not limited by one client event loop; commands go to every
    process at once and their answers are merged into one, as one process would give."""

    def __init__(
        self, workdir: Path, serve: Heliostat, clients: int, mode: str, per_process: int
    ) -> None:
        count = max(1, -(-clients // per_process))
        shares = [clients // count + (1 if i < clients % count else 0) for i in range(count)]
        self.parts = [
            AdsClients(workdir, serve, share, mode, part) for part, share in enumerate(shares)
        ]

    def start(self) -> None:
        """Every process subscribes at once; returns when all of them hold a configuration."""
        for part in self.parts:
            part.launch()
        for part in self.parts:
            part.wait_ready()

    def command(self, line: str, timeout: float) -> dict[str, Any]:
        for part in self.parts:
            part.send(line)
        return merge([part.answer(timeout) for part in self.parts])


def merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One answer from several client processes' answers to the same command."""
    event = answers[0]["event"]
    if any(a["event"] != event for a in answers):
        raise LabError(f"ADS client processes disagree: {answers}")
    if event == "status":
        return {
            "event": event,
            "ready": sum(a["ready"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "errors": sorted({e for a in answers for e in a["errors"]})[:3],
            "responses": sum(a["responses"] for a in answers),
            "last_response_at": max(a["last_response_at"] for a in answers),
        }
    if event == "acked":
        return {
            "event": event,
            "acked": sum(a["acked"] for a in answers),
            "missing": [m for a in answers for m in a["missing"]][:10],
        }
    if event == "report":
        return {"event": event, "clients": [row for a in answers for row in a["clients"]]}
    raise LabError(f"ADS clients answered an unknown event: {answers[0]}")


def main(argv: list[str] | None = None) -> int:
    """Some cases alone, e.g. the 1,000-stream delta rows, without the whole fan-out run:

        python -m bench.fanout --clients 1000 --modes delta delta-eds --out /tmp/f.json

    `--serve-path DIR` runs serve (and the clients) from another checkout's code (its
    PYTHONPATH), so two versions can be measured in the same minutes by the same bench."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=main.__doc__)
    parser.add_argument("--size", choices=tuple(PLANS), default="full")
    parser.add_argument("--clients", type=int, nargs="+", default=[TARGET_CLIENTS])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["delta", "delta-eds"])
    parser.add_argument("--changes", type=int, default=None, help="changes per case")
    parser.add_argument("--serve-path", default=None, metavar="DIR[:DIR...]")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    if args.serve_path is not None:
        paths = [str(Path(p).resolve()) for p in args.serve_path.split(os.pathsep)]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    cases = [(clients, mode) for clients in args.clients for mode in args.modes]
    plan = PLANS[args.size]
    if args.changes is not None:
        plan = dataclasses.replace(plan, changes=args.changes)
    with tempfile.TemporaryDirectory(prefix="heliostat-fanout-") as workdir:
        result = run(args.size, Path(workdir), cases, plan)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result), flush=True)
    return 0 if not result["failed_cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
