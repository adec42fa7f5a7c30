"""Static Envoy gateways for the policies heliostat is compared with.

One Envoy per region serves every static policy, each on its own listener port, so a policy
differs from another only in its listener, route and cluster, never in the process:

- `round_robin`, `least_request`, `ring_hash`: one STATIC cluster over every replica, grouped
  into localities by region and prioritised by RTT from the gateway's region (own region
  priority 0, then the others nearest first): what a plain Istio mesh with locality failover
  does. No health checks, so a busy region keeps all of its traffic (failover needs failures).
  `ring_hash` hashes on the same key heliostat's prefix affinity uses: heliostat's own Lua
  program (`heliostat.xds.translate.prefix_key`) and hash policies, imported, with no
  `hash_balance_factor` (plain consistent hashing, no bounded load).
- `picker`: one cluster per replica, named by its address, and a route taking the cluster
  from the header the in-path picker sets (`cluster_header`), as the endpoint picker's ext_proc
  tells Envoy where to send.

Every route adds the `x-heliostat-origin-region` header heliostat's gateways add (the
simulated replicas charge the RTT from it), speaks HTTP/1.1 to the replicas like heliostat's
clusters, never times a request out (streams idle for five minutes are cut), and retries a
connect failure, reset or 503 on another host as heliostat's routes do (the picker's route
names one host, so it has nothing to retry on).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from bench.routing_picker import PICKED_ENDPOINT_HEADER
from heliostat.lab.processes import LOCALHOST, Process, envoy_binary, http_get, wait_until
from heliostat.policy import Model
from heliostat.xds.translate.affinity import hash_policies, lua_filter, prefix_key_metadata
from heliostat.xds.translate.listeners import MAX_BUFFERED_BODY_BYTES, STREAM_IDLE_TIMEOUT_S
from heliostat.xds.translate.routes import ORIGIN_HEADER

STATIC_POLICIES = ("round_robin", "least_request", "ring_hash", "picker")
LB_POLICY = {
    "round_robin": "ROUND_ROBIN",
    "least_request": "LEAST_REQUEST",
    "ring_hash": "RING_HASH",
}

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _as_dict(message: Message) -> dict[str, Any]:
    return dict(MessageToDict(message, preserving_proto_field_name=True))


def _socket(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LOCALHOST, "port_value": port}}


def _endpoint(address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}


def _http1() -> dict[str, Any]:
    return {
        _HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }


def failover_cluster(
    name: str,
    lb_policy: str,
    region: str,
    replicas: Mapping[str, Sequence[str]],
    rtt_ms: Callable[[str, str], float],
) -> dict[str, Any]:
    """One cluster over every replica, localities prioritised by RTT from `region`."""
    order = sorted(replicas, key=lambda r: (rtt_ms(region, r), r))
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": lb_policy,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "locality": {"region": r},
                    "priority": priority,
                    "lb_endpoints": [_endpoint(a) for a in replicas[r]],
                }
                for priority, r in enumerate(order)
            ],
        },
        # Envoy's defaults (eject after 5 consecutive 5xx); Istio's locality failover needs
        # outlier detection configured to act at all.
        "outlier_detection": {},
        "typed_extension_protocol_options": _http1(),
    }


def endpoint_cluster(address: str) -> dict[str, Any]:
    """The picker's cluster for one replica, named by its address."""
    return {
        "name": address,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": address,
            "endpoints": [{"lb_endpoints": [_endpoint(address)]}],
        },
        "typed_extension_protocol_options": _http1(),
    }


def _retry_policy() -> dict[str, Any]:
    return {
        "retry_on": "connect-failure,refused-stream,reset,retriable-status-codes",
        "retriable_status_codes": [503],
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }


