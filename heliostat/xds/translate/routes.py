"""Routes: `x-model` picks the model's cluster; anything else gets a JSON 404."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2 as previous_priorities_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from heliostat.xds.translate.common import pack, seconds
from heliostat.xds.translate.listeners import ROUTE_CONFIG_NAME

MODEL_HEADER = "x-model"
ORIGIN_HEADER = "x-heliostat-origin-region"


PRIORITY_HEADER = "x-priority"

# Retry only what never reached a model server or was refused before work began; a stream
# whose response has started is never retried by Envoy.
RETRY_ON = "connect-failure,refused-stream,reset,retriable-status-codes"
RETRY_STATUS_CODES = (503,)
NUM_RETRIES = 2


def route_configuration(
    models: Sequence[str], region: str | None, batch_clusters: Mapping[str, str]
) -> route_pb2.RouteConfiguration:
    """Routes for every model; `batch_clusters` maps a model to its shed-first batch cluster."""
    routes = []
    for name in models:
        if name in batch_clusters:
            routes.append(_model_route(name, batch_clusters[name], region, batch=True))
        routes.append(_model_route(name, name, region, batch=False))
    routes.append(_not_found(models, header_present=True))
    routes.append(_not_found(models, header_present=False))
    return route_pb2.RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=[rc.VirtualHost(name="models", domains=["*"], routes=routes)],
    )


def _model_route(model: str, cluster: str, region: str | None, *, batch: bool) -> rc.Route:
    headers_to_add = []
    if region:
        headers_to_add.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=ORIGIN_HEADER, value=region),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    matchers = [rc.HeaderMatcher(name=MODEL_HEADER, string_match=_exact(model))]
    if batch:
        matchers.append(rc.HeaderMatcher(name=PRIORITY_HEADER, string_match=_exact("batch")))
    return rc.Route(
        name=f"model:{model}" + (":batch" if batch else ""),
        match=rc.RouteMatch(prefix="/", headers=matchers),
        route=rc.RouteAction(
            cluster=cluster,
            timeout=seconds(0),
            retry_policy=_retry_policy(),
            # Batch traffic uses the DEFAULT circuit-breaker thresholds, interactive the HIGH.
            priority=base_pb2.DEFAULT if batch else base_pb2.HIGH,
        ),
        request_headers_to_add=headers_to_add,
    )


def _exact(value: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(exact=value)


def _retry_policy() -> rc.RetryPolicy:
    """Retry elsewhere: another host (previous_hosts), then another priority."""
    return rc.RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=NUM_RETRIES),
        retriable_status_codes=list(RETRY_STATUS_CODES),
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
        retry_priority=rc.RetryPolicy.RetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=pack(previous_priorities_pb2.PreviousPrioritiesConfig(update_frequency=1)),
        ),
    )


def _not_found(models: Sequence[str], *, header_present: bool) -> rc.Route:
    if header_present:
        message = f"no model named by the {MODEL_HEADER} header is served here"
        match = rc.RouteMatch(
            prefix="/", headers=[rc.HeaderMatcher(name=MODEL_HEADER, present_match=True)]
        )
    else:
        message = f"the request names no model: set the {MODEL_HEADER} header"
        match = rc.RouteMatch(prefix="/")
    body = json.dumps(
        {"error": {"type": "model_not_found", "message": message, "models": list(models)}},
        sort_keys=True,
    )
    return rc.Route(
        name="unknown-model" if header_present else "missing-model",
        match=match,
        direct_response=rc.DirectResponseAction(
            status=404, body=base_pb2.DataSource(inline_string=body)
        ),
        response_headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="application/json"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )
