"""The ORCA load report a vLLM server attaches to a response, when the request asks for one.

vLLM (pull request 24905, `vllm/entrypoints/openai/orca_metrics.py`) answers a request that
carries `endpoint-load-metrics-format: TEXT` or `JSON` (any case) with a response header
`endpoint-load-metrics` holding two named metrics read from its own Prometheus gauges:

    TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0
    JSON {"named_metrics": {"kv_cache_usage_perc": 0.4, "num_requests_waiting": 3.0}}

Only unary (non-streamed) successful answers carry it: vLLM builds the header for its
`JSONResponse` and returns a plain `StreamingResponse` for `"stream": true`, so a streamed
completion or chat never reports load. Any other format value is ignored (no header). Values
are Python floats printed with `repr`, as vLLM prints them. The simulator does exactly this,
so that Envoy's ORCA consumers (`client_side_weighted_round_robin`, `load_aware_locality`)
see what they would see in front of a real vLLM.
"""

from __future__ import annotations

import json

FORMAT_HEADER = "endpoint-load-metrics-format"
REPORT_HEADER = "endpoint-load-metrics"


def load_report(metrics_format: str | None, kv_usage: float, waiting: float) -> str | None:
    """The `endpoint-load-metrics` header value for a unary answer, or None when not asked."""
    if not metrics_format:
        return None
    kind = metrics_format.lower()
    named = {"kv_cache_usage_perc": float(kv_usage), "num_requests_waiting": float(waiting)}
    if kind == "text":
        return "TEXT " + ", ".join(f"named_metrics.{k}={v}" for k, v in named.items())
    if kind == "json":
        return "JSON " + json.dumps({"named_metrics": named})
    return None
