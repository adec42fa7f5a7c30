"""Events of a scenario, in the fluid engine: a canary build, GeoDNS moving the users of
lost gateways, the autoscaler provisioning and draining replicas."""

from __future__ import annotations

from heliostat.planet.fluid import FluidRun, RunOptions
from heliostat.planet.groups import CANARY_VERSION, Phase
from heliostat.planet.scenario import PolicyName
from tests.planet.conftest import scenario


def test_a_failing_canary_is_ejected_by_outlier_detection() -> None:
    events = [
        {
            "kind": "canary",
            "region": "us-east",
            "at": "1m",
            "until": "4m",
            "share": 0.34,
            "error_rate": 0.9,
        }
    ]
    run = FluidRun(scenario(events=events, duration="5m"), RunOptions(PolicyName.LEAST_REQUEST))
    record = run.run()
    users = record.by_origin()["us-east"]
    # One replica of three fails 90% of what it gets for 3 of the 5 minutes: without
    # ejection that is 1/3 * 0.9 * 3/5 = 18% of us-east's users. Five 500s in a row eject
    # it for 10 s, then 20 s, ...: it fails far fewer.
    without_ejection = 1 / 3 * 0.9 * 3 / 5
    assert 0.0 < users["failed_share"] < without_ejection / 3
    assert all(g.build != CANARY_VERSION for g in run.fleet)  # the build was rolled back


def test_a_slower_canary_gets_less_of_the_traffic_under_least_request() -> None:
    events = [
        {"kind": "canary", "region": "us-east", "at": "30s", "share": 0.34, "speed_factor": 0.5}
    ]
    demand = {
        "us-east": {"curve": [60.0] * 24},
        "eu-west": {"curve": [1.0] * 24},
        "ap-southeast": {"curve": [1.0] * 24},
    }
    run = FluidRun(
        scenario(events=events, duration="3m", demand=demand), RunOptions(PolicyName.LEAST_REQUEST)
    )
    run.run()
    canary = next(g for g in run.fleet if g.build == CANARY_VERSION)
    stable = next(g for g in run.fleet if g.region == "us-east" and g.build is None)
    # Equal weights: two choices on requests in flight, so the slower replica, which holds
    # its requests longer, is chosen less often per request.
    assert canary.rate < stable.rate
    assert canary.n > 0 and stable.n > 0


def test_users_of_lost_gateways_fail_until_geodns_moves_them() -> None:
    events = [
        {"kind": "region_loss", "region": "eu-west", "at": "1m", "until": "4m", "gateways": "lost"}
    ]
    s = scenario(events=events, duration="5m", dns_failover="30s")
    run = FluidRun(s, RunOptions(PolicyName.HELIOSTAT))
    record = run.run()
    series = record.timeseries()
    eu = series["regions"]["eu-west"]
    bucket = series["bucket_s"]
    failing = [i * bucket for i, v in enumerate(eu["failed_rps"]) if v > 0]
    # They fail from the loss until GeoDNS has seen it for 30 s, then are served elsewhere.
    assert failing and min(failing) >= 60 and max(failing) < 60 + 30 + bucket
    after = [
        eu["borrowed_rps"][i] for i in range(len(eu["borrowed_rps"])) if 100 < i * bucket < 230
    ]
    assert min(after) > 0


def test_the_autoscaler_provisions_after_the_delay_and_drains_what_it_no_longer_wants() -> None:
    scaling = {
        "enabled": True,
        "signal": "gateway_rates",
        "target_utilisation": 0.5,
        "interval": "30s",
        "provisioning_delay": "2m",
        "scale_down_after": "1m",
        "max_step": 4,
        "pool_gpus": 8 * 12,
    }
    demand = {
        "us-east": {"curve": [60.0] * 24},
        "eu-west": {"curve": [2.0] * 24},
        "ap-southeast": {"curve": [2.0] * 24},
    }
    run = FluidRun(
        scenario(scaling=scaling, demand=demand, duration="6m"),
        RunOptions(PolicyName.HELIOSTAT, scaling=True),
    )
    run.run()
    decisions = run.autoscaler.decisions  # type: ignore[union-attr]
    assert any(("us-east", m, 0) in d["moves"] for d in decisions for m in range(1, 5))
    assert any(d for d in decisions for move in d["moves"] if move[2] > 0)  # drained somewhere
    serving = sum(g.count for g in run.fleet if g.region == "us-east" and g.phase is Phase.SERVING)
    assert serving > 3  # 60 req/s at 50% of ~26 req/s per replica wants about 5
    assert run.fleet.allocated() <= 12
