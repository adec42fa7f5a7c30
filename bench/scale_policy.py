"""Fleet-sized policies for the scale and fanout benchmarks.

Both benchmarks need a policy that looks like a real deployment rather than a toy: several
models, regions with very uneven GPU counts, a model with versions and prefix affinity, and a
tenant pinned to one region (the `policies/traffic.yaml` sections that multiply clusters).
Only the endpoint count, the number of regions and where endpoints live vary, so the two
benchmarks' figures describe the same kind of configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# Round trips between six serving regions, one side of each pair (the policy accepts either).
_RTT_MS: dict[str, dict[str, float]] = {
    "us-east": {
        "us-west": 65,
        "eu-west": 80,
        "eu-central": 95,
        "ap-northeast": 160,
        "ap-southeast": 210,
    },
    "us-west": {"eu-west": 140, "eu-central": 150, "ap-northeast": 110, "ap-southeast": 170},
    "eu-west": {"eu-central": 20, "ap-northeast": 220, "ap-southeast": 160},
    "eu-central": {"ap-northeast": 230, "ap-southeast": 150},
    "ap-northeast": {"ap-southeast": 70},
    "ap-southeast": {},
}
# Regions in the order a policy of N regions takes them, with their relative GPU counts:
# capacity is uneven, as it is in practice.
_REGION_ORDER: tuple[tuple[str, int], ...] = (
    ("us-east", 3),
    ("eu-west", 2),
    ("ap-southeast", 1),
    ("us-west", 3),
    ("eu-central", 2),
    ("ap-northeast", 1),
)
MODEL_NAMES: tuple[str, ...] = ("llama-70b", "qwen-72b", "mistral-7b", "deepseek-v3")
TENANT_REGION = "eu-west"

Addresser = Callable[[int, int, int], str]
"""(model index, region index, n-th endpoint of that model in that region) -> IP:PORT."""


def private_address(model: int, region: int, n: int) -> str:
    """An address nobody dials: for benchmarks that never scrape (scale)."""
    return f"10.{model * 10 + region}.{n // 250}.{n % 250 + 1}:8000"


def regions(count: int) -> list[str]:
    if not 1 <= count <= len(_REGION_ORDER):
        raise ValueError(f"regions: 1 to {len(_REGION_ORDER)}, got {count}")
    return [name for name, _ in _REGION_ORDER[:count]]


def split(total: int, parts: Sequence[int]) -> list[int]:
    """`total` shared in proportion to `parts`, every part at least 1, summing to `total`."""
    if total < len(parts):
        raise ValueError(f"{total} endpoints cannot cover {len(parts)} places")
    whole = sum(parts)
    counts = [max(1, total * p // whole) for p in parts]
    counts[0] += total - sum(counts)
    return counts


def fleet_policy(
    endpoints: int,
    region_count: int,
    *,
    models: int = 3,
    address: Addresser = private_address,
    interval: str = "2s",
    timeout: str = "500ms",
) -> dict[str, Any]:
    """A policy document with `endpoints` endpoints over `models` models and `region_count`
    regions (uneven capacity). The first model has versions v1/v2 (every fifth endpoint is
    v2) with a canary, prefix affinity and tightened outlier detection; the second has
    session affinity; tenant `acme` is pinned to eu-west when that region is in the policy.
    """
    names = regions(region_count)
    weights = [w for _, w in _REGION_ORDER[:region_count]]
    per_model = split(endpoints, [1] * models)
    region_specs = {
        name: {"rtt_ms": {k: v for k, v in _RTT_MS[name].items() if k in names}} for name in names
    }
    documents = []
    for m, count in enumerate(per_model):
        per_region = split(count, weights)
        listed: list[dict[str, Any]] = []
        for r, (region, here) in enumerate(zip(names, per_region, strict=True)):
            for n in range(here):
                entry: dict[str, Any] = {"address": address(m, r, n), "region": region}
                if m == 0:  # every fifth endpoint of the model, and its last one, is v2
                    last = len(listed) == count - 1
                    entry["version"] = "v2" if len(listed) % 5 == 4 or last else "v1"
                listed.append(entry)
        documents.append(_model(m, listed, {"interval": interval, "timeout": timeout}, names))
    spec: dict[str, Any] = {
        "regions": region_specs,
        "gateway": {"port": 10000, "address": "127.0.0.1"},
        "models": documents,
    }
    if TENANT_REGION in names:
        spec["tenants"] = [
            {"name": "acme", "header": "x-tenant", "value": "acme", "regions": [TENANT_REGION]}
        ]
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": f"bench-{endpoints}x{region_count}"},
        "spec": spec,
    }


def _model(
    index: int, endpoints: list[dict[str, Any]], signals: dict[str, str], names: list[str]
) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": MODEL_NAMES[index % len(MODEL_NAMES)] + ("" if index < 4 else f"-{index}"),
        "slo": {"ttft_ms": 800, "network_budget_ms": 150},
        "signals": {**signals, "stale_after": "6s"},
    }
    if index == 0:
        model["affinity"] = {
            "header": "x-session-id",
            "bounded_load": 1.5,
            "hash": "ring_hash",
            "prefix_chars": 2000,
        }
        model["outlier_detection"] = {
            "consecutive_gateway_failure": 2,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": "1s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 100,
        }
        model["versions"] = {"v1": 90, "v2": 10}
        model["canary"] = [{"region": names[-1], "version": "v2", "weight": 50}]
    elif index == 1:
        model["affinity"] = {"header": "x-session-id", "bounded_load": 2.0}
    model["endpoints"] = endpoints
    return model


def endpoint_count(document: dict[str, Any]) -> int:
    return sum(len(m["endpoints"]) for m in document["spec"]["models"])
