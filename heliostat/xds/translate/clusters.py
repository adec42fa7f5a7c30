"""Cluster resources: one EDS cluster per cluster view (a model's, or one derived from it)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
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


def model_cluster(view: ClusterView, model: Model) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=view.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=view.name
        ),
        connect_timeout=seconds(model.connect_timeout),
        # Envoy's in-flight counts refine heliostat's scraped weights between ticks (a model
        # with affinity may hash instead, while that pays: apply_balancing below).
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            healthy_panic_threshold=percent_pb2.Percent(value=PANIC_THRESHOLD_PERCENT),
            # Bounded overflow is expressed as locality weights inside priority 0.
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig(),
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


def _protocol_options(protocol: UpstreamProtocol) -> upstream_http_pb2.HttpProtocolOptions:
    explicit = upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if protocol is UpstreamProtocol.HTTP2:
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    return upstream_http_pb2.HttpProtocolOptions(explicit_http_config=explicit)
