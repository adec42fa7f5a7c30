"""Envoy bootstrap for a node heliostat will configure: identity, admin, and the ADS link.

Everything else (listeners, clusters, routes, endpoints) arrives over xDS, so a gateway is
started with `envoy -c <(heliostat bootstrap --node-id ... --region ...)` and nothing more.

The ADS link reconnects quickly. When its stream breaks, Envoy waits a random time below a
doubling interval before each new attempt (full jitter), and by default that interval starts
at 500 ms and grows to 30 s: a heliostat that takes two seconds to restart has already cost
four failed attempts, and the next one may be 8 s away (measured: 9.2 s from restart to
resync in the worst of five restarts). Envoy's own xDS retry policy
(`GrpcService.EnvoyGrpc.retry_policy.retry_back_off`) caps the interval at 1 s instead, so a
restarted heliostat is rejoined within about a second of being ready. While heliostat is
down, each Envoy then tries about twice a second: a refused TCP connection, which costs
neither side anything worth counting.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from heliostat.policy.fields import check_name
from heliostat.xds.resources.nodes import Role

XDS_CLUSTER = "heliostat_xds"

RECONNECT_BASE_S = 0.25
"""First interval of the ADS reconnect backoff (Envoy's default is 0.5 s)."""
RECONNECT_MAX_S = 1.0
"""Longest interval of the ADS reconnect backoff (Envoy's default is 30 s)."""


@dataclass(frozen=True)
class BootstrapOptions:
    node_id: str
    region: str
    role: Role = Role.GATEWAY
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_host: str = "127.0.0.1"
    admin_port: int = 19901
    listener_port: int | None = None
    # The port of this gateway's east-west listener (lent requests from other regions'
    # gateways; see heliostat/xds/translate/east_west.py), instead of the policy's.
    east_west_port: int | None = None
    delta: bool = False
    # Gateways report their load (Envoy LRS) to heliostat over the same gRPC link: the
    # control law's demand at its origin. A sidecar is never asked to report.
    load_reports: bool = True
    # mTLS to heliostat: this node's certificate and key, and the CA that signed
    # heliostat's server certificate (files Envoy reads; absolute paths).
    tls_cert: str | None = None
    tls_key: str | None = None
    ca: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def __post_init__(self) -> None:
        """Refuse what would make a bootstrap Envoy rejects, or a node heliostat cannot place:
        an empty id, a region no policy can name, an admin host that is not an IP."""
        if not self.node_id.strip():
            raise ValueError("the node id must not be empty")
        check_name(self.region)
        if not self.xds_host:
            raise ValueError("the xDS host must not be empty")
        if not _is_ip(self.admin_host):
            raise ValueError(
                f"Envoy's admin address must be an IP address, got {self.admin_host!r}"
            )
        given = [self.tls_cert, self.tls_key, self.ca]
        if any(given) and not all(given):
            raise ValueError("mTLS needs all of --tls-cert, --tls-key and --ca")
        for what, port in (
            ("xDS", self.xds_port),
            ("admin", self.admin_port),
            ("listener", self.listener_port),
            ("east-west", self.east_west_port),
        ):
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"the {what} port must be 1-65535, got {port}")


def bootstrap(options: BootstrapOptions) -> dict[str, Any]:
    metadata: dict[str, Any] = {"role": options.role.value}
    if options.listener_port is not None:
        metadata["listener_port"] = options.listener_port
    if options.east_west_port is not None:
        metadata["east_west_port"] = options.east_west_port
    document: dict[str, Any] = {
        "node": {
            "id": options.node_id,
            "cluster": f"heliostat-{options.role.value}",
            "locality": {"region": options.region},
            "metadata": metadata,
        },
        "admin": {"address": socket_address(options.admin_host, options.admin_port)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if options.delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            "retry_policy": {
                                "retry_back_off": {
                                    "base_interval": f"{RECONNECT_BASE_S}s",
                                    "max_interval": f"{RECONNECT_MAX_S}s",
                                }
                            },
                        }
                    }
                ],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [_xds_cluster(options)]},
    }
    if options.load_reports:
        document["cluster_manager"] = {
            "load_stats_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            }
        }
    return document


def _xds_cluster(options: BootstrapOptions) -> dict[str, Any]:
    host, port = options.xds_host, options.xds_port
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 30}},
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}
            ],
        },
    }
    if options.tls:
        cluster["transport_socket"] = _tls_socket(options)
    return cluster


def _tls_socket(options: BootstrapOptions) -> dict[str, Any]:
    """The node's certificate for heliostat to check its identity, and the CA that heliostat's
    own certificate must chain to; HTTP/2 negotiated by ALPN, as gRPC expects."""
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": options.tls_cert},
                    "private_key": {"filename": options.tls_key},
                }
            ],
            "validation_context": {"trusted_ca": {"filename": options.ca}},
        },
    }
    if not _is_ip(options.xds_host):
        context["sni"] = options.xds_host
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def socket_address(host: str, port: int) -> dict[str, Any]:
    """An Envoy `Address` as bootstrap JSON: every bootstrap heliostat writes uses this."""
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
