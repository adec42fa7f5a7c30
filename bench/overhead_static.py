"""The overhead benchmark's baseline: an Envoy configured by a static file, no control plane.

One listener, one HTTP connection manager with only the router filter, one route to one
static cluster holding the instant upstream. It is the least an Envoy in front of a model
server can be, so the gap to the heliostat-configured gateway is what heliostat adds to
the request path: its filters and route features, never a hop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heliostat.bootstrap import socket_address
from heliostat.lab.processes import LOCALHOST, EnvoyProcess

CLUSTER = "instant"


def static_bootstrap(admin_port: int, listener_port: int, upstream_port: int) -> dict[str, Any]:
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bare",
        "codec_type": "AUTO",
        "route_config": {
            "name": "bare",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": socket_address(LOCALHOST, admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bare",
                    "address": socket_address(LOCALHOST, listener_port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "lb_policy": "LEAST_REQUEST",  # as heliostat's model clusters
                    "load_assignment": {
                        "cluster_name": CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": socket_address(LOCALHOST, upstream_port)
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


class StaticEnvoy(EnvoyProcess):
    """An Envoy started from `static_bootstrap` by the lab's launcher (one worker thread)."""

    def __init__(
        self, workdir: Path, *, admin_port: int, listener_port: int, upstream_port: int
    ) -> None:
        self.listener_port = listener_port
        bootstrap = static_bootstrap(admin_port, listener_port, upstream_port)
        super().__init__(workdir, "static", bootstrap, admin_port)  # log level as the gateways
