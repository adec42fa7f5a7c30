"""Routes: `x-model` picks the model's cluster; anything else gets a JSON 404."""

from __future__ import annotations

import json
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import string_pb2

from heliostat.xds.translate.common import seconds
from heliostat.xds.translate.listeners import ROUTE_CONFIG_NAME

MODEL_HEADER = "x-model"
ORIGIN_HEADER = "x-heliostat-origin-region"


def route_configuration(models: Sequence[str], region: str | None) -> route_pb2.RouteConfiguration:
    routes = [_model_route(name, region) for name in models]
    routes.append(_not_found(models, header_present=True))
    routes.append(_not_found(models, header_present=False))
    return route_pb2.RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=[rc.VirtualHost(name="models", domains=["*"], routes=routes)],
    )


def _model_route(model: str, region: str | None) -> rc.Route:
    headers_to_add = []
    if region:
        headers_to_add.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=ORIGIN_HEADER, value=region),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    return rc.Route(
        name=f"model:{model}",
        match=rc.RouteMatch(
            prefix="/",
            headers=[
                rc.HeaderMatcher(
                    name=MODEL_HEADER,
                    string_match=string_pb2.StringMatcher(exact=model),
                )
            ],
        ),
        route=rc.RouteAction(cluster=model, timeout=seconds(0)),
        request_headers_to_add=headers_to_add,
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
