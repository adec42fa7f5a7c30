"""Convergence: a replica's signal changes -> a real Envoy's `/clusters` shows the new weight.

One region of simulated replicas (one `heliostat sim fleet` process), `heliostat serve`
scraping them every INTERVAL_S, and two gateways (one State-of-the-World, one delta xDS)
whose `/clusters` is polled every POLL_S. No traffic goes through Envoy: the change is made
at the replica itself, so what is timed is the control loop alone.

A sample pair on one replica:

- forward: FLOOD_EXTRA requests beyond its slots are sent straight to the replica, so its
  queue is deep at once (waiting = 3 x the queue threshold, past the law's hard-saturation
  line of 2 x). Timed from the moment the replica's own `/metrics` shows the deep queue
  (polled every few ms while the flood arrives) until the gateway shows the replica's
  weight leave 100 (it is cut to its saturated goal in one step).
- back: the replica is reset (`POST /sim/reset` empties its queue and slots). Timed from the
  reset until every gateway shows the weight rise above what it was cut to (the first step
  of the ramp; it used to be cut to the floor, and "above the floor" no longer measures it).

Replicas are used in turn, so one ramps back to full weight (also timed: `restore_ms`)
while the next is measured.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Size, median, percentile, table
from heliostat.balance import weights
from heliostat.lab.mesh import MODEL, mesh_document
from heliostat.lab.processes import (
    LOCALHOST,
    Envoy,
    Heliostat,
    LabError,
    Process,
    SimFleet,
    free_port,
    http_get,
    write_policy,
)
from heliostat.signals.adapters import read_exposition
from heliostat.signals.record import Reading
from heliostat.sim import loadgen

INTERVAL_S = 0.5  # signals.interval of the policy (mesh_document's setting)
POLL_S = 0.01
QUEUE_POLL_S = 0.002
REGION = "us-east"
SLOTS = 4
QUEUE_THRESHOLD = 2  # mesh_document's thresholds.queue
FLOOD_EXTRA = 3 * QUEUE_THRESHOLD  # waiting requests: 3x the threshold, past hard saturation
FLOOD_TOKENS = 4000  # at speed 1 a request decodes for ~100 s: the queue cannot drain by itself
CHANGE_TIMEOUT_S = 20.0
# A push lands a few tens of ms after the scrape it follows; a reset within this much of
# seeing the push comes before the next scrape.
RESET_JITTER_S = INTERVAL_S - 0.15
SEED = 6
MODES = ("sotw", "delta")

# size -> (replicas, sample pairs). Each replica is measured once: a pair turns its weight
# twice (cut, ramp back), and the control law allows a replica at most
# weights.MAX_REVERSALS turns per REVERSAL_WINDOW_S (anti-flapping).
# A replica measured again would have its cut or its ramp held by that budget for up to a
# minute, and the sample would time out or measure the budget, not the control loop.
PLAN: Mapping[Size, tuple[int, int]] = {"tiny": (2, 1), "quick": (12, 12), "full": (60, 60)}


@dataclass
class Sample:
    replica: str
    direction: str  # "forward" (to the floor) | "back" (off the floor)
    ms: dict[str, float]  # mode -> milliseconds


@dataclass
class Restores:
    """When each reset replica is back at full weight, watched on the SotW gateway."""

    reset_at: dict[str, float] = field(default_factory=dict)
    durations_ms: list[float] = field(default_factory=list)

    def observe(self, now: float, weights_now: Mapping[str, int]) -> None:
        for address, at in list(self.reset_at.items()):
            if weights_now.get(address) == weights.W_MAX:
                self.durations_ms.append((now - at) * 1000)
                del self.reset_at[address]


class Gateways:
    """The polled gateways: one read of every `/clusters`, feeding the restore tracker."""

    def __init__(self, envoys: Mapping[str, Envoy], restores: Restores) -> None:
        self.envoys = envoys
        self.restores = restores

    def read(self) -> dict[str, dict[str, int]]:
        now = time.monotonic()
        seen = {
            mode: {a: int(h.get("weight", 0)) for a, h in envoy.hosts(MODEL).items()}
            for mode, envoy in self.envoys.items()
        }
        self.restores.observe(now, seen["sotw"])
        return seen

    def idle(self, seconds: float) -> None:
        """Keep polling (restores are still timed) for `seconds`."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.read()
            time.sleep(POLL_S)

    def wait(
        self, address: str, moved: Callable[[int], bool], since: float, what: str
    ) -> dict[str, float]:
        """Poll until every gateway shows `moved(weight)` for `address`; ms since `since`."""
        found: dict[str, float] = {}
        deadline = since + CHANGE_TIMEOUT_S
        while len(found) < len(self.envoys):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: weight of {address} did not move in time")
            seen = self.read()
            now = time.monotonic()
            for mode, hosts in seen.items():
                if mode not in found and address in hosts and moved(hosts[address]):
                    found[mode] = (now - since) * 1000
            time.sleep(POLL_S)
        return found


