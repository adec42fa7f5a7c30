"""Failover: a region's replicas are killed mid-run; how long until its gateway's requests
succeed elsewhere, and how many requests fail meanwhile.

The three-region mesh of `heliostat.lab.mesh` (one simulated fleet process per region,
`heliostat serve`, one Envoy gateway per region) carries open-loop streamed load on every
gateway. Mid-run the fleet process of KILLED is SIGKILLed: every replica of the region dies
at once, in-flight streams are cut. Measured per trial, from the load generator's records
and the killed region's gateway's `/clusters` (polled every POLL_S):

- requests / failed_requests: every request sent / non-200 or transport error (all gateways);
- recover_ms: see NOTES (the definition is part of the result);
- the killed region's gateway alone: its requests, failures, requests in flight at the kill;
- first_elsewhere_ms: kill -> first token of the first request served by another region;
- hosts_out_ms: kill -> Envoy marks every killed host unhealthy (outlier ejection or
  heliostat's EDS health, whichever comes first) and the flags it showed;
- eds_unhealthy_ms: kill -> the gateway has heliostat's EDS marking them all UNHEALTHY.

At full size the region is brought back and killed again (TRIALS[size] trials).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Size, median, table
from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from heliostat.lab.processes import Process, wait_until
from heliostat.sim import loadgen

KILLED = "eu-west"
PER_REGION = {"us-east": 2, "eu-west": 2, "ap-southeast": 1}
RATES = {"us-east": 6.0, "eu-west": 8.0, "ap-southeast": 4.0}  # requests/s per gateway
# ~0.35 s of generation per request at the mesh's speed: a few streams are always in flight
# at the killed region, and us-east can absorb its load (4 slots x 2 replicas)
MAX_TOKENS = 48
POLL_S = 0.02
BUCKET_S = 0.5
EDS_UNHEALTHY = "failed_eds_health"


@dataclass(frozen=True)
class Plan:
    trials: int
    load_s: float  # load per trial
    kill_at_s: float  # into the load


PLANS: Mapping[Size, Plan] = {
    "tiny": Plan(trials=1, load_s=6.0, kill_at_s=2.5),
    "quick": Plan(trials=1, load_s=18.0, kill_at_s=6.0),
    "full": Plan(trials=4, load_s=30.0, kill_at_s=10.0),
}


class HostWatch:
    """Polls the killed region's gateway: when Envoy first shows every killed host unhealthy
    (outlier ejection or EDS health, whichever comes first), and when heliostat's EDS says so
    for all of them (`/failed_eds_health`, after `thresholds.failures` failed scrapes)."""

    def __init__(self, mesh: Mesh) -> None:
        self._envoy = mesh.envoys[KILLED]
        self._hosts = mesh.replicas[KILLED]
        self._stop = threading.Event()
        self.out_at: float | None = None
        self.eds_at: float | None = None
        self.flags: dict[str, str] = {}
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.is_set() and self.eds_at is None:
            try:
                hosts = self._envoy.hosts(MODEL)
            except OSError:
                hosts = {}
            flags = {a: hosts.get(a, {}).get("health_flags", "?") for a in self._hosts}
            now = time.monotonic()
            if self.out_at is None and all(f not in ("healthy", "?") for f in flags.values()):
                self.out_at = now
                self.flags = flags
            if all(EDS_UNHEALTHY in f for f in flags.values()):
                self.eds_at = now
            self._stop.wait(POLL_S)


def _trial(mesh: Mesh, plan: Plan, seed: int) -> dict[str, Any]:
    shots: list[loadgen.Shot] = []
    for region, rate in RATES.items():
        shots += mesh.shots(region, rate, plan.load_s, seed=seed, max_tokens=MAX_TOKENS)
    finish = mesh.start_load(shots, timeout=30)
    began = time.monotonic()
    time.sleep(max(0.0, began + plan.kill_at_s - time.monotonic()))
    watch = HostWatch(mesh)
    killed_at = time.monotonic()
    mesh.fleets[KILLED].kill()
    watch.start()
    report = finish()
    watch.stop()
    return _analyse(report, killed_at, watch)


def _analyse(report: loadgen.Report, killed_at: float, watch: HostWatch) -> dict[str, Any]:
    results = report.results
    local = [r for r in results if r.shot.label == KILLED]
    after = [r for r in local if r.started >= killed_at]
    in_flight = [r for r in local if r.started < killed_at < r.started + r.latency]

    def answered(r: loadgen.Result) -> float:  # first token, or the whole answer if unary
        return r.started + (r.ttft if r.ttft is not None else r.latency)

    # recovery: the earliest request started after the kill from which on every later one is ok
    recovered_by: loadgen.Result | None = None
    for r in reversed(after):
        if not r.ok:
            break
        recovered_by = r
    if recovered_by is not None:
        recover_ms = (answered(recovered_by) - killed_at) * 1000
    else:  # never recovered within the run: report the whole observed window, flagged
        end = max((r.started + r.latency for r in results), default=killed_at)
        recover_ms = (end - killed_at) * 1000
    elsewhere = [r for r in after if r.ok and r.replica_region not in (None, KILLED)]
    first_elsewhere = min((answered(r) for r in elsewhere), default=None)
    return {
        "requests": len(results),
        "failed_requests": sum(not r.ok for r in results),
        "recover_ms": round(recover_ms, 1),
        "recovered": recovered_by is not None,
        "killed_region": {
            "requests": len(local),
            "failed_requests": sum(not r.ok for r in local),
            "in_flight_at_kill": len(in_flight),
            "failed_in_flight_at_kill": sum(not r.ok for r in in_flight),
            "failed_started_after_kill": sum(not r.ok for r in after),
            "served_after_kill_by": dict(Counter(r.replica_region or "failed" for r in after)),
        },
        "first_elsewhere_ms": None
        if first_elsewhere is None
        else round((first_elsewhere - killed_at) * 1000, 1),
        "hosts_out_ms": None
        if watch.out_at is None
        else round((watch.out_at - killed_at) * 1000, 1),
        "hosts_out_flags": watch.flags,
        "eds_unhealthy_ms": None
        if watch.eds_at is None
        else round((watch.eds_at - killed_at) * 1000, 1),
        "errors": dict(Counter(r.error or f"http {r.status}" for r in results if not r.ok)),
        "timeline": _timeline(local, killed_at),
    }


def _timeline(local: list[loadgen.Result], killed_at: float) -> list[dict[str, Any]]:
    """The killed region's gateway per BUCKET_S of request start, relative to the kill."""
    buckets: dict[int, Counter[str]] = {}
    for r in local:
        index = int((r.started - killed_at) // BUCKET_S)
        buckets.setdefault(index, Counter())[
            "failed" if not r.ok else (r.replica_region or "?")
        ] += 1
    return [{"t_s": i * BUCKET_S, **buckets[i]} for i in sorted(buckets)]


def _restore(mesh: Mesh) -> None:
    """Bring the killed region back and wait until its gateway uses its own replicas again."""
    mesh.fleets[KILLED].start()
    envoy = mesh.envoys[KILLED]

    def healthy() -> bool:
        hosts = envoy.hosts(MODEL)
        return all(
            hosts.get(a, {}).get("health_flags") == "healthy"
            and hosts.get(a, {}).get("weight") == "100"
            for a in mesh.replicas[KILLED]
        )

    wait_until(healthy, timeout=60, interval=0.2, message=f"{KILLED} back in its gateway")
    time.sleep(12)  # outlier ejection (base 10 s) and the ramp behind us


def run(size: Size, workdir: Path) -> dict[str, Any]:
    plan = PLANS[size]
    processes: list[Process] = []
    trials: list[dict[str, Any]] = []
    try:
        mesh = start_mesh(workdir, processes, per_region=PER_REGION)
        time.sleep(1.5)  # a few ticks with idle signals
        for index in range(plan.trials):
            if index:
                _restore(mesh)
            trials.append(_trial(mesh, plan, seed=index + 1))
    finally:
        for process in reversed(processes):
            process.stop()
    worst = max(trials, key=lambda t: t["recover_ms"])
    return {
        "requests": sum(t["requests"] for t in trials),
        "failed_requests": sum(t["failed_requests"] for t in trials),
        "recover_ms": worst["recover_ms"],
        "recovered": all(t["recovered"] for t in trials),
        "recover_ms_median": round(median([t["recover_ms"] for t in trials]), 1),
        "size": size,
        "killed_region": KILLED,
        "per_region_replicas": PER_REGION,
        "rates_rps": RATES,
        "max_tokens": MAX_TOKENS,
        "load_s": plan.load_s,
        "kill_at_s": plan.kill_at_s,
        "trials": trials,
        "notes": NOTES,
    }


NOTES = (
    "Streamed completions (max_tokens each) at rates_rps on every gateway; kill_at_s into the load "
    "the killed region's fleet process is SIGKILLed (all its replicas at once). requests and "
    "failed_requests count every gateway (failed = non-200 or transport error, e.g. a stream "
    "cut mid-way). recover_ms: from the kill to the first token of R, where R is the earliest "
    "request of the killed region's gateway started after the kill such that R and every "
    "request of that gateway started after R succeeded (served by another region); "
    "'recovered': false means the last request still failed and recover_ms is the whole "
    "observed window. With several trials recover_ms is the worst trial. Requests in flight "
    "at the kill whose response had started cannot be retried by Envoy; requests started "
    "after it are retried by Envoy on connect failure (previous hosts, then previous "
    "priorities) until outlier detection ejects the dead hosts and heliostat marks them "
    "unhealthy (hosts_out_ms; eds_unhealthy_ms once heliostat's failed scrapes reached "
    "Envoy). Times to a first token include the emulated round trip to the serving region "
    "(us-east is 80 ms from eu-west) and the generation's first step; recover_ms also "
    "includes the wait for the next request to arrive after the kill (Poisson arrivals)."
)


def summary(result: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for number, trial in enumerate(result["trials"], 1):
        local = trial["killed_region"]
        rows.append(
            [
                number,
                trial["requests"],
                trial["failed_requests"],
                local["in_flight_at_kill"],
                local["failed_started_after_kill"],
                trial["first_elsewhere_ms"],
                trial["hosts_out_ms"],
                trial["eds_unhealthy_ms"],
                trial["recover_ms"],
            ]
        )
    head = (
        f"{result['killed_region']} killed mid-run: {result['failed_requests']} of "
        f"{result['requests']} requests failed; recovered in {result['recover_ms']} ms"
        + ("" if result["recovered"] else " (NOT recovered by the end of the run)")
    )
    headers = [
        "trial",
        "requests",
        "failed",
        "in flight at kill",
        "failed after kill",
        "first elsewhere ms",
        "hosts out ms",
        "EDS unhealthy ms",
        "recover ms",
    ]
    return head + "\n\n" + table(headers, rows)
