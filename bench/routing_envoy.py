"""Static Envoy gateways for the policies heliostat is compared with.

One Envoy per region (an edge region's too) serves every static policy, each on its own
listener port, so a policy differs from another only in its listener, route and cluster,
never in the process:

- `round_robin`, `least_request`, `ring_hash`: one STATIC cluster over every replica, grouped
  into localities by region and prioritised by RTT from the gateway's region (own region
  priority 0, then the others nearest first; regions without replicas have no locality):
  what a plain Istio mesh with locality failover does. No health checks, so a busy region
  keeps all of its traffic (failover needs failures). `ring_hash` hashes on the same key
  heliostat's prefix affinity uses: heliostat's own Lua program
  (`heliostat.xds.translate.prefix_key`) and hash policies, imported, with no
  `hash_balance_factor` (plain consistent hashing, no bounded load).
- `envoy_orca`: what Envoy alone can do with the replicas' own load reports, no control
  plane. The cluster runs `envoy.load_balancing_policies.load_aware_locality` (least request
  inside a locality), which weighs the localities of priority 0 by the headroom their
  endpoints report in ORCA (`endpoint-load-metrics`, asked for by the route's
  `endpoint-load-metrics-format: TEXT` header, which vLLM answers on unary responses) and
  spills from the gateway's own locality when it is hotter than the others. It only ever
  looks at priority 0, so priority 0 holds the regions within the network budget (the
  gateway's own first), and the regions beyond it follow by RTT, as for the other clusters.
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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from bench.routing_picker import PICKED_ENDPOINT_HEADER
from heliostat.bootstrap import socket_address
from heliostat.lab.processes import LOCALHOST
from heliostat.policy import Model
from heliostat.sim.orca import FORMAT_HEADER
from heliostat.wire import ORIGIN_HEADER
from heliostat.xds.translate.affinity import hash_policies, lua_filter, prefix_key_metadata
from heliostat.xds.translate.listeners import MAX_BUFFERED_BODY_BYTES, STREAM_IDLE_TIMEOUT_S

STATIC_POLICIES = ("round_robin", "least_request", "ring_hash", "envoy_orca", "picker")
LB_POLICY = {
    "round_robin": "ROUND_ROBIN",
    "least_request": "LEAST_REQUEST",
    "ring_hash": "RING_HASH",
}
LOAD_AWARE_LOCALITY = "envoy.load_balancing_policies.load_aware_locality"
_LB_TYPES = "type.googleapis.com/envoy.extensions.load_balancing_policies"

RttFn = Callable[[str, str], float]

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _as_dict(message: Message) -> dict[str, Any]:
    return dict(MessageToDict(message, preserving_proto_field_name=True))


def _endpoint(address: str) -> dict[str, Any]:
    host, _, port = address.rpartition(":")
    return {"endpoint": {"address": socket_address(host, int(port))}}


def _http1() -> dict[str, Any]:
    return {
        _HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }


def _locality(region: str, priority: int, addresses: Sequence[str]) -> dict[str, Any]:
    return {
        "locality": {"region": region},
        "priority": priority,
        "lb_endpoints": [_endpoint(a) for a in addresses],
    }


def failover_cluster(
    name: str,
    lb_policy: str,
    region: str,
    replicas: Mapping[str, Sequence[str]],
    rtt_ms: RttFn,
) -> dict[str, Any]:
    """One cluster over every replica, localities prioritised by RTT from `region`."""
    order = sorted((r for r in replicas if replicas[r]), key=lambda r: (rtt_ms(region, r), r))
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": lb_policy,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [_locality(r, p, replicas[r]) for p, r in enumerate(order)],
        },
        # Envoy's defaults (eject after 5 consecutive 5xx); Istio's locality failover needs
        # outlier detection configured to act at all.
        "outlier_detection": {},
        "typed_extension_protocol_options": _http1(),
    }


def orca_cluster(
    name: str,
    region: str,
    replicas: Mapping[str, Sequence[str]],
    rtt_ms: RttFn,
    within_budget: Callable[[str], Sequence[str]],
) -> dict[str, Any]:
    """`load_aware_locality` over the regions within budget (priority 0), the rest after.

    An edge gateway has no locality of its own: load_aware_locality then weighs every
    in-budget region by its reported headroom. With no region with replicas within the
    budget, the nearest one is priority 0, as locality failover would have it."""
    order = sorted((r for r in replicas if replicas[r]), key=lambda r: (rtt_ms(region, r), r))
    near = [r for r in order if r in set(within_budget(region))] or order[:1]
    far = [r for r in order if r not in near]
    localities = [_locality(r, 0, replicas[r]) for r in near]
    localities += [_locality(r, p, replicas[r]) for p, r in enumerate(far, start=1)]
    child = {
        "name": "envoy.load_balancing_policies.least_request",
        "typed_config": {"@type": f"{_LB_TYPES}.least_request.v3.LeastRequest"},
    }
    policy = {
        "name": LOAD_AWARE_LOCALITY,
        "typed_config": {
            "@type": f"{_LB_TYPES}.load_aware_locality.v3.LoadAwareLocality",
            "endpoint_picking_policy": {"policies": [{"typed_extension_config": child}]},
        },
    }
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_balancing_policy": {"policies": [{"typed_extension_config": policy}]},
        "load_assignment": {"cluster_name": name, "endpoints": localities},
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


def _header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _route(policy: str, region: str, model: Model) -> dict[str, Any]:
    action: dict[str, Any] = {"timeout": "0s"}
    headers = [_header(ORIGIN_HEADER, region)]
    if policy == "envoy_orca":  # vLLM reports its load only when asked
        headers.append(_header(FORMAT_HEADER, "TEXT"))
    route: dict[str, Any] = {
        "name": policy,
        "match": {"prefix": "/"},
        "request_headers_to_add": headers,
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
        "address": socket_address(LOCALHOST, port),
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
    rtt_ms: RttFn,
    model: Model,
    within_budget: Callable[[str], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The bootstrap of one region's static gateway: a listener per policy in `ports`.

    `within_budget(region)` names the regions a request may be served in (envoy_orca's
    priority 0); without it, every region is."""
    unknown = set(ports) - set(STATIC_POLICIES)
    if unknown:
        raise ValueError(f"unknown static policies {sorted(unknown)}; known: {STATIC_POLICIES}")
    clusters = [
        failover_cluster(policy, LB_POLICY[policy], region, replicas, rtt_ms)
        for policy in ports
        if policy in LB_POLICY
    ]
    if "envoy_orca" in ports:
        clusters.append(
            orca_cluster(
                "envoy_orca", region, replicas, rtt_ms, within_budget or (lambda _: list(replicas))
            )
        )
    if "picker" in ports:
        clusters += [endpoint_cluster(a) for addresses in replicas.values() for a in addresses]
    return {
        "node": {
            "id": f"static-{region}",
            "cluster": "routing-bench",
            "locality": {"region": region},
        },
        "admin": {"address": socket_address(LOCALHOST, admin_port)},
        "static_resources": {
            "listeners": [_listener(p, port, region, model) for p, port in ports.items()],
            "clusters": clusters,
        },
    }