class Flood:
    """Requests sent straight to one replica, held open until the replica is reset."""

    def __init__(self, address: str) -> None:
        url = f"http://{address}/v1/completions"
        body = loadgen.completion_body(MODEL, prompt_tokens=16, max_tokens=FLOOD_TOKENS)
        shots = [loadgen.Shot(0.0, url, {}, body, "flood") for _ in range(SLOTS + FLOOD_EXTRA)]
        self._thread = threading.Thread(
            target=lambda: asyncio.run(loadgen.run(shots, timeout=CHANGE_TIMEOUT_S * 3)),
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=CHANGE_TIMEOUT_S * 3 + 5)


def _waiting(address: str) -> float:
    """The replica's waiting requests, parsed by heliostat's own vLLM adapter."""
    _, text = http_get(f"http://{address}/metrics")
    reading = read_exposition(text, "vllm", MODEL)
    if not isinstance(reading, Reading) or reading.waiting is None:
        raise LabError(f"{address}/metrics: no waiting requests in it ({reading})")
    return float(reading.waiting)


def _deep_queue_seen(address: str) -> float:
    """When the flood's queue became visible at the replica: the end of the last read that
    did not show it yet (so the change is never placed later than it happened)."""
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    before = time.monotonic()
    while time.monotonic() < deadline:
        if _waiting(address) >= FLOOD_EXTRA:
            return before
        before = time.monotonic()
        time.sleep(QUEUE_POLL_S)
    raise TimeoutError(f"the flood's queue never showed at {address}")


def _measure_pair(
    gateways: Gateways,
    fleet: SimFleet,
    address: str,
    rng: random.Random,
    deliveries: list[float],
) -> list[Sample]:
    gateways.wait(address, lambda w: w == weights.W_MAX, time.monotonic(), "settle")
    # Settling ends just after a push, i.e. just after a scrape: start at a random phase of
    # the scrape cycle, or every sample would wait a whole interval for the next scrape.
    gateways.idle(rng.uniform(0.0, INTERVAL_S))
    flood = Flood(address)
    sent = time.monotonic()
    flood.start()
    try:
        changed = _deep_queue_seen(address)
        deliveries.append((changed - sent) * 1000)
        forward = gateways.wait(address, lambda w: w < weights.W_MAX, changed, "forward")
        cut = max(hosts.get(address, weights.W_MAX) for hosts in gateways.read().values())
        # The same for the reset, but before the next scrape: the flood stays one scrape's
        # sample, so every "back" starts from the same saturated level.
        gateways.idle(rng.uniform(0.0, RESET_JITTER_S))
    finally:
        reset = time.monotonic()
        fleet.reset(address)  # the change is undone whatever happened
        flood.join()
    gateways.restores.reset_at[address] = reset
    back = gateways.wait(address, lambda w: w > cut, reset, "back")
    return [Sample(address, "forward", forward), Sample(address, "back", back)]


def run(size: Size, workdir: Path) -> dict[str, Any]:
    count, pairs = PLAN[size]
    replicas = [f"{LOCALHOST}:{free_port()}" for _ in range(count)]
    document = mesh_document(free_port(), {REGION: replicas}, slots=SLOTS, speed=1.0)
    policy = workdir / "policy.yaml"
    write_policy(policy, document)
    processes: list[Process] = []
    samples: list[Sample] = []
    restores = Restores()
    deliveries: list[float] = []
    try:
        fleet = SimFleet(policy, workdir, speed=None)
        processes.append(fleet)
        fleet.start()
        heliostat = Heliostat(policy, workdir)
        processes.append(heliostat)
        heliostat.start()
        envoys: dict[str, Envoy] = {}
        for mode in MODES:
            envoy = Envoy(
                workdir,
                heliostat,
                node_id=f"gw-{mode}",
                region=REGION,
                delta=mode == "delta",
                listener_port=free_port(),
            )
            processes.append(envoy)
            envoy.start()
            envoys[mode] = envoy
        gateways = Gateways(envoys, restores)
        rng = random.Random(SEED)
        for index in range(pairs):
            address = replicas[index % count]
            samples += _measure_pair(gateways, fleet, address, rng, deliveries)
        # let the last replicas finish their ramp, so every reset has a restore time
        # (not for the smoke test: its restores are whatever finished meanwhile)
        deadline = time.monotonic() + (CHANGE_TIMEOUT_S if size != "tiny" else 0.0)
        while restores.reset_at and time.monotonic() < deadline:
            gateways.read()
            time.sleep(POLL_S)
    finally:
        for process in reversed(processes):
            process.stop()
    return _result(size, samples, restores, deliveries)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(median(values), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(max(values, default=0.0), 1),
    }


