"""The placement figures say how a router kept each shared prefix on one replica."""

from __future__ import annotations

from bench.routing_affinity import placement, spills, stat_deltas
from heliostat.sim.loadgen import Report, Result, Shot


def _served(at: float, origin: str, prompt: str, replica: str, region: str = "") -> Result:
    shot = Shot(at, "http://gw/v1/completions", {}, {"prompt": prompt}, label=origin)
    return Result(shot, 200, replica, region or origin, {}, at, 0.05, 0.1)


def test_a_prefix_served_abroad_on_the_replica_that_region_uses_for_it() -> None:
    results = [_served(t, "eu", "system A\n\nq", "r3") for t in range(3)]
    results.append(_served(3, "na", "system A\n\nq", "r3", "eu"))
    results.append(_served(4, "na", "system B\n\nq", "r4", "eu"))  # eu never used B
    found = placement(Report(results))
    assert found["abroad"] == 2
    assert found["abroad_on_local_home"] == 0.5


def test_a_key_that_stays_home_has_no_moves_and_one_cold_visit() -> None:
    report = Report([_served(t, "na", "system A\n\nq", "r1") for t in range(5)])
    found = placement(report)
    assert found["keys"] == 1
    assert found["moves"] == 0
    assert found["first_visits"] == 1
    assert found["home_share"] == 1.0
    assert found["replicas_per_key"] == 1.0


def test_a_spill_and_its_return_are_counted_and_keys_are_per_origin() -> None:
    replicas = ["r1", "r2", "r1", "r1"]
    results = [
        _served(t, "na", "system A\n\nq", r, "eu" if r == "r2" else "na")
        for t, r in enumerate(replicas)
    ]
    results.append(_served(9, "eu", "system A\n\nq", "r3"))  # another origin: its own key
    results.append(_served(10, "na", "system A\n\nq", "r1"))
    results.append(
        Result(
            Shot(11, "u", {}, {"prompt": "system A"}, label="na"),
            503,
            None,
            None,
            {},
            11,
            None,
            0.1,
        )
    )
    found = placement(Report(results))
    assert found["keys"] == 2
    assert found["moves"] == 2  # r1 -> r2, r2 -> r1 (a failed request is not placed)
    assert found["moves_across_regions"] == 2  # r2 is in another region than r1
    assert found["returns"] == 1  # back to r1, which had served the key
    assert found["first_visits"] == 3  # r1, r2 and r3 each saw the prompt first once
    assert found["requests"] == 6
    assert found["home_share"] == round(5 / 6, 4)
    assert found["moves_by_fifth"] == [1, 1, 0, 0, 0]  # at t = 1 and 2, of 0 .. 10
    # r2 served na's request in eu, where eu's own users' requests for the prompt use r3.
    assert found["abroad"] == 1
    assert found["abroad_on_local_home"] == 0.0


def test_stat_deltas_keep_only_what_moved() -> None:
    before = {"us": {"cluster.m.update_success": 3, "cluster.m.upstream_rq_retry": 0}}
    after = {"us": {"cluster.m.update_success": 5, "cluster.m.upstream_rq_retry": 0}}
    assert stat_deltas(before, after) == {"us": {"cluster.m.update_success": 2}}


def test_spills_are_read_from_the_bounded_load_balancers_debug_lines() -> None:
    head = "[2026-12-06 12:00:00.000][7][debug][misc] [thread_aware_lb_impl.cc:1] "
    where = "ThreadAwareLoadBalancerBase::BoundedLoadHashingLoadBalancer::chooseHost: "
    log = "\n".join(
        head + where + line
        for line in (
            "selected host #10.0.0.1:80 (attempt:1)",
            "host 10.0.0.1:80 overloaded; overall_active 7, host_weight 0.25, "
            "host_active 4 > slots 3",
            "selected host #2:10.0.0.2:80 (attempt:2)",
            "host 10.0.0.2:80 overloaded; overall_active 9, host_weight 0.2, "
            "host_active 3 > slots 2",
            "selected host #5:10.0.1.1:80 (attempt:3)",
        )
    )
    regions = {"10.0.0.1:80": "eu", "10.0.0.2:80": "eu", "10.0.1.1:80": "us"}
    found = spills(log, regions.__getitem__, "eu")
    assert found == {"spilled": 2, "spilled_abroad": 1, "overloaded_at": {"3>2": 1, "4>3": 1}}
