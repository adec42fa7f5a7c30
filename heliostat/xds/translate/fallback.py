"""The fallback model in the routes: which routes may move requests, and what they tell Lua.

The control law gives each view a fallback share per model (and per tenant); this layer
turns a share above zero into route metadata that the listener's Lua program reads
(`lua/fallback.lua`, loaded by `prefix_key.py`), on every route of the model for the traffic
it applies to: the view's own share on the generic routes, a tenant's share on that tenant's
routes. A tenant's routes get one only when the fallback model has endpoints in the tenant's
regions in this view: the moved request then lands on the fallback's tenant routes and
cluster, pinned like any other.

Every model route also answers `x-heliostat-served-model: <model>`, so a caller can rely on
the header whether or not its request was moved: a moved request is routed again and gets the
fallback's routes, hence the fallback's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from heliostat.planning.fallback import FallbackRoute
from heliostat.policy import Model
from heliostat.wire import (
    FALLBACK_FROM_HEADER,
    LUA_FILTER_NAME,
    METADATA_NAMESPACE,
    PREFIX_KEY_HEADER,
    SERVED_MODEL_HEADER,
)
from heliostat.xds.translate.affinity import session_header


def lua_settings(route: FallbackRoute, model_header: str) -> dict[str, Any]:
    """What the Lua program reads under `fallback` in the route's metadata."""
    settings: dict[str, Any] = {
        "model": route.target.name,
        "from": route.model.name,
        "share": route.share,
        "session_header": session_header(route.model),
        "model_header": model_header,
        "from_header": FALLBACK_FROM_HEADER,
    }
    affinity = route.target.affinity
    if affinity is not None and affinity.prefix_chars is not None:
        settings |= {
            "prefix_chars": affinity.prefix_chars,
            "prefix_session_header": affinity.header,
            "key_header": PREFIX_KEY_HEADER,
        }
    return settings


def explain(route: FallbackRoute, metadata: base_pb2.Metadata) -> None:
    """The share and why, under `heliostat` in the route's metadata (Envoy's config_dump)."""
    reason = struct_pb2.Struct()
    reason.update({k: v for k, v in route.reason.items() if v is not None})
    entry = struct_pb2.Struct()
    entry.update({"model": route.target.name, "share": route.share})
    entry.fields["reason"].struct_value.CopyFrom(reason)
    metadata.filter_metadata[METADATA_NAMESPACE].fields["fallback"].struct_value.CopyFrom(entry)


def lua_metadata(
    prefix: Mapping[str, Any] | None, route: FallbackRoute | None, model_header: str
) -> base_pb2.Metadata | None:
    """The route's metadata: the Lua program's settings (prefix key, fallback) and the reason."""
    if prefix is None and route is None:
        return None
    settings = struct_pb2.Struct()
    settings.update(dict(prefix or {}))
    if route is not None:
        settings.fields["fallback"].struct_value.update(lua_settings(route, model_header))
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[LUA_FILTER_NAME].CopyFrom(settings)
    if route is not None:
        explain(route, metadata)
    return metadata


def served_model(model: Model) -> base_pb2.HeaderValueOption:
    """The response header naming the model that served: ours, whatever the upstream says."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=SERVED_MODEL_HEADER, value=model.name),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
