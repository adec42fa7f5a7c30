"""The control law through three real Envoy gateways (one per region) and simulated replicas.

Everything is measured at the replicas (`/sim/stats`) or read from Envoy's admin API; the
mesh ticks every 0.5 s (signals.interval), so "two ticks" is about a second.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heliostat.lab.mesh import MODEL, Mesh
from heliostat.sim import loadgen
from tests.e2e.harness import Process, SteadyLoad, law_mesh, results_since, wait_until

pytestmark = pytest.mark.envoy


def _own_region_share(mesh: Mesh) -> dict[str, float]:
    shares = {}
    for origin, served in mesh.served_by_origin().items():
        shares[origin] = served[origin] / sum(served.values())
    return shares


def _sample_signals(
    mesh: Mesh, addresses: list[str], stop: threading.Event, into: list[dict[str, Any]]
) -> None:
    while not stop.is_set():
        try:
            entries = mesh.heliostat.state()["signals"]["models"][MODEL]
            into.extend(e for e in entries if e["address"] in addresses)
        except Exception:
            pass
        stop.wait(0.25)


@pytest.fixture
def sampler() -> Iterator[Any]:
    threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(mesh: Mesh, addresses: list[str]) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        stop = threading.Event()
        thread = threading.Thread(
            target=_sample_signals, args=(mesh, addresses, stop, samples), daemon=True
        )
        thread.start()
        threads.append((thread, stop))
        return samples

    yield start
    for thread, stop in threads:
        stop.set()
        thread.join(timeout=5)


def test_moderate_load_stays_in_each_gateways_own_region(
    tmp_path: Path, processes: list[Process]
) -> None:
    mesh = law_mesh(tmp_path, processes, idle_ticks=4)  # a few ticks with idle signals
    shots = (
        mesh.shots("us-east", 8, 8) + mesh.shots("eu-west", 8, 8) + mesh.shots("ap-southeast", 4, 8)
    )
    report = mesh.run(shots)
    assert len(report.ok) == len(shots)
    shares = _own_region_share(mesh)
    print("own-region share per gateway:", {r: round(s, 3) for r, s in shares.items()})
    assert set(shares) == {"us-east", "eu-west", "ap-southeast"}
    assert all(share >= 0.95 for share in shares.values()), shares


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes.
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_a_region_at_twice_its_capacity_overflows_a_bounded_share_to_the_nearest_in_budget_region(
    tmp_path: Path, processes: list[Process], sampler: Any
) -> None:
    mesh = law_mesh(tmp_path, processes, idle_ticks=4)
    rescuer_signals = sampler(mesh, mesh.replicas["eu-west"])
    duration = 14.0
    shots = (
        mesh.shots("ap-southeast", 22, duration, label="surge")
        + mesh.shots("eu-west", 4, duration)
        + mesh.shots("us-east", 4, duration)
    )
    report = mesh.run(shots, timeout=60)
    settled = results_since(report, "surge", duration / 2)
    regions = Counter(r.replica_region for r in settled if r.ok)
    total = sum(regions.values())
    share_eu = regions["eu-west"] / total
    print("surge second half served by:", dict(regions), "eu-west share", round(share_eu, 3))
    decisions = mesh.heliostat.state()["control"]["decisions"]["models"][MODEL]["regions"]
    print("ap decisions:", decisions["ap-southeast"])
    max_share = mesh.document["spec"]["models"][0]["overflow"]["max_share"]
    # Overflow happens, goes to eu-west (160 ms, within the 170 ms budget), never to us-east
    # (210 ms, beyond it), and stays within max_share (plus sampling noise).
    assert share_eu > 0.05
    assert share_eu <= max_share + 0.05
    assert regions["us-east"] == 0
    # The rescuer's own demand was reserved: it was never tipped over. A Poisson burst may
    # queue a request for a moment (the threshold is 2 on 4-slot replicas); saturation held
    # for more than a tenth of the surge would not be a moment.
    waits = [s["waiting"] for s in rescuer_signals if s["waiting"] is not None]
    assert waits, "no rescuer samples"
    threshold = mesh.document["spec"]["models"][0]["thresholds"]["queue"]
    at_threshold = sum(1 for w in waits if w >= threshold)
    print("rescuer waiting max", max(waits), "at threshold", at_threshold, "of", len(waits))
    assert at_threshold <= 0.1 * len(waits)


def _weight(mesh: Mesh, region: str, address: str) -> int:
    return int(mesh.envoys[region].hosts(MODEL)[address]["weight"])


def _share(results: list[loadgen.Result], replica: str, of: set[str]) -> float:
    served = [r.replica for r in results if r.ok and r.replica in of]
    return served.count(replica) / max(1, len(served))


def test_a_slow_replica_loses_its_share_within_two_ticks(
    tmp_path: Path, processes: list[Process]
) -> None:
    """One of us-east's two replicas turns twelve times slower under load, and the law cuts its
    weight on the first evidence it has: most often a scrape showing its queue at twice its
    threshold, unmistakable overload that the law does not average (the next tick cuts it);
    sometimes its measured capacity falling tiers first (Envoy's least-request picks keep
    its queue short). Either way Envoy then sends it less.

    Counted in ticks, read with what heliostat saw (`/debug/state`: the scraped signals, the
    published view and the tick count in one answer), so a loaded machine that ticks late
    does not fail it; each phase ends on what happened (requests served, the cut), not on a
    schedule. The shares are of the requests sent before the fault and after Envoy had the
    cut, whoever served them (the client's replica header).

    Twelve times, not six: at six, Envoy's least-request picks (two choices on in-flight
    counts) kept the slow replica's queue short enough that neither evidence was certain,
    and the weight could sit at half (the `near` band) until the averaged level saturated:
    in 3 runs of 9, 17 and 22 ticks, and once not below half within 30 s."""
    mesh = law_mesh(
        tmp_path,
        processes,
        {"us-east": 2, "eu-west": 1, "ap-southeast": 1},
        gateway_regions=("us-east",),  # the only users; the other regions lend room
    )
    slow, fast = mesh.replicas["us-east"]
    fleet = mesh.fleet_of(slow)
    hard_queue = 2 * mesh.document["spec"]["models"][0]["thresholds"]["queue"]

    def served() -> int:
        return sum(int(fleet.stats(a)["received"]) for a in (slow, fast))

    def seen(state: dict[str, Any]) -> tuple[int, int | None, int]:
        """(ticks, the slow replica's queue as scraped, its weight in us-east's view)."""
        waiting = next(
            e["waiting"] for e in state["signals"]["models"][MODEL] if e["address"] == slow
        )
        view = state["views"]["regions"]["us-east"][MODEL]["endpoints"]
        weight = next(e["weight"] for e in view if e["address"] == slow)
        return int(state["control"]["ticks"]), waiting, int(weight)

    load = SteadyLoad(mesh, "us-east", rate=10).start()
    load_started = time.monotonic()
    # A second to fill the replicas, then about 30 requests shared while both are alike.
    wait_until(lambda: served() >= 40, timeout=30, message="40 requests served")
    fault_tick, _, before = seen(mesh.heliostat.state())
    fleet.fault(slow, kind="slow", factor=12)
    faulted_at = time.monotonic()
    overload_tick: int | None = None  # the first tick whose signals show twice the threshold
    cut_tick: int | None = None  # the first tick whose view has the weight cut
    deadline = faulted_at + 30
    while cut_tick is None and time.monotonic() < deadline:
        tick, waiting, weight = seen(mesh.heliostat.state())
        if overload_tick is None and waiting is not None and waiting >= hard_queue:
            overload_tick = tick
        if weight < before / 2:
            cut_tick = tick
        time.sleep(0.1)
    assert cut_tick is not None, f"the slow replica's weight stayed at {before} or above half"
    # Envoy has it once the push lands (milliseconds: this is not the law's time).
    wait_until(
        lambda: _weight(mesh, "us-east", slow) < before / 2,
        timeout=5,
        message="Envoy has the slow replica's lower weight",
    )
    cut_at = time.monotonic()
    cut_reason = next(
        e["reason"]
        for e in mesh.heliostat.state()["views"]["regions"]["us-east"][MODEL]["endpoints"]
        if e["address"] == slow
    )
    time.sleep(1)  # what was in flight at the cut is not the cut's doing
    counted = served()
    wait_until(lambda: served() >= counted + 50, timeout=30, message="50 requests after the cut")
    healed_at = time.monotonic()
    fleet.heal(slow)  # its queue drains at full speed: the test need not wait it out
    report = load.stop()
    before_fault = [r for r in report.results if load_started + 1 <= r.started < faulted_at]
    after_cut = [r for r in report.results if cut_at + 1 <= r.started < healed_at]
    share_before = _share(before_fault, slow, {slow, fast})
    share_after = _share(after_cut, slow, {slow, fast})
    print(
        f"weight {before} -> {_weight(mesh, 'us-east', slow)}: fault at tick {fault_tick}, "
        f"queue at {hard_queue} seen at tick {overload_tick}, cut at tick {cut_tick} "
        f"({cut_at - faulted_at:.2f}s after the fault); slow replica's share "
        f"{share_before:.2f} of {len(before_fault)} -> {share_after:.2f} of {len(after_cut)}; "
        f"why: {cut_reason}"
    )
    # From the fault: the queue must first build past twice its threshold (a second or two at
    # this load), or the capacity estimate fall, then a tick or two; 16 ticks (8 s) at most.
    assert cut_tick - fault_tick <= 16
    # Where this test's reads caught the scrape that showed the overload (a 0.1 s poll may
    # miss one the tick acted on at once), the cut came within two ticks of it: the tick that
    # takes that scrape, and one more should it land just after a tick.
    if overload_tick is not None:
        assert cut_tick - overload_tick <= 2
    assert share_before > 0.35
    assert share_after < share_before - 0.15
    assert report.results and len(report.ok) == len(report.results)  # slower, not failed


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes.
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_a_region_outage_fails_over_to_the_next_region(
    tmp_path: Path, processes: list[Process]
) -> None:
    mesh = law_mesh(tmp_path, processes, idle_ticks=4)
    duration = 14.0
    shots = mesh.shots("eu-west", 8, duration, label="eu")
    started = time.monotonic()
    finish = mesh.start_load(shots)
    time.sleep(4)
    mesh.fleets["eu-west"].kill()  # the whole region's replicas die at once
    killed_at = time.monotonic() - started
    report = finish()
    origin = min(r.started for r in report.results)
    failed = [r for r in report.results if not r.ok]
    in_flight_at_kill = [
        r for r in report.results if r.started - origin < killed_at < r.started - origin + r.latency
    ]
    after = [r for r in report.results if r.started - origin > killed_at + 2.5]
    print(
        f"failed {len(failed)} of {len(report.results)}; in flight at kill "
        f"{len(in_flight_at_kill)}; served after by {Counter(r.replica_region for r in after)}"
    )
    # Only requests in flight at the kill may fail; retries move the rest to us-east.
    assert len(failed) <= len(in_flight_at_kill)
    assert after and all(r.ok and r.replica_region == "us-east" for r in after)
    hosts = mesh.envoys["eu-west"].hosts(MODEL)
    eu_flags = {a: hosts[a].get("health_flags", "") for a in mesh.replicas["eu-west"]}
    print("eu-west hosts after the outage:", eu_flags)
    assert all(flags != "healthy" for flags in eu_flags.values())


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes.
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_when_every_in_budget_region_is_saturated_batch_is_refused_first_and_interactive_flows(
    tmp_path: Path, processes: list[Process]
) -> None:
    mesh = law_mesh(
        tmp_path, processes, {"us-east": 1, "eu-west": 1, "ap-southeast": 1}, idle_ticks=4
    )
    duration = 14.0
    shots = []
    for region in ("us-east", "eu-west", "ap-southeast"):
        shots += mesh.shots(region, 6, duration, label="interactive", seed=1)
        shots += mesh.shots(
            region, 10, duration, label="batch", seed=2, headers={"x-priority": "batch"}
        )
    report = mesh.run(shots, timeout=90)
    batch = results_since(report, "batch", duration / 2)
    interactive = results_since(report, "interactive", duration / 2)
    # Refused at the gateway (drop_overloads, answered 429 with retry-after by the listener).
    refused = [
        r
        for r in batch
        if r.status == 429
        and r.headers.get("retry-after")
        and "true"
        in (
            r.headers.get("x-envoy-drop-overload"),
            r.headers.get("x-envoy-unconditional-drop-overload"),
        )
    ]
    print(
        "batch statuses",
        Counter(r.status for r in batch),
        "refused",
        len(refused),
        "interactive statuses",
        Counter(r.status for r in interactive),
    )
    assert len(refused) >= 0.1 * len(batch)
    assert all(r.status in (200, 429) for r in batch)
    assert len([r for r in batch if r.status == 429]) == len(refused)  # refused, not failed
    # Batch first: interactive requests are refused far less (some may be while the queue
    # built before refusing started, 3 s in, is drained), and none fails otherwise.
    interactive_refused = sum(r.status == 429 for r in interactive) / len(interactive)
    assert interactive_refused < 0.5 * len(refused) / len(batch)
    assert all(r.ok or r.status == 429 for r in interactive)
    assert sum(r.ok for r in interactive) >= 0.8 * len(interactive)


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes.
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_constant_load_converges_and_pushes_stop(tmp_path: Path, processes: list[Process]) -> None:
    mesh = law_mesh(tmp_path, processes)
    interval, warmup, ticks = 0.5, 25.0, 30
    duration = warmup + ticks * interval + 2
    shots = (
        mesh.shots("us-east", 8, duration)
        + mesh.shots("eu-west", 8, duration)
        + mesh.shots("ap-southeast", 4, duration)
    )
    finish = mesh.start_load(shots)
    time.sleep(warmup)  # the smoothing time constant is 8 s: three of them to converge
    samples = [mesh.heliostat.metric("heliostat_control_pushes_total")]
    weights = [{a: h["weight"] for a, h in mesh.envoys["us-east"].hosts(MODEL).items()}]
    for _ in range(ticks):
        time.sleep(interval)
        samples.append(mesh.heliostat.metric("heliostat_control_pushes_total"))
        weights.append({a: h["weight"] for a, h in mesh.envoys["us-east"].hosts(MODEL).items()})
    report = finish()
    pushes = samples[-1] - samples[0]
    print(
        f"pushes before convergence {samples[0]:.0f}, during {ticks} ticks at constant load "
        f"{pushes:.0f}; us-east gateway weights {weights[0]} -> {weights[-1]}"
    )
    assert pushes == 0
    assert weights[0] == weights[-1]
    assert len(report.ok) == len(shots)