def _route(policy: str, region: str, model: Model) -> dict[str, Any]:
    action: dict[str, Any] = {"timeout": "0s"}
    route: dict[str, Any] = {
        "name": policy,
        "match": {"prefix": "/"},
        "request_headers_to_add": [
            {
                "header": {"key": ORIGIN_HEADER, "value": region},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }
    if policy == "picker":
        action["cluster_header"] = PICKED_ENDPOINT_HEADER
    else:
        action["cluster"] = policy
        action["retry_policy"] = _retry_policy()
    if policy == "ring_hash":
        action["hash_policy"] = [_as_dict(h) for h in hash_policies(model)]
        metadata = prefix_key_metadata(model)
        if metadata is None:
            raise ValueError(f"model {model.name} has no affinity.prefix_chars to hash on")
        route["metadata"] = _as_dict(metadata)
    route["route"] = action
    return route


def _listener(policy: str, port: int, region: str, model: Model) -> dict[str, Any]:
    filters = [lua_filter_dict()] if policy == "ring_hash" else []
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        }
    )
    manager = {
        "@type": f"type.googleapis.com/{_HCM}",
        "stat_prefix": policy,
        "codec_type": "AUTO",
        "stream_idle_timeout": f"{STREAM_IDLE_TIMEOUT_S:g}s",
        "route_config": {
            "name": policy,
            "virtual_hosts": [
                {"name": policy, "domains": ["*"], "routes": [_route(policy, region, model)]}
            ],
        },
        "http_filters": filters,
    }
    return {
        "name": policy,
        "address": _socket(port),
        "per_connection_buffer_limit_bytes": MAX_BUFFERED_BODY_BYTES,
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


def lua_filter_dict() -> dict[str, Any]:
    """heliostat's prefix-key Lua filter, as it sends it over xDS."""
    return _as_dict(lua_filter())


def static_bootstrap(
    region: str,
    ports: Mapping[str, int],
    admin_port: int,
    replicas: Mapping[str, Sequence[str]],
    rtt_ms: Callable[[str, str], float],
    model: Model,
) -> dict[str, Any]:
    """The bootstrap of one region's static gateway: a listener per policy in `ports`."""
    unknown = set(ports) - set(STATIC_POLICIES)
    if unknown:
        raise ValueError(f"unknown static policies {sorted(unknown)}; known: {STATIC_POLICIES}")
    clusters = [
        failover_cluster(policy, LB_POLICY[policy], region, replicas, rtt_ms)
        for policy in ports
        if policy != "picker"
    ]
    if "picker" in ports:
        clusters += [endpoint_cluster(a) for addresses in replicas.values() for a in addresses]
    return {
        "node": {
            "id": f"static-{region}",
            "cluster": "routing-bench",
            "locality": {"region": region},
        },
        "admin": {"address": _socket(admin_port)},
        "static_resources": {
            "listeners": [_listener(p, port, region, model) for p, port in ports.items()],
            "clusters": clusters,
        },
    }


class StaticGateway(Process):
    """A real Envoy running one static bootstrap."""

    def __init__(
        self, workdir: Path, name: str, bootstrap: Mapping[str, Any], admin_port: int
    ) -> None:
        self.name = name
        self.admin_port = admin_port
        config = workdir / f"envoy-{name}.json"
        config.write_text(json.dumps(bootstrap, indent=1))
        self.config = config
        super().__init__(
            [
                envoy_binary(),
                "-c",
                str(config),
                "--disable-hot-restart",
                "-l",
                "warning",
                "--concurrency",
                "1",
            ],
            workdir / f"envoy-{name}.log",
        )

    def start(self, wait: bool = True) -> None:
        """Launch Envoy; with `wait`, return once it is LIVE (else call `wait_ready`)."""
        super().start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        wait_until(
            lambda: self.admin("/ready")[1].strip() == "LIVE",
            timeout=15,
            message=f"static envoy {self.name} LIVE (log: {self.log_path})",
        )

    def admin(self, path: str) -> tuple[int, str]:
        return http_get(f"http://{LOCALHOST}:{self.admin_port}{path}")


def validate(bootstrap: Mapping[str, Any], path: Path) -> str:
    """Envoy's own verdict on a bootstrap (`--mode validate`: parsed, nothing bound); '' if OK."""
    path.write_text(json.dumps(bootstrap))
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "critical"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "" if done.returncode == 0 else (done.stdout + done.stderr)[-2000:]
