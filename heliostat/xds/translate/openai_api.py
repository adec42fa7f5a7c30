"""What a gateway answers itself, in OpenAI's wire format, without a hop to any replica.

- `GET /v1/models` lists the models the policy serves, in OpenAI's list shape
  (`{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`), as an
  Envoy direct response: every gateway answers it from its own configuration, so OpenAI
  clients (`client.models.list()`) work against any region, even one without GPUs.
- A request whose JSON body cannot be parsed gets 400 `invalid_request_error`, as OpenAI's
  API answers, instead of being mistaken for a request that names no model (404).

`created` is fixed (0): the route is part of a content-addressed snapshot, so it must not
change while the list does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import string_pb2

from heliostat.xds.translate import body

MODELS_PATH = "/v1/models"
OWNER = "heliostat"


def models_list(models: Sequence[str]) -> str:
    return json.dumps(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": OWNER} for name in models
            ],
        },
        sort_keys=True,
    )


def json_response(
    status: int, payload: str
) -> tuple[rc.DirectResponseAction, list[base_pb2.HeaderValueOption]]:
    return (
        rc.DirectResponseAction(status=status, body=base_pb2.DataSource(inline_string=payload)),
        [
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="application/json"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )


def models_route(models: Sequence[str]) -> rc.Route:
    """GET /v1/models (with or without a query string), answered by the gateway."""
    action, headers = json_response(200, models_list(models))
    return rc.Route(
        name="openai:models",
        match=rc.RouteMatch(
            path=MODELS_PATH,
            headers=[
                rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
            ],
        ),
        direct_response=action,
        response_headers_to_add=headers,
    )


def invalid_body_route(headers: Sequence[rc.HeaderMatcher] = ()) -> rc.Route:
    """A JSON request whose body does not parse: 400, as OpenAI's API answers."""
    payload = json.dumps(
        {
            "error": {
                "type": "invalid_request_error",
                "code": None,
                "param": None,
                "message": "the request body is not valid JSON",
            }
        },
        sort_keys=True,
    )
    action, response_headers = json_response(400, payload)
    return rc.Route(
        name="openai:invalid-body",
        match=rc.RouteMatch(
            prefix="/",
            headers=list(headers),
            dynamic_metadata=[body.body_unreadable()],
        ),
        direct_response=action,
        response_headers_to_add=response_headers,
    )
