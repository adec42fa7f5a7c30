"""Scaling signals on serve's /metrics: what an HPA or KEDA scales replicas on.

Computed at scrape time from the control loop's last tick (`heliostat.balance.scaling`), so
they are as fresh as the views and cost nothing between scrapes. Per model and region:

- `heliostat_desired_replicas`: replicas that would hold the region's own demand at the
  utilisation target (the number to scale a region's Deployment to);
- `heliostat_scaling_demand` / `heliostat_scaling_capacity` (label `unit`: `endpoint` today,
  one endpoint at its thresholds; a rate-based law reports `requests_per_second`): the
  inputs, for dashboards and for scalers that divide themselves;
- `heliostat_scaling_replicas`: the live replicas counted; `heliostat_scaling_utilisation`
  (demand / capacity) and `heliostat_scaling_target_utilisation`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from heliostat.balance import ControlState
from heliostat.balance.scaling import DEFAULT_TARGET, scaling_signals
from heliostat.policy import Policy

ScalingSource = Callable[[], tuple[Policy, ControlState | None]]


class ScalingCollector(Collector):
    def __init__(self, source: ScalingSource, target: float = DEFAULT_TARGET) -> None:
        self._source = source
        self._target = target

    def collect(self) -> Iterator[GaugeMetricFamily]:
        policy, state = self._source()
        signals = scaling_signals(policy, state, self._target)
        desired = GaugeMetricFamily(
            "heliostat_desired_replicas",
            "Replicas that would hold the region's own demand at the utilisation target.",
            labels=["model", "region"],
        )
        demand = GaugeMetricFamily(
            "heliostat_scaling_demand",
            "Demand of the region's own gateways, as the control law measures it.",
            labels=["model", "region", "unit"],
        )
        capacity = GaugeMetricFamily(
            "heliostat_scaling_capacity",
            "Capacity of the region's live replicas, in the demand's unit.",
            labels=["model", "region", "unit"],
        )
        replicas = GaugeMetricFamily(
            "heliostat_scaling_replicas",
            "Live replicas of the model in the region (fresh signal, taking traffic).",
            labels=["model", "region"],
        )
        utilisation = GaugeMetricFamily(
            "heliostat_scaling_utilisation",
            "Demand over capacity in the region (0 without capacity).",
            labels=["model", "region"],
        )
        target = GaugeMetricFamily(
            "heliostat_scaling_target_utilisation",
            "The utilisation the desired replicas are computed for.",
            labels=["model", "region"],
        )
        for s in signals:
            desired.add_metric([s.model, s.region], s.desired)
            demand.add_metric([s.model, s.region, s.unit], s.demand)
            capacity.add_metric([s.model, s.region, s.unit], s.capacity)
            replicas.add_metric([s.model, s.region], s.replicas)
            utilisation.add_metric([s.model, s.region], s.utilisation)
            target.add_metric([s.model, s.region], s.target)
        yield from (desired, demand, capacity, replicas, utilisation, target)
