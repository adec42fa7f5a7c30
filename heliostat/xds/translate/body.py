"""Facts from the OpenAI request body that routes match on: the model, and whether it streams.

Envoy's json_to_metadata filter reads the JSON body before routing, writes `model` and
`stream` into the `heliostat` dynamic-metadata namespace and clears the route cache, so routes
can match them. A request with an `x-model` header is routed by the header; the body's model
is the fallback for clients that only speak OpenAI's wire format. `stream` lets streamed
requests get a per-try timeout that unary ones must not have (see resilience.retry_policy).

The filter buffers JSON request bodies (content type application/json, with or without
parameters) up to the listener's buffer limit; other bodies pass untouched.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2 as j2m
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2

from heliostat.wire import JSON_TO_METADATA_FILTER, METADATA_NAMESPACE
from heliostat.xds.translate.common import pack

MODEL_KEY = "model"
STREAM_KEY = "stream"
_JSON_CONTENT_TYPE = r"^application/json(\s*;.*)?$"


def json_to_metadata_filter() -> hcm_pb2.HttpFilter:
    rules = [
        _rule(MODEL_KEY, j2m.JsonToMetadata.STRING),
        _rule(STREAM_KEY, j2m.JsonToMetadata.PROTOBUF_VALUE),  # keeps true as a boolean
    ]
    config = j2m.JsonToMetadata(
        request_rules=j2m.JsonToMetadata.MatchRules(
            rules=rules,
            allow_content_types=["application/json"],
            allow_content_types_regex=regex_pb2.RegexMatcher(regex=_JSON_CONTENT_TYPE),
        )
    )
    return hcm_pb2.HttpFilter(name=JSON_TO_METADATA_FILTER, typed_config=pack(config))


def _rule(key: str, value_type: j2m.JsonToMetadata.ValueType.ValueType) -> j2m.JsonToMetadata.Rule:
    return j2m.JsonToMetadata.Rule(
        selectors=[j2m.JsonToMetadata.Selector(key=key)],
        on_present=j2m.JsonToMetadata.KeyValuePair(
            metadata_namespace=METADATA_NAMESPACE, key=key, type=value_type
        ),
    )


def _metadata(key: str, value: value_pb2.ValueMatcher) -> metadata_pb2.MetadataMatcher:
    return metadata_pb2.MetadataMatcher(
        filter=METADATA_NAMESPACE,
        path=[metadata_pb2.MetadataMatcher.PathSegment(key=key)],
        value=value,
    )


def body_model_is(model: str) -> metadata_pb2.MetadataMatcher:
    return _metadata(
        MODEL_KEY, value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=model))
    )


def body_names_a_model() -> metadata_pb2.MetadataMatcher:
    return _metadata(MODEL_KEY, value_pb2.ValueMatcher(present_match=True))


def streamed() -> metadata_pb2.MetadataMatcher:
    return _metadata(STREAM_KEY, value_pb2.ValueMatcher(bool_match=True))


def header_absent(name: str) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, present_match=True, invert_match=True)
