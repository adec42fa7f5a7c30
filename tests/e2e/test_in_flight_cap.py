"""The control law's cap on requests in flight, through real Envoy gateways.

While a region refuses (its users' demand beyond what its slots admit) and keeps its admitted
users at home, each of its gateways caps the interactive requests it has in flight on the
model's cluster (a circuit breaker's max_requests, never above the operator's own) at the
region's slots plus the backlog its users can wait behind within the SLO, split over its
gateways (`balance.refusal.in_flight`). Past the cap Envoy answers 503 at once with
`x-envoy-overloaded`, and the listener adds the refusal's `retry-after`
(`xds.translate.refusal.overflow_mapper`). Once the demand falls below the level, the cap is
lifted to the loose guard armed while the region's capacity is observed
(`balance.refusal.loose_in_flight`: its slots and what they complete within the TTFT).

Here ap-southeast (one replica, 4 slots, about 10 requests/s) has two gateways and no region
within its network budget (eu-west is 200 ms away, the budget 170 ms): at twice its capacity
it refuses and keeps its users at home. What Envoy was told is read in each gateway's
/config_dump, what the law decided in heliostat's /debug/state, what happened at the client
(status, headers, latency) and at the replica (the most requests it held at once,
`POST /sim/peak`).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from heliostat.balance.overflow import QUEUE_SHARE
from heliostat.lab.mesh import MODEL, Mesh
from heliostat.sim import loadgen
from heliostat.wire import MODEL_HEADER
from tests.e2e.harness import (
    LAW_SLOTS,
    Envoy,
    Process,
    free_port,
    law_mesh,
    wait_ticks,
    wait_until,
)

pytestmark = pytest.mark.envoy

REGION = "ap-southeast"
# ap-southeast's only neighbour is beyond its 170 ms budget: nowhere to lend its excess.
REGIONS = {REGION: {"eu-west": 200}, "eu-west": {}}
REPLICAS = {REGION: 1, "eu-west": 1}
SLOTS = REPLICAS[REGION] * LAW_SLOTS  # the region's slots: replicas x max_num_seqs
OPERATOR_MAX_REQUESTS = 48  # the operator's interactive breaker: the cap is never above it
TTFT_S = 0.8  # the mesh's SLO
OVERLOAD_RPS = 10.0  # per gateway: twice the region's ~10 requests/s over its two gateways
OVERLOAD_S = 16.0
LIGHT_RPS = 2.0  # one gateway, a fifth of the region's capacity
LIGHT_S = 8.0  # the cap lifts within 3.4-3.9 s of the overload's end (three runs)
LIFT_TIMEOUT_S = 20.0
FAST_S = 0.05  # a refusal answered by the gateway, not a model server


def published_cap(envoy: Envoy) -> int | None:
    """The interactive (HIGH) max_requests of the model's cluster in Envoy's config_dump
    (None: the cluster is not there yet)."""
    for section in envoy.config_dump(include_eds=False)["configs"]:
        for entry in section.get("dynamic_active_clusters", ()):
            cluster = entry["cluster"]
            if cluster["name"] != MODEL:
                continue
            for threshold in cluster.get("circuit_breakers", {}).get("thresholds", ()):
                if threshold.get("priority") == "HIGH":
                    return int(threshold["max_requests"])
    return None


def region_state(mesh: Mesh) -> dict[str, Any]:
    models = mesh.heliostat.state()["control"]["decisions"]["models"]
    return dict(models[MODEL]["regions"][REGION])


def expected_cap(state: dict[str, Any]) -> int:
    """The cap the law's own report implies: the region's slots and the backlog its users
    may wait behind within the TTFT (observed capacity x QUEUE_SHARE x TTFT), split over
    its gateways."""
    tolerated = math.floor(state["observed_capacity"] * QUEUE_SHARE * TTFT_S)
    return math.ceil((SLOTS + tolerated) / max(1, state["gateways"]))


def loose_cap(state: dict[str, Any]) -> int:
    """The loose guard the law's own report implies, not refusing: the region's slots and
    what they complete within the TTFT (observed capacity x TTFT), split over its gateways."""
    completed = math.floor(state["observed_capacity"] * TTFT_S)
    return math.ceil((SLOTS + completed) / max(1, state["gateways"]))


def shots(port: int, rate: float, duration: float, label: str, seed: int) -> list[loadgen.Shot]:
    rng = random.Random(f"{seed}-{label}")
    url = f"http://127.0.0.1:{port}/v1/completions"
    body = loadgen.completion_body(MODEL, prompt_tokens=32, max_tokens=24)
    return [
        loadgen.Shot(at, url, {MODEL_HEADER: MODEL}, body, label)
        for at in loadgen.poisson_times(rate, duration, rng)
    ]


def rebuilds(envoy: Envoy) -> int:
    """How many times Envoy rebuilt a cluster (a cluster whose resource changed)."""
    return envoy.stat("cluster_manager.cluster_modified")


def active(envoy: Envoy) -> int:
    """Requests the gateway has in flight on the model's cluster now."""
    return envoy.stat(f"cluster.{MODEL}.upstream_rq_active")


