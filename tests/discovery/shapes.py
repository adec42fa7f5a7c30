"""EndpointSlices and InferencePolicies as the API server's JSON, for the tests."""

from __future__ import annotations

from typing import Any

SLICES = "apis/discovery.k8s.io/v1/namespaces/inference/endpointslices"
POLICIES = "apis/heliostat.dev/v1alpha1/namespaces/heliostat/inferencepolicies"


def endpoint(
    ip: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
) -> dict[str, Any]:
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    return {"addresses": [ip], "conditions": conditions, "nodeName": "node-1", "zone": "z1"}


def endpoint_slice(
    name: str,
    endpoints: list[dict[str, Any]],
    *,
    model: str = "llama-70b",
    region: str | None = "us-east",
    version: str | None = None,
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
    namespace: str = "inference",
) -> dict[str, Any]:
    labels = {
        "heliostat.dev/model": model,
        "kubernetes.io/service-name": f"{model}-{region}",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    if region is not None:
        labels["topology.kubernetes.io/region"] = region
    if version is not None:
        labels["heliostat.dev/version"] = version
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports
        if ports is not None
        else [{"name": "http", "port": 8000, "protocol": "TCP"}],
    }
