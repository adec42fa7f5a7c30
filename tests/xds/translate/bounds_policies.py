"""Policies with every bounded field at its lowest or its highest allowed value.

Shared by the unit test that builds snapshots from them and checks Envoy's validation rules,
and by the integration test that serves them to a real Envoy.
"""

from __future__ import annotations

from typing import Any

from heliostat.policy.durations import MAX_SECONDS
from heliostat.policy.fields import UINT32_MAX
from heliostat.policy.traffic import MAX_RETRIES

LONGEST = f"{MAX_SECONDS}s"
HUGE = 1.7e308  # a finite float near the top of its range, for fields without an upper bound


def _models(high: bool, addresses: dict[str, list[str]]) -> list[dict[str, Any]]:
    big = UINT32_MAX if high else 0
    positive = UINT32_MAX if high else 1
    llama: dict[str, Any] = {
        "name": "llama-70b",
        "engine": "vllm",
        "slo": {
            "ttft_ms": float(MAX_SECONDS * 500) if high else 1.0,
            "network_budget_ms": HUGE if high else 0.0,
        },
        "signals": (
            {"interval": LONGEST, "timeout": LONGEST, "stale_after": LONGEST}
            if high
            else {"interval": "1ms", "timeout": "1ms", "stale_after": "1ms"}
        ),
        "protocol": "http1",  # the test upstreams speak HTTP/1.1 only
        "connect_timeout": LONGEST if high else "1ms",
        "thresholds": (
            {"queue": HUGE, "kv": 1.0, "running": 1.0, "failures": 10**30}
            if high
            else {"queue": 5e-324, "kv": 5e-324, "running": 5e-324, "failures": 1}
        ),
        "overflow": {"max_share": 1.0 if high else 0.0, "beyond_budget": "last_resort"},
        "affinity": {
            "header": "x-session-id",
            "bounded_load": 100.0 if high else 1.0,
            "hash": "maglev" if high else "ring_hash",
            "prefix_chars": 1_000_000 if high else 1,
        },
        "outlier_detection": {
            "consecutive_5xx": big,
            "consecutive_gateway_failure": big,
            "enforcing_consecutive_gateway_failure": 100 if high else 0,
            "success_rate": {
                "minimum_hosts": positive,
                "request_volume": positive,
                "stdev_factor": 100.0 if high else 5e-324,
            },
            "failure_percentage": {
                "threshold": 100.0 if high else 0.0,
                "minimum_hosts": positive,
                "request_volume": positive,
            },
            "interval": LONGEST if high else "1ms",
            "base_ejection_time": LONGEST if high else "1ms",
            "max_ejection_percent": 100 if high else 0,
        },
        "circuit_breakers": {
            "interactive": {
                "max_connections": big,
                "max_pending_requests": big,
                "max_requests": big,
                "retry_budget": {
                    "budget_percent": 100.0 if high else 0.0,
                    "min_retry_concurrency": big,
                },
            },
            "batch": {
                "max_connections": big,
                "max_pending_requests": big,
                "max_requests": big,
                "max_retries": big,
            },
        },
        "retries": (
            {
                "num_retries": MAX_RETRIES,
                "per_try_timeout": LONGEST,
                "retry_on": [
                    "connect-failure",
                    "refused-stream",
                    "reset",
                    "reset-before-request",
                    "retriable-status-codes",
                    "gateway-error",
                    "5xx",
                    "retriable-4xx",
                    "envoy-ratelimited",
                ],
                "retriable_status_codes": [100, 599],
            }
            if high
            else {
                "num_retries": 0,
                "per_try_timeout": "1ms",
                "retry_on": ["reset"],
                "retriable_status_codes": [],
            }
        ),
        "versions": {"v1": 1_000_000, "v2": 1} if high else {"v1": 1, "v2": 1},
        "canary": [{"region": "ap-southeast", "version": "v2", "weight": 100.0 if high else 0.0}],
        "fallback": {"model": "qwen-7b", "max_share": 1.0 if high else 5e-324},
        "endpoints": [
            {
                "address": address,
                "region": region,
                "version": "v2" if index % 2 else "v1",
                "slots": positive,
            }
            for region, listed in addresses.items()
            for index, address in enumerate(listed)
        ],
    }
    qwen: dict[str, Any] = {
        "name": "qwen-7b",
        "retries": {"per_try_timeout": "0s"},  # off: unary and streamed routes alike
        "endpoints": [
            {"address": address, "region": region}
            for region, listed in addresses.items()
            for address in listed
        ],
    }
    return [llama, qwen]


def bounds_policy(
    high: bool, addresses: dict[str, list[str]], gateway_port: int | None = None
) -> dict[str, Any]:
    """Every bounded field at its highest (`high`) or lowest allowed value.

    `addresses` maps each of us-east, eu-west and ap-southeast to endpoint addresses; both
    models use all of them (v1 and v2 alternate in llama-70b).
    """
    rtt = HUGE / 4 if high else 0.0
    return {
        "apiVersion": "heliostat/v1",
        "kind": "InferencePolicy",
        "metadata": {"name": "bounds-high" if high else "bounds-low"},
        "spec": {
            "regions": {
                "us-east": {"rtt_ms": {"eu-west": rtt, "ap-southeast": rtt}},
                "eu-west": {"rtt_ms": {"ap-southeast": rtt}},
                "ap-southeast": {},
            },
            "gateway": {
                "port": gateway_port or (65535 if high else 1),
                "address": "127.0.0.1",
            },
            "models": _models(high, addresses),
            "tenants": [
                {
                    "name": "acme",
                    "header": "x-tenant",
                    "value": "~" * 256 if high else "a",
                    "regions": ["eu-west"],
                }
            ],
        },
    }


def default_addresses() -> dict[str, list[str]]:
    return {
        "us-east": ["127.0.0.1:9101", "[::1]:9102"],
        "eu-west": ["127.0.0.1:9201", "127.0.0.1:9202"],
        "ap-southeast": ["10.0.0.1:65535", "10.0.0.2:1"],
    }
