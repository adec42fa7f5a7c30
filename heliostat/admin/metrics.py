"""The control law's decisions on /metrics, for dashboards and alerts.

Computed at scrape time from the last tick's `ControlState`, so they cost nothing between
scrapes and are exactly as fresh as what Envoy was sent. Names follow Prometheus
conventions (base units, `_total` only on counters, `_info` for constant labels).

- `heliostat_endpoint_weight{model,region,endpoint}`: one series per endpoint;
- `heliostat_endpoint_health{model,region,endpoint,state}`: four per endpoint (HEALTHY,
  DEGRADED, UNHEALTHY, DRAINING), 1 for the current state;
- `heliostat_endpoint_saturation{model,region,endpoint}`: one per endpoint with a fresh signal;
- `heliostat_region_{demand,capacity,load,unplaced}{model,region,unit}`: one per model, region;
- `heliostat_overflow_share{model,from_region,to_region}`: one per ordered pair of the
  model's regions (regions x (regions - 1) per model), 0 when not lending;
- `heliostat_refused_share{model,region,traffic_class}`: two per model and region;
- `heliostat_gateway_endpoint_served_rate{model,endpoint}`: one per endpoint the gateways
  reported on;
- `heliostat_build_info{version,python}`: one.

`region` is always a region of the policy and `endpoint` an address of it, so cardinality
is bounded by the policy: endpoints x 6 + models x regions x (6 + regions) series. `unit` is
`requests_per_second` when the law knows the endpoints' service rates, else `endpoint`
(one endpoint at its thresholds carries 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from heliostat.balance import ControlState
from heliostat.balance.view import Health
from heliostat.version import python_version, version

StateSource = Callable[[], ControlState | None]


class DecisionCollector(Collector):
    def __init__(self, source: StateSource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._source()
        weight = GaugeMetricFamily(
            "heliostat_endpoint_weight",
            "Load-balancing weight Envoy was given for the endpoint in its own region's view.",
            labels=["model", "region", "endpoint"],
        )
        health = GaugeMetricFamily(
            "heliostat_endpoint_health",
            "1 for the endpoint's current EDS health state, 0 for the others.",
            labels=["model", "region", "endpoint", "state"],
        )
        saturation = GaugeMetricFamily(
            "heliostat_endpoint_saturation",
            "Smoothed saturation (1 = at the model's thresholds) of endpoints with a fresh signal.",
            labels=["model", "region", "endpoint"],
        )
        regional = {
            name: GaugeMetricFamily(
                f"heliostat_region_{name}", help_text, labels=["model", "region", "unit"]
            )
            for name, help_text in (
                ("demand", "Demand of the region's own users (smoothed)."),
                ("capacity", "What the region's live endpoints can serve now."),
                ("load", "What arrives at the region's endpoints now."),
                ("unplaced", "Demand of the region's users the allocation could place nowhere."),
            )
        }
        overflow = GaugeMetricFamily(
            "heliostat_overflow_share",
            "Share of from_region's users its gateways send to to_region (as published).",
            labels=["model", "from_region", "to_region"],
        )
        refused = GaugeMetricFamily(
            "heliostat_refused_share",
            "Share of the view's requests its gateways refuse, per traffic class.",
            labels=["model", "region", "traffic_class"],
        )
        if state is not None:
            for (model, address), endpoint in sorted(state.endpoints.items()):
                view = endpoint.view
                labels = [model, view.region, address]
                weight.add_metric(labels, float(view.weight))
                for status in Health:
                    health.add_metric([*labels, status.value], float(view.health == status))
                if endpoint.level is not None:
                    saturation.add_metric(labels, endpoint.level)
            for name, model_state in sorted(state.models.items()):
                for region, r in sorted(model_state.regions.items()):
                    unit = "requests_per_second" if r.rates else "endpoint"
                    for key, amount in (
                        ("demand", r.demand),
                        ("capacity", r.capacity),
                        ("load", r.load),
                        ("unplaced", r.unplaced),
                    ):
                        regional[key].add_metric([name, region, unit], amount)
                    for peer in sorted(model_state.regions):
                        if peer != region:  # every pair, 0 when not lending: series persist
                            held = r.lending.get(peer)
                            share = held.published if held is not None else 0.0
                            overflow.add_metric([name, region, peer], share)
                for region, refusal in sorted(model_state.refusals.items()):
                    refused.add_metric([name, region, "interactive"], refusal.interactive.published)
                    refused.add_metric([name, region, "batch"], refusal.batch.published)
        yield weight
        yield health
        yield saturation
        yield from regional.values()
        yield overflow
        yield refused


ServedSource = Callable[[], Mapping[tuple[str, str], float]]


class GatewayServedCollector(Collector):
    """Per endpoint, the successful requests per second the gateways saw it answer, from
    Envoy's own load reports (LRS, endpoint granularity). Envoy's per-endpoint Prometheus
    stats (`per_endpoint_stats`) cannot be used beside LRS (Envoy refuses the pair), so
    this is where Envoy's per-endpoint request counts reach Prometheus."""

    def __init__(self, source: ServedSource) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        served = GaugeMetricFamily(
            "heliostat_gateway_endpoint_served_rate",
            "Successful requests/s the gateways reported the endpoint answered (Envoy LRS).",
            labels=["model", "endpoint"],
        )
        for (model, address), rate in sorted(self._source().items()):
            served.add_metric([model, address], rate)
        yield served


class BuildInfo(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "heliostat_build_info",
            "Always 1; the labels say which heliostat is running.",
            labels=["version", "python"],
        )
        info.add_metric([version(), python_version()], 1.0)
        yield info
