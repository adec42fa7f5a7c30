"""Large fleets on Kubernetes: signals of discovered replicas read from Prometheus.

Every heliostat replica of every region scraping every model server is N x M scrapes; with
`signals.source: prometheus` each replica sends one query per model and interval instead,
and the model servers are scraped once, by Prometheus. Prometheus's `endpointslice` service
discovery sets `instance` to the endpoint's `IP:PORT`, which is the address heliostat
discovers from the same EndpointSlice, so series and endpoints meet without relabelling.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from heliostat.discovery.slices import ModelEndpoints, endpoints_from_slices
from heliostat.discovery.source import StaticEndpoints, effective_policy
from heliostat.policy import Model, parse_policy
from heliostat.signals import CompositeSource, targets_from_policy
from tests.discovery.shapes import endpoint, endpoint_slice
from tests.signals.conftest import servers  # noqa: F401 (the fake Prometheus's server)
from tests.signals.test_signal_prometheus import (
    FakePrometheus,
    Servers,
    vector,
    vllm_samples,
)

POLICY = """\
apiVersion: heliostat.dev/v1alpha1
kind: InferencePolicy
metadata: {{name: fleet}}
spec:
  regions:
    us-east: {{rtt_ms: {{eu-west: 80}}}}
    eu-west: {{}}
  models:
    - name: llama
      signals: {{source: prometheus, prometheus_url: '{url}', interval: 2s}}
      kubernetes: {{namespace: inference, match_labels: {{app: vllm}}}}
"""


class Cluster:
    def __init__(self, slices: list[dict[str, Any]]) -> None:
        self.slices = slices

    def endpoints(self, model: Model) -> ModelEndpoints | None:
        assert model.kubernetes is not None
        return endpoints_from_slices(self.slices, model.kubernetes, {"us-east", "eu-west"})


def fleet(count: int) -> list[dict[str, Any]]:
    """`count` replicas in slices of 100 (the EndpointSlice controller's default size)."""
    addresses = [f"10.{n // 250}.{n % 250}.1" for n in range(count)]
    return [
        endpoint_slice(
            f"vllm-{index}",
            [endpoint(a) for a in addresses[index * 100 : (index + 1) * 100]],
            region=("us-east", "eu-west")[index % 2],
        )
        for index in range((count + 99) // 100)
    ]


async def test_one_query_per_model_reads_every_discovered_replica(servers: Servers) -> None:  # noqa: F811
    fake = FakePrometheus(await servers())
    policy = parse_policy(POLICY.format(url=fake.url))
    cluster = Cluster(fleet(400))
    effective = effective_policy(policy, [StaticEndpoints(), cluster])
    addresses = [e.address for e in effective.spec.models[0].endpoints]
    assert len(addresses) == 400
    fake.answer = vector(
        [s for n, a in enumerate(addresses) for s in vllm_samples(a, str(n % 7), 1700.0)]
    )
    async with CompositeSource(targets_from_policy(effective), CollectorRegistry()) as source:
        await source.scrape_once()
        signals = source.signals()
        assert len(fake.queries) == 1  # not 400 scrapes: one query for the whole model
        assert {address for _, address in signals} == set(addresses)
        assert [signals[("llama", a)].waiting for a in addresses[:8]] == [0, 1, 2, 3, 4, 5, 6, 0]
        assert all(s.error is None for s in signals.values())

        # The cluster scales up: the next query names the new replica, still one query.
        cluster.slices.append(endpoint_slice("vllm-new", [endpoint("10.9.9.9")]))
        grown = effective_policy(policy, [StaticEndpoints(), cluster])
        source.update_targets(targets_from_policy(grown))
        fake.answer = vector(vllm_samples("10.9.9.9:8000", "3", 1702.0))
        await source.scrape_once()
        assert len(fake.queries) == 2
        assert "10\\\\.9\\\\.9\\\\.9:8000" in fake.queries[1]
        assert source.signals()[("llama", "10.9.9.9:8000")].waiting == 3
