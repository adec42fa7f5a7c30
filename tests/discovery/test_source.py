"""Static endpoints and a Kubernetes selector behind one interface, folded into the policy."""

from __future__ import annotations

import pytest

from heliostat.discovery.slices import ModelEndpoints, endpoints_from_slices
from heliostat.discovery.source import StaticEndpoints, effective_policy
from heliostat.policy import Endpoint, Model, PolicyError, parse_policy
from tests.discovery.shapes import endpoint, endpoint_slice

POLICY = """\
apiVersion: heliostat.dev/v1alpha1
kind: InferencePolicy
metadata: {name: k8s}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80}}
    eu-west: {}
  models:
    - name: llama-70b
      endpoints:
        - {address: 10.9.0.1:8000, region: eu-west}
      kubernetes: {namespace: inference, port: http}
    - name: static-only
      endpoints:
        - {address: 10.9.0.2:8000, region: eu-west}
"""


class Slices:
    """An EndpointSource answering from fixed slices (what the watch keeps)."""

    def __init__(self, slices: list[dict[str, object]]) -> None:
        self.slices = slices

    def endpoints(self, model: Model) -> ModelEndpoints | None:
        if model.kubernetes is None:
            return None
        return endpoints_from_slices(self.slices, model.kubernetes, {"us-east", "eu-west"})


def test_a_model_takes_static_and_discovered_endpoints_static_first() -> None:
    policy = parse_policy(POLICY)
    cluster = Slices(
        [
            endpoint_slice(
                "a",
                [
                    endpoint("10.0.0.2"),
                    endpoint("10.0.0.1", ready=False, serving=True, terminating=True),
                    endpoint("10.9.0.1"),  # also written in the file: the file's entry wins
                ],
                region="us-east",
            )
        ]
    )
    effective = effective_policy(policy, [StaticEndpoints(), cluster])
    model = effective.spec.models[0]
    assert [(e.address, e.region) for e in model.endpoints] == [
        ("10.9.0.1:8000", "eu-west"),
        ("10.0.0.1:8000", "us-east"),
        ("10.0.0.2:8000", "us-east"),
    ]
    assert model.drained() == {"10.0.0.1:8000"}
    assert effective.spec.models[1] is policy.spec.models[1]  # untouched models are shared
    assert policy.spec.models[0].endpoints == (
        Endpoint.model_validate({"address": "10.9.0.1:8000", "region": "eu-west"}),
    )


def test_nothing_discovered_leaves_the_policy_as_it_is() -> None:
    policy = parse_policy(POLICY)
    assert effective_policy(policy, [StaticEndpoints(), Slices([])]) is policy


def test_a_selector_alone_is_a_valid_model_and_its_labels_default_to_the_model() -> None:
    text = POLICY.replace(
        "      endpoints:\n        - {address: 10.9.0.1:8000, region: eu-west}\n", "", 1
    )
    policy = parse_policy(text)
    selector = policy.spec.models[0].kubernetes
    assert selector is not None and policy.spec.models[0].endpoints == ()
    assert selector.label_selector("llama-70b") == "heliostat.dev/model=llama-70b"
    labelled = parse_policy(
        text.replace("port: http}", "port: http, match_labels: {b: '2', app: vllm}}")
    )
    assert labelled.spec.models[0].kubernetes.label_selector("x") == "app=vllm,b=2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("kubernetes: {namespace: Inference", "invalid namespace 'Inference'"),
        ("kubernetes: {namespace: inference, region: mars", "unknown region 'mars'"),
        ("port: http}", "port: http, match_labels: {'-bad': x}}"),
    ],
)
def test_selector_mistakes_are_located(change: str, expected: str) -> None:
    if change.startswith("kubernetes"):
        text = POLICY.replace("kubernetes: {namespace: inference", change)
    else:
        text = POLICY.replace(change, expected)
        expected = "invalid label key '-bad'"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    assert any(
        line.startswith("p.yaml:12: spec.models[0].kubernetes") for line in caught.value.lines()
    )
    assert expected in str(caught.value)


def test_both_api_versions_read_the_same_document() -> None:
    old = parse_policy(POLICY.replace("heliostat.dev/v1alpha1", "heliostat/v1"))
    new = parse_policy(POLICY)
    assert old.spec == new.spec
