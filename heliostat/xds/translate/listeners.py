"""The gateway listener: HTTP in, routes from RDS."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from heliostat.xds.translate.common import ads_source, pack, seconds

ROUTE_CONFIG_NAME = "heliostat_models"

# Generations can stream for minutes; a request is cut only when no byte moves for this long.
STREAM_IDLE_TIMEOUT_S = 300.0


def listener_name(port: int) -> str:
    return f"heliostat_http_{port}"


def gateway_listener(address: str, port: int) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="heliostat",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=ROUTE_CONFIG_NAME),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            )
        ],
        stream_idle_timeout=seconds(STREAM_IDLE_TIMEOUT_S),
    )
    return listener_pb2.Listener(
        name=listener_name(port),
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
