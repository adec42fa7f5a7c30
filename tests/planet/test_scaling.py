"""Scaling signals (heliostat.balance.scaling), their gauges on serve's /metrics, and the
planet's autoscaler that acts on them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from heliostat.balance import ControlState
from heliostat.balance.scaling import desired_replicas, scaling_signals
from heliostat.planet.autoscaler import Autoscaler, gateway_demand
from heliostat.policy import Policy
from heliostat.runtime.scaling_metrics import ScalingCollector
from tests.balance.helpers import MODEL, Plant, policy_of
from tests.planet.conftest import scenario


def test_desired_replicas_do_not_depend_on_the_unit() -> None:
    # 2.8 endpoints at thresholds, or 280 req/s of replicas doing 100 at capacity.
    assert desired_replicas(2.8, 1.0, 0.7) == desired_replicas(280.0, 100.0, 0.7) == 4
    assert desired_replicas(2.1, 1.0, 0.7) == 3  # exactly three: no rounding up to four
    assert desired_replicas(0.0, 1.0, 0.7, minimum=2) == 2
    assert desired_replicas(float("nan"), 1.0, 0.7) == 0
    with pytest.raises(ValueError):
        desired_replicas(1.0, 0.0, 0.7)


def _state(demand: dict[str, float], ticks: int = 30) -> tuple[Policy, ControlState]:
    policy = policy_of({"us-east": 2, "eu-west": 2, "ap-southeast": 1})
    plant = Plant(policy, demand)
    plant.run(ticks)
    assert plant.state is not None
    return policy, plant.state


def test_signals_come_from_the_laws_own_demand_and_capacity() -> None:
    policy, state = _state({"us-east": 1.0, "eu-west": 1.0, "ap-southeast": 1.8})
    signals = {s.region: s for s in scaling_signals(policy, state, target=0.7)}
    ap = signals["ap-southeast"]
    region = state.models[MODEL].regions["ap-southeast"]
    assert ap.demand == pytest.approx(region.demand)
    assert ap.capacity == 1.0 and ap.replicas == 1 and ap.unit == "endpoint"
    # ap-southeast's own users need about 1.8 endpoints: at 70%, three replicas.
    assert ap.demand == pytest.approx(1.8, rel=0.15)
    assert ap.desired == desired_replicas(ap.demand, 1.0, 0.7) == 3
    assert signals["us-east"].desired < ap.desired


def test_before_the_first_tick_nothing_is_wanted() -> None:
    policy = policy_of()
    assert all(s.desired == 0 and s.demand == 0 for s in scaling_signals(policy, None))


def test_serve_exports_the_signals_as_gauges() -> None:
    policy, state = _state({"us-east": 1.0, "eu-west": 1.0, "ap-southeast": 1.8})
    registry = CollectorRegistry()
    registry.register(ScalingCollector(lambda: (policy, state)))
    text = generate_latest(registry).decode()
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert lines[f'heliostat_desired_replicas{{model="{MODEL}",region="ap-southeast"}}'] == 3
    key = f'heliostat_scaling_demand{{model="{MODEL}",region="ap-southeast",unit="endpoint"}}'
    assert lines[key] == pytest.approx(1.8, rel=0.15)
    assert lines[f'heliostat_scaling_target_utilisation{{model="{MODEL}",region="us-east"}}'] == 0.7


def _autoscaler(**scaling: object) -> Autoscaler:
    s = scenario(
        scaling={
            "enabled": True,
            "max_step": 2,
            "scale_down_after": "5m",
            "pool_gpus": 8 * 8,
            **scaling,
        }
    )
    return Autoscaler(s, {"us-east", "eu-west", "ap-southeast"})


def test_the_autoscaler_adds_at_most_a_step_within_the_pool_shortest_first() -> None:
    scaler = _autoscaler()
    active = {"us-east": 3, "eu-west": 2, "ap-southeast": 1}
    moves = scaler.decide(0.0, {"us-east": 4, "eu-west": 2, "ap-southeast": 4}, active, 6)
    # ap-southeast is furthest below its wish (1 of 4): it goes first; the pool (8) has 2.
    assert [(m.region, m.add) for m in moves] == [("ap-southeast", 2)]


def test_the_autoscaler_drains_only_once_fewer_were_wanted_for_a_while() -> None:
    scaler = _autoscaler()
    active = {"us-east": 3, "eu-west": 2, "ap-southeast": 1}
    wanted = {"us-east": 1, "eu-west": 2, "ap-southeast": 1}
    assert scaler.decide(0.0, wanted, active, 6) == []
    assert scaler.decide(120.0, wanted, active, 6) == []
    moves = scaler.decide(300.0, wanted, active, 6)
    assert [(m.region, m.drain) for m in moves] == [("us-east", 2)]
    # Wanting more again resets the wait.
    scaler.decide(360.0, {**wanted, "us-east": 3}, active, 6)
    assert scaler.decide(420.0, wanted, active, 6) == []


def test_region_limits_bound_what_the_autoscaler_wants() -> None:
    scaler = _autoscaler(limits={"us-east": {"min": 2, "max": 3}})
    moves = scaler.decide(0.0, {"us-east": 9}, {"us-east": 1}, 1)
    assert [(m.region, m.add) for m in moves] == [("us-east", 2)]


def test_edge_users_count_in_their_nearest_region_with_replicas() -> None:
    s = scenario(
        regions={
            "us-east": {"rtt_ms": {"eu-west": 80, "edge": 30}, "replicas": 3},
            "eu-west": {"rtt_ms": {"edge": 90}, "replicas": 2},
            "edge": {"replicas": 0},
        },
        demand={"us-east": {"curve": [1.0] * 24}},
    )
    demand = gateway_demand(
        s, {"us-east": 100.0, "eu-west": 50.0, "edge": 20.0}, {"us-east", "eu-west"}
    )
    assert demand == {"us-east": 120.0, "eu-west": 50.0}
