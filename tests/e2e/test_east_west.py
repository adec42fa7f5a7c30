"""The east-west hop through real Envoys: what a region lends goes through the rescuer's gateway.

ap-southeast (one replica) is offered about twice what it serves; the control law lends a
share of its users to eu-west (160 ms, inside the 170 ms budget). With east-west gateways
(`start_mesh(east_west=True)`: each gateway announces an east-west port, the policy names it
as its region's east-west address), ap-southeast's gateway lists eu-west's gateway in
eu-west's locality instead of eu-west's replicas, and eu-west's gateway places the lent
requests on its own replicas, by its own in-flight counts (heliostat/xds/translate/east_west.py).
Measured where it happened: each gateway's admin (`/clusters`, `/stats`: the east-west
listener's and its local cluster's counters) and the replicas' `/sim/stats` (the origin
header the lender set, which the hop keeps).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from heliostat.lab.mesh import MODEL
from tests.e2e.harness import Process, law_mesh, results_since

pytestmark = pytest.mark.envoy

LOCAL = MODEL + "|east-west"


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
    seen: set[str] = set()
    deadline = time.monotonic() + calm + surge
    while time.monotonic() < deadline:
        seen |= set(lender.hosts(MODEL))
        time.sleep(0.5)
    report = finish()
    print("ap-southeast's gateway held:", sorted(seen))
    assert eu_address in seen
    assert not seen & set(mesh.replicas["eu-west"])

    surge_results = results_since(report, "ap-surge", calm)
    served = Counter(r.replica_region for r in surge_results if r.ok)
    print("ap-southeast's surge served by:", dict(served))
    assert served["eu-west"] >= 20  # the law lent, and lent requests were served

    # The rescuer's east-west listener took them and its local cluster placed them.
    listener = eu_gateway.stats(r"^http\.heliostat_east_west\.downstream_rq_total$")
    local = eu_gateway.stats(rf"^cluster\.{MODEL}\|east-west\.upstream_rq_total$")
    print("eu-west's gateway, east-west:", listener, local)
    through_listener = listener["http.heliostat_east_west.downstream_rq_total"]
    through_local = local[f"cluster.{LOCAL}.upstream_rq_total"]
    assert through_listener >= served["eu-west"]
    assert through_local >= served["eu-west"]
    # Nothing went onward: the local cluster holds eu-west's replicas only.
    assert set(eu_gateway.hosts(LOCAL)) == set(mesh.replicas["eu-west"])

    # The replicas counted the lent requests by the lender's origin header (kept by the hop:
    # the round trip is charged from ap-southeast), as many as the hop carried.
    stats = mesh.stats()
    from_ap = sum(stats[a]["by_origin_region"].get("ap-southeast", 0) for a in stats)
    on_eu = sum(
        stats[a]["by_origin_region"].get("ap-southeast", 0) for a in mesh.replicas["eu-west"]
    )
    print("ap-southeast-origin requests: all replicas", from_ap, "eu-west's", on_eu)
    assert on_eu >= served["eu-west"]
    assert on_eu <= through_local  # every one of them came through the hop
    # The lent ones paid ap-southeast -> eu-west's 160 ms round trip once, not twice.
    lent_ttft = sorted(r.ttft for r in surge_results if r.ok and r.replica_region == "eu-west")
    assert lent_ttft[len(lent_ttft) // 2] >= 0.16
    assert lent_ttft[0] < 0.32 + 0.3  # the floor: one round trip and a fast prefill
