"""The gateway listener: HTTP in, body facts to metadata, optional Lua, routes from RDS."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from heliostat.policy.traffic import Tenant
from heliostat.xds.translate.affinity import lua_filter
from heliostat.xds.translate.body import json_to_metadata_filter
from heliostat.xds.translate.common import ads_source, pack, seconds
from heliostat.xds.translate.refusal import overflow_mapper, refusal_mapper
from heliostat.xds.translate.tenants import local_reply_config

ROUTE_CONFIG_NAME = "heliostat_models"

# Generations can stream for minutes; a request is cut only when no byte moves for this long.
STREAM_IDLE_TIMEOUT_S = 300.0

# json_to_metadata (and the Lua prefix key) read whole request bodies before routing, and
# Envoy answers 413 to a body beyond the connection's buffer limit (1 MiB by default). Long
# contexts and inlined images are bigger than that.
MAX_BUFFERED_BODY_BYTES = 16 * 1024 * 1024


def listener_name(port: int) -> str:
    return f"heliostat_http_{port}"


def gateway_listener(
    address: str,
    port: int,
    *,
    lua: bool = False,
    tenants: Sequence[Tenant] = (),
    retry_after_s: int = 1,
    route_config: str = ROUTE_CONFIG_NAME,
    stat_prefix: str = "heliostat",
) -> listener_pb2.Listener:
    """The HTTP listener of a node group.

    Filters run in order: json_to_metadata (the body's model and stream flag, for routing),
    the Lua program when some model hashes on prompt prefixes or has a fallback model (it is
    on the listener whether or not a share is in effect: a listener change drains
    connections, a route change does not), then the router.
    Requests the control law refuses (drop_overloads) are answered 429 with `retry-after`,
    and a circuit breaker's 503s (the law's in-flight cap, the operator's bounds) carry it too;
    tenants' "no upstream" local replies become JSON 503s naming their pinning.
    The east-west listener is one too, on its own port, `route_config` and `stat_prefix`.
    """
    filters = [json_to_metadata_filter()]
    if lua:
        filters.append(lua_filter())
    filters.append(
        hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_config),
        http_filters=filters,
        stream_idle_timeout=seconds(STREAM_IDLE_TIMEOUT_S),
    )
    replies = local_reply_config(tenants) or hcm_pb2.LocalReplyConfig()
    replies.mappers.insert(0, refusal_mapper(retry_after_s))
    replies.mappers.insert(1, overflow_mapper(retry_after_s))
    manager.local_reply_config.CopyFrom(replies)
    return listener_pb2.Listener(
        name=listener_name(port),
        per_connection_buffer_limit_bytes=wrappers_pb2.UInt32Value(value=MAX_BUFFERED_BODY_BYTES),
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=pack(manager),
                    )
                ]
            )
        ],
    )
