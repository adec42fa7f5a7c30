"""How a gateway answers a request the control law refuses: fast, 429, with retry-after.

When the demand within a region's budget exceeds the capacity within it, the law publishes
a refused share on the model's clusters (`ClusterView.drop_overload_percent`, from
`balance.refusal`), which becomes the ClusterLoadAssignment's `drop_overloads` (see
`endpoints.py`). Envoy drops that share of requests before choosing a host and answers them
itself, with the response flag DropOverLoad (`DO`; `UDO` when it drops everything) set.
Its own answer is a bare 503; this mapper of the listener's `local_reply_config` turns it
into a 429 with `retry-after` and a JSON body saying why, so clients back off instead of
retrying at once. The answer never reaches a model server: it takes about as long as
Envoy's own routing.

While a region refuses, its gateways also cap the requests they have in flight
(`balance.refusal.in_flight`, a circuit breaker's max_requests); past the cap Envoy answers
503 at once with the flag UO (upstream overflow) and `x-envoy-overloaded`. That answer keeps
its status (an operator's own circuit breakers answer the same, and clients and dashboards
read 503 there) and gains the same `retry-after` (`overflow_mapper`), so a refused client
backs off whichever of the two refused it.
"""

from __future__ import annotations

import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

REFUSED_STATUS = 429
# Envoy's response flags for drop_overloads: DO below 100%, UDO (unconditional) at 100%.
DROP_OVERLOAD_FLAGS = ("DO", "UDO")
# A circuit breaker's overflow (max_requests, max_pending_requests, max_connections).
OVERFLOW_FLAGS = ("UO",)


def refused_body() -> str:
    return json.dumps(
        {
            "error": {
                "type": "capacity_exhausted",
                "message": (
                    "every GPU region within this request's network budget is full; "
                    "retry after the time in the retry-after header"
                ),
            }
        },
        sort_keys=True,
    )


def refusal_mapper(retry_after_s: int) -> hcm_pb2.ResponseMapper:
    """The listener's answer to a request its cluster's drop_overloads refused."""
    return hcm_pb2.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=list(DROP_OVERLOAD_FLAGS))
        ),
        status_code=wrappers_pb2.UInt32Value(value=REFUSED_STATUS),
        headers_to_add=[_retry_after_header(retry_after_s)],
        body_format_override=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=refused_body().replace("%", "%%")),
            content_type="application/json",
        ),
    )


def overflow_mapper(retry_after_s: int) -> hcm_pb2.ResponseMapper:
    """The listener's answer to a request a circuit breaker refused: Envoy's 503, with
    `retry-after`."""
    return hcm_pb2.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=list(OVERFLOW_FLAGS))
        ),
        headers_to_add=[_retry_after_header(retry_after_s)],
    )


def _retry_after_header(retry_after_s: int) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="retry-after", value=str(retry_after_s)),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def retry_after(intervals: list[float]) -> int:
    """Seconds a refused client should wait: two control ticks, at least one second."""
    fastest = min(intervals) if intervals else 1.0
    return max(1, round(2 * fastest + 0.499))
