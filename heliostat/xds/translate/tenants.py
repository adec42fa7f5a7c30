"""Tenant region pinning: a tenant's requests are served in its regions or not at all.

Each tenant gets, per model, its own clusters holding only its regions' endpoints (see
`plan.py` and `subsets.py`), and routes matching its header come before the model's generic
ones. Overflow, failover, panic and retries all act inside a cluster, so none of them can
reach another region. When no pinned endpoint can serve (none exists, all are down), Envoy's
local reply is replaced by a JSON 503 that names the pinning, so the caller knows the
request was refused by policy, not lost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, substitution_format_string_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from heliostat.policy.traffic import Tenant

# Envoy's response flags for "no upstream could serve": no healthy host, connection failure,
# connection terminated, retries exhausted, upstream timeout.
UNAVAILABLE_FLAGS = ("UH", "UF", "UC", "URX", "UT")


def tenant_matcher(tenant: Tenant) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(
        name=tenant.header, string_match=string_pb2.StringMatcher(exact=tenant.value)
    )


def pinned_body(tenant: Tenant) -> str:
    regions = ", ".join(tenant.regions)
    return json.dumps(
        {
            "error": {
                "type": "tenant_region_pinned",
                "message": (
                    f"tenant {tenant.name!r} is pinned to {regions} and no endpoint there can "
                    "serve this request now; it is not sent to other regions"
                ),
                "tenant": tenant.name,
                "regions": list(tenant.regions),
            }
        },
        sort_keys=True,
    )


def local_reply_config(tenants: Sequence[Tenant]) -> hcm_pb2.LocalReplyConfig | None:
    """One mapper per tenant: its requests' "no upstream" local replies become the JSON 503."""
    if not tenants:
        return None
    return hcm_pb2.LocalReplyConfig(mappers=[_mapper(t) for t in tenants])


def _mapper(tenant: Tenant) -> hcm_pb2.ResponseMapper:
    condition = accesslog_pb2.AccessLogFilter(
        and_filter=accesslog_pb2.AndFilter(
            filters=[
                accesslog_pb2.AccessLogFilter(
                    header_filter=accesslog_pb2.HeaderFilter(header=tenant_matcher(tenant))
                ),
                accesslog_pb2.AccessLogFilter(
                    response_flag_filter=accesslog_pb2.ResponseFlagFilter(
                        flags=list(UNAVAILABLE_FLAGS)
                    )
                ),
            ]
        )
    )
    # The body is a format string: escape '%' so a value can never read as a command.
    body = pinned_body(tenant).replace("%", "%%")
    return hcm_pb2.ResponseMapper(
        filter=condition,
        status_code=wrappers_pb2.UInt32Value(value=503),
        body_format_override=substitution_format_string_pb2.SubstitutionFormatString(
            text_format_source=base_pb2.DataSource(inline_string=body),
            content_type="application/json",
        ),
    )