def _result(
    size: Size, samples: list[Sample], restores: Restores, deliveries: list[float]
) -> dict[str, Any]:
    def of(mode: str, direction: str | None = None) -> list[float]:
        return [
            round(s.ms[mode], 1)
            for s in samples
            if mode in s.ms and (direction is None or s.direction == direction)
        ]

    primary = of("sotw")
    return {
        "interval_s": INTERVAL_S,
        "samples": primary,
        "p50_ms": round(median(primary), 1),
        "p99_ms": round(percentile(primary, 99), 1),
        "size": size,
        "xds": "sotw (samples, p50_ms, p99_ms); delta measured at the same time",
        "poll_ms": POLL_S * 1000,
        "replicas": len({s.replica for s in samples}),
        "by_direction": {
            mode: {
                d: {"samples": len(of(mode, d)), **_stats(of(mode, d))} for d in ("forward", "back")
            }
            for mode in MODES
        },
        "delta": {"samples": of("delta"), **_stats(of("delta"))},
        "restore_ms": {
            "samples": [round(v, 1) for v in restores.durations_ms],
            **_stats(restores.durations_ms),
        },
        "flood_delivery_ms": _stats(deliveries),
        "notes": NOTES + ("" if size != "tiny" else " Tiny size: 2 samples only (smoke test)."),
    }


NOTES = (
    "A sample is one signal change at one simulated replica (vLLM metrics, scraped by "
    "heliostat serve every interval_s) until a real Envoy's /clusters shows that replica's "
    "weight move, polled every poll_ms; no request goes through Envoy meanwhile. Changes "
    "are made at a random phase of the scrape cycle (seeded). 'forward': the replica's "
    "queue is flooded to 3x the queue threshold, timed from when the replica's own /metrics"
    " shows it (flood_delivery_ms: from sending the flood to that); past 2x the law "
    "saturates it at once (no smoothing, no two-tick confirmation) and Envoy shows weight "
    "100 cut to its saturated goal in one step. Made of: the wait for the next scrape "
    "(0..interval_s, uniform), the scrape round (every replica read), the tick (as soon as "
    "the round lands), compute + translate, the xDS push and Envoy applying EDS. 'back': "
    "the replica is reset (queue empty) before the next scrape, so one scrape saw the "
    "flood. That one hard sample lifted the smoothed level (EWMA, 5 s time constant) to the"
    " saturation line; the next scrape's clear sample (at most half way to the thresholds) "
    "takes the lift back (weights.settle), and the turn back up after a cut forced by "
    "saturation, on a clear level, is not held by the minimum gap between two turns "
    "(weights.MIN_REVERSAL_GAP_S applies to turns on soft evidence only; the budget of "
    "weights.MAX_REVERSALS turns per weights.REVERSAL_WINDOW_S still holds), so the first "
    "ramp step (doubling from the cut) is pushed after that scrape. So 'forward' and 'back'"
    " are both set by the scrape interval. restore_ms: reset until the weight is back at "
    "100. Raises are at most x2 per tick (ramp-in by design, so a replica coming back is "
    "not stampeded): from the saturated goal (W_MAX x NEAR_FACTOR^2 = 25) that is the first"
    " step at 'back' and one more a round later, so restore_ms is about 'back' plus one "
    "interval_s; it is not the signal-change latency."
)


def summary(result: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for mode, directions in result["by_direction"].items():
        for direction, stats in directions.items():
            rows.append([mode, direction, stats["samples"], stats["p50_ms"], stats["p99_ms"]])
    restore = result["restore_ms"]
    if restore["samples"]:
        rows.append(
            [
                "sotw",
                "restore to 100",
                len(restore["samples"]),
                restore["p50_ms"],
                restore["p99_ms"],
            ]
        )
    head = (
        f"signal change -> Envoy /clusters, interval {result['interval_s']} s: "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
        f"over {len(result['samples'])} samples"
    )
    return head + "\n\n" + table(["xds", "direction", "samples", "p50 ms", "p99 ms"], rows)
