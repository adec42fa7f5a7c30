"""The east-west hop through real Envoys: what a region lends goes through the rescuer's gateway.

ap-southeast (one replica) is offered about twice what it serves; the control law lends a
share of its users to eu-west (160 ms, inside the 170 ms budget). With east-west gateways
(`start_mesh(east_west=True)`: each gateway announces an east-west port, the policy names it
as its region's east-west address), ap-southeast's gateway lists eu-west's gateway in
eu-west's locality instead of eu-west's replicas, and eu-west's gateway places the lent
requests on its own replicas, in the model cluster its own users' route uses (one set of
in-flight counts for both), held to eu-west's subset of it (heliostat/xds/translate/east_west.py).
Measured where it happened: each gateway's admin (`/clusters`: per-host totals and
in-flight gauges; `/stats`: the east-west listener's counters) and the replicas'
`/sim/stats` (the origin header the lender set, which the hop keeps).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from heliostat.lab.mesh import MODEL
from tests.e2e.harness import Process, law_mesh, results_since

pytestmark = pytest.mark.envoy


def test_lent_requests_go_through_the_rescuers_east_west_gateway(
    tmp_path: Path, processes: list[Process], mode: str
) -> None:
    """In both xDS forms: delta gateways get the assignments' LEDS form, where eu-west's
    gateway is the one member of its locality's collection."""
    mesh = law_mesh(
        tmp_path,
        processes,
        idle_ticks=2,
        delta=mode == "delta",
        east_west=True,
        model_overrides={"overflow": {"beyond_budget": "last_resort"}},
    )
    eu_gateway = mesh.envoys["eu-west"]
    assert eu_gateway.east_west_port is not None
    eu_address = f"127.0.0.1:{eu_gateway.east_west_port}"
    calm, surge = 4.0, 18.0
    shots = mesh.shots("eu-west", 6.0, calm + surge, label="eu-west")
    shots += mesh.shots("us-east", 4.0, calm + surge, label="us-east")
    shots += mesh.shots("ap-southeast", 19.0, surge, start=calm, label="ap-surge", seed=2)
    finish = mesh.start_load(shots, timeout=90)
    # While the share is in force, ap-southeast's gateway holds eu-west's gateway, not its
    # replicas, in its model cluster.
    lender = mesh.envoys["ap-southeast"]
    eu_replicas = set(mesh.replicas["eu-west"])
    seen: set[str] = set()
    busiest = 0  # the most requests eu-west's gateway saw in flight on its replicas at once
    # eu-west's demand as the law reads it (LRS, /debug/state) while lending is in force.
    eu_demand: list[float] = []
    began = time.monotonic()
    deadline = began + calm + surge
    while time.monotonic() < deadline:
        if time.monotonic() - began > calm + 6.0:
            demand = mesh.heliostat.state()["load_reports"]["demand"]
            eu_demand.append(demand.get(f"{MODEL}/eu-west", {}).get("interactive", 0.0))
        seen |= set(lender.hosts(MODEL))
        on_eu_hosts = eu_gateway.hosts(MODEL)
        busiest = max(
            busiest, sum(int(on_eu_hosts.get(a, {}).get("rq_active", 0)) for a in eu_replicas)
        )
        time.sleep(0.5)
    report = finish()
    print("ap-southeast's gateway held:", sorted(seen))
    assert eu_address in seen
    assert not seen & eu_replicas

    surge_results = results_since(report, "ap-surge", calm)
    served = Counter(r.replica_region for r in surge_results if r.ok)
    print("ap-southeast's surge served by:", dict(served))
    assert served["eu-west"] >= 20  # the law lent, and lent requests were served

    # The rescuer's east-west listener took them, into the model's own cluster: the one its
    # users' route uses. No cluster of the hop's own remains.
    listener = eu_gateway.stats(r"^http\.heliostat_east_west\.downstream_rq_total$")
    through_listener = listener["http.heliostat_east_west.downstream_rq_total"]
    assert through_listener >= served["eu-west"]
    assert not eu_gateway.stats(r"east-west\.upstream_rq_total$")
    assert not eu_gateway.hosts(MODEL + "|east-west")
    # One cluster counted both: eu-west's replicas in it took eu-west's own users' requests
    # and the lent ones (every try counts: at least as many as were served).
    own_users = sum(
        1 for r in report.results if r.shot.label == "eu-west" and r.replica_region == "eu-west"
    )
    hosts = eu_gateway.hosts(MODEL)
    on_replicas = sum(int(hosts[a].get("rq_total", 0)) for a in eu_replicas if a in hosts)
    print(
        "eu-west's gateway: east-west listener",
        through_listener,
        "own users",
        own_users,
        "model cluster on eu-west's replicas",
        on_replicas,
        "most in flight",
        busiest,
    )
    assert on_replicas >= own_users + through_listener
    assert busiest >= 1
    # eu-west's gateway reported the lent requests over LRS beside its users' (one cluster):
    # its demand counts its own users only, the lent ones once, at ap-southeast.
    own_rate = sum(1 for r in report.results if r.shot.label == "eu-west") / (calm + surge)
    lent_rate = through_listener / surge
    read = statistics.median(eu_demand)
    print(
        f"eu-west's demand read {read:.2f}/s:",
        f"its users offered {own_rate:.2f}/s, lent {lent_rate:.2f}/s",
    )
    assert lent_rate >= 2.0  # enough lent that counting it twice would show
    assert read < own_rate + lent_rate / 2

    # The replicas counted the lent requests by the lender's origin header (kept by the hop:
    # the round trip is charged from ap-southeast): every request the listener took landed
    # on an eu-west replica (a lent request is never lent onward), and only those did.
    stats = mesh.stats()
    on_eu = sum(stats[a]["by_origin_region"].get("ap-southeast", 0) for a in eu_replicas)
    print("ap-southeast-origin requests on eu-west's replicas", on_eu)
    assert on_eu >= through_listener
    # ... and nothing reached eu-west's replicas from ap-southeast but through the hop (the
    # lender lists eu-west's gateway, never its replicas); retries may add a try or two.
    assert on_eu <= through_listener + 3
    # The lent ones paid ap-southeast -> eu-west's 160 ms round trip once, not twice.
    lent_ttft = sorted(r.ttft for r in surge_results if r.ok and r.replica_region == "eu-west")
    assert lent_ttft[len(lent_ttft) // 2] >= 0.16
    assert lent_ttft[0] < 0.32 + 0.3  # the floor: one round trip and a fast prefill
