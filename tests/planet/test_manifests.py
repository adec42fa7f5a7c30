"""The autoscaling examples name metrics and labels serve really exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from heliostat.runtime.scaling_metrics import ScalingCollector
from tests.balance.helpers import policy_of

DIRECTORY = Path(__file__).parents[2] / "manifests" / "autoscaling"


def _exported() -> set[str]:
    registry = CollectorRegistry()
    registry.register(ScalingCollector(lambda: (policy_of(), None)))
    text = generate_latest(registry).decode()
    return {line.split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_example_parses_and_names_exported_series() -> None:
    exported = _exported()
    named: set[str] = set()
    for path in sorted(DIRECTORY.glob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents, path
        named |= set(re.findall(r"heliostat_[a-z_]+", path.read_text()))
    assert "heliostat_desired_replicas" in named
    assert named <= exported, named - exported


def test_keda_and_hpa_ask_for_exactly_the_desired_replicas() -> None:
    keda = yaml.safe_load((DIRECTORY / "keda-scaledobject.yaml").read_text())
    trigger = keda["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["threshold"] == "1"
    assert trigger["metadata"]["metricType"] == "AverageValue"
    assert 'region="us-east"' in trigger["metadata"]["query"].replace(" ", "")
    hpa = yaml.safe_load((DIRECTORY / "hpa-external.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["external"]
    assert metric["metric"]["name"] == "heliostat_desired_replicas"
    assert metric["metric"]["selector"]["matchLabels"] == {
        "model": "llama-70b",
        "region": "us-east",
    }
    assert metric["target"] == {"type": "AverageValue", "averageValue": "1"}
