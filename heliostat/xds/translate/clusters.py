"""Cluster resources: one EDS cluster per cluster view (a model's, or one derived from it)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2, protocol_pb2
from envoy.extensions.load_balancing_policies.common.v3 import common_pb2 as lb_common_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.v3 import percent_pb2

from heliostat.balance import ClusterView
from heliostat.policy import Model, UpstreamProtocol
from heliostat.xds.translate.affinity import apply_balancing, host_count
from heliostat.xds.translate.common import ads_source, pack, seconds
from heliostat.xds.translate.resilience import circuit_breakers, outlier_detection

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Below this share of healthy hosts Envoy ignores health and sends to every host. heliostat's
# health comes from scrapes, and a control plane cut off from its replicas would mark them all
# unhealthy: panic then keeps traffic flowing. Above it (a region down, others up), failover
# to the next priority is what we want, so the threshold is set low on purpose.
PANIC_THRESHOLD_PERCENT = 25.0
LEAST_REQUEST_POLICY = "envoy.load_balancing_policies.least_request"


def model_cluster(view: ClusterView, model: Model) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=view.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=view.name
        ),
        connect_timeout=seconds(model.connect_timeout),
        # Envoy's in-flight counts refine heliostat's scraped weights between ticks (a model
        # with affinity may hash instead, while that pays: apply_balancing below). The typed
        # policy (`least_request_policy`) takes precedence; lb_policy names it for readers.
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        load_balancing_policy=least_request_policy(),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            healthy_panic_threshold=percent_pb2.Percent(value=PANIC_THRESHOLD_PERCENT),
            # heliostat already sends at most one EDS update per tick: apply it at once
            # rather than in Envoy's default 1 s merge window.
            update_merge_window=seconds(0),
        ),
        outlier_detection=outlier_detection(model),
        circuit_breakers=circuit_breakers(model, view.max_requests),
    )
    apply_balancing(cluster, view.balancing, host_count(view))
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(
        pack(_protocol_options(model.protocol))
    )
    return cluster


def least_request_policy() -> cluster_pb2.LoadBalancingPolicy:
    """Least request over every host of the locality (`selection_method: FULL_SCAN`, ties at
    random), with locality weights (bounded overflow is expressed as locality weights inside
    priority 0; Envoy refuses them in common_lb_config next to a typed policy).

    Not two random choices (Envoy's default): a region's replicas hold a few slots each, and
    two draws among 3-4 replicas often miss the one with a free slot. On the planet's flash
    crowd (bench fleet, 12 seeds), while the in-flight cap held, 72 of 89 late admitted
    requests of six seeds had queued on a full replica while another in the region had a
    free slot; with the full scan: within the SLO 96.7% -> 97.9% of the admitted, p99 729 ->
    649 ms, goodput 28.1 -> 29.0/s; steady chat at 65% (6 seeds): 97.1% -> 98.5%, p99 688
    -> 546 ms. Envoy keeps per-host counts across its workers: a scan of a few hosts is
    cheap and exact."""
    config = least_request_pb2.LeastRequest(
        selection_method=least_request_pb2.LeastRequest.FULL_SCAN,
        locality_lb_config=lb_common_pb2.LocalityLbConfig(
            locality_weighted_lb_config=lb_common_pb2.LocalityLbConfig.LocalityWeightedLbConfig()
        ),
    )
    return cluster_pb2.LoadBalancingPolicy(
        policies=[
            cluster_pb2.LoadBalancingPolicy.Policy(
                typed_extension_config=extension_pb2.TypedExtensionConfig(
                    name=LEAST_REQUEST_POLICY, typed_config=pack(config)
                )
            )
        ]
    )


def _protocol_options(protocol: UpstreamProtocol) -> upstream_http_pb2.HttpProtocolOptions:
    explicit = upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if protocol is UpstreamProtocol.HTTP2:
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    return upstream_http_pb2.HttpProtocolOptions(explicit_http_config=explicit)