def abandoned(envoy: Envoy) -> int:
    """Streamed tries the gateway gave up on (its per-try timeout: no response headers
    within twice the TTFT) and reset: Envoy stops counting them at once, the replica only
    when it next writes to the stream (at its first token), so each may still sit in the
    replica's queue beside the requests the cap admits."""
    return envoy.stat(f"cluster.{MODEL}.upstream_rq_per_try_timeout")


def overflows(envoy: Envoy) -> int:
    """Requests the model's cluster refused past its circuit breaker's max_requests (Envoy
    1.40 counts them apart from the pending requests' overflow)."""
    return envoy.stat(f"cluster.{MODEL}.upstream_rq_active_overflow")


def test_a_refusing_region_caps_what_each_gateway_has_in_flight_and_lifts_it_after(
    tmp_path: Path, processes: list[Process]
) -> None:
    begun = time.monotonic()
    mesh = law_mesh(
        tmp_path,
        processes,
        REPLICAS,
        regions=REGIONS,
        gateway_regions=(REGION,),
        model_overrides={
            "circuit_breakers": {"interactive": {"max_requests": OPERATOR_MAX_REQUESTS}}
        },
    )
    # A second gateway in the region: the cap is split over the region's gateways.
    listener = free_port()
    second = Envoy(
        tmp_path,
        mesh.heliostat,
        node_id=f"gw-{REGION}-2",
        region=REGION,
        delta=False,
        listener_port=listener,
    )
    processes.append(second)
    second.start()
    gateways = {"first": mesh.envoys[REGION], "second": second}
    ports = {"first": mesh.gateways[REGION], "second": listener}
    replica = mesh.replicas[REGION][0]
    fleet = mesh.fleet_of(replica)
    wait_until(
        lambda: all(published_cap(e) == OPERATOR_MAX_REQUESTS for e in gateways.values()),
        timeout=20,
        message="both gateways hold the model's cluster with the operator's breaker",
    )
    wait_ticks(mesh.heliostat, 2)
    assert region_state(mesh)["refusal"]["in_flight"] is None
    rebuilt_before = {name: rebuilds(e) for name, e in gateways.items()}
    overflowed_before = {name: overflows(e) for name, e in gateways.items()}

    # Twice the region's capacity, half on each gateway; nowhere within budget to lend it.
    load = [
        s
        for i, (name, port) in enumerate(ports.items())
        for s in shots(port, OVERLOAD_RPS, OVERLOAD_S, name, seed=i)
    ]
    started = time.monotonic()
    finish = mesh.start_load(load, timeout=OVERLOAD_S + 30)

    # Every max_requests each gateway was seen to hold, from the operator's on.
    caps: dict[str, list[int]] = {name: [OPERATOR_MAX_REQUESTS] for name in gateways}

    def sample() -> dict[str, int | None]:
        seen = {name: published_cap(e) for name, e in gateways.items()}
        for name, value in seen.items():
            if value is not None and value != caps[name][-1]:
                caps[name].append(value)
        return seen

    def capped() -> dict[str, Any] | None:
        state = region_state(mesh)
        cap = state["refusal"]["in_flight"]
        seen = sample()
        # The tight cap: the loose guard is armed before, once the capacity is observed.
        refusing = state["refusal"]["active"]
        return state if refusing and cap is not None and set(seen.values()) == {cap} else None

    state = wait_until(capped, timeout=15, interval=0.2, message="the cap in both gateways")
    capped_after = time.monotonic() - started
    # Published while refusing, as the law's report implies, never above the operator's.
    cap = int(state["refusal"]["in_flight"])
    print(
        f"\ncap {cap} published {capped_after:.1f}s into the overload; law: gateways "
        f"{state['gateways']}, observed capacity {state['observed_capacity']}/s, demand "
        f"{state['demand']}/s, refusal {state['refusal']['interactive']}"
    )
    assert state["refusal"]["active"] and state["sends"] == {}
    assert state["gateways"] == 2
    assert abs(cap - expected_cap(state)) <= 1  # a cap moves only by more than one request
    assert math.ceil(SLOTS / 2) <= cap < OPERATOR_MAX_REQUESTS

    # While it holds: what each gateway publishes and what the replica holds at once.
    # What each gateway admitted before the cap drains first (Envoy keeps a request it
    # admitted; the law refuses for the queue it built). Once a gateway has no more in flight
    # than its cap, its breaker keeps it there; a request reaches the replica's engine after
    # its gateway counted it and leaves it before, so from then on the replica holds at most
    # what the caps allow. (The replica's own count is no sign of that: on a loaded machine
    # a request its gateway already sent may not have reached the engine yet.)
    def drained() -> bool:
        seen = sample()
        return all(active(envoy) <= (seen[name] or 0) for name, envoy in gateways.items())

    wait_until(drained, timeout=10, interval=0.1, message="what was admitted before the cap")
    fleet.restart_peak(replica)
    gave_up = sum(abandoned(envoy) for envoy in gateways.values())
    window: dict[str, list[int | None]] = {name: [] for name in gateways}
    reports: list[dict[str, Any]] = []
    while time.monotonic() - started < OVERLOAD_S - 1.0:
        reports.append(region_state(mesh))
        for name, value in sample().items():
            window[name].append(value)
        time.sleep(0.25)
    peak = fleet.restart_peak(replica)
    gave_up = sum(abandoned(envoy) for envoy in gateways.values()) - gave_up
    report = finish()
    held = [c for values in window.values() for c in values]
    allowed = sum(max(c or 0 for c in values) for values in window.values())
    print(
        f"caps while refusing {Counter(held)}; the replica held at most {peak} at once "
        f"(allowed {allowed} over two gateways; {gave_up} tries abandoned on a loaded machine)"
    )
    assert all(c is not None and c <= OPERATOR_MAX_REQUESTS for c in held)
    assert all(
        abs(r["refusal"]["in_flight"] - expected_cap(r)) <= 1
        for r in reports
        if r["refusal"]["in_flight"] is not None
    )
    assert 0 < peak <= allowed + gave_up

    # Past the cap: 503 with x-envoy-overloaded and retry-after, from the gateway at once.
    statuses = Counter(r.status for r in report.results)
    overloaded = [r for r in report.results if r.status == 503]
    latencies = sorted(r.latency for r in overloaded)
    overflowed = {name: overflows(e) - overflowed_before[name] for name, e in gateways.items()}
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else None
    print(
        f"overload statuses {dict(statuses)}; 503 latency median "
        f"{1000 * statistics.median(latencies) if latencies else None} ms, p99 "
        f"{p99 and 1000 * p99} ms; Envoy's breaker overflows {overflowed}"
    )
    assert overloaded, "nothing refused past the cap"
    assert set(statuses) <= {200, 429, 503}
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overloaded)
    assert all(r.headers.get("retry-after", "").isdigit() for r in overloaded)
    assert p99 is not None and p99 < FAST_S
    # Every 503 is the breaker's, at the gateway that answered it.
    assert sum(overflowed.values()) == len(overloaded)
    assert all(overflowed.values())

    # Demand back below the level: the cap is lifted to the loose guard.
    lifted_from = time.monotonic()
    finish = mesh.start_load(
        shots(ports["first"], LIGHT_RPS, LIGHT_S, "light", seed=3), timeout=LIGHT_S + 30
    )

    def lifted() -> bool:
        state = region_state(mesh)
        guard = state["refusal"]["in_flight"]
        seen = sample()
        return (
            not state["refusal"]["active"]
            and guard is not None
            and guard > cap
            and abs(guard - loose_cap(state)) <= 1
            and set(seen.values()) == {guard}
        )

    wait_until(
        lifted,
        timeout=LIFT_TIMEOUT_S,
        interval=0.25,
        message="the cap lifted in both gateways",
    )
    lifted_after = time.monotonic() - lifted_from
    light = finish()
    rebuilt = {name: rebuilds(e) - rebuilt_before[name] for name, e in gateways.items()}
    print(
        f"lifted {lifted_after:.1f}s after the overload ended; max_requests held in turn "
        f"{caps}; cluster rebuilds {rebuilt}; light statuses "
        f"{dict(Counter(r.status for r in light.results))}; wall {time.monotonic() - begun:.0f}s"
    )
    for name, values in caps.items():
        moves = [b - a for a, b in itertools.pairwise(values)]
        assert values[-1] > cap and len(moves) >= 2  # published, lifted to the guard
        assert all(abs(move) > 1 for move in moves)  # a cap moves only by more than one
        # Each rebuild of the gateway's clusters is one of those moves: the model's cluster
        # changes with its cap alone here, not on every tick of the refusal.
        assert rebuilt[name] == len(moves), (name, rebuilt, values)
    assert all(r.ok for r in light.results[-5:])
