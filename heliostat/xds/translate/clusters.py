"""Cluster resources: one EDS cluster per model."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2

from heliostat.balance import ClusterView
from heliostat.policy import Model, UpstreamProtocol
from heliostat.xds.translate.common import ads_source, pack, seconds

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def model_cluster(view: ClusterView, model: Model) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=view.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=view.name
        ),
        connect_timeout=seconds(model.connect_timeout),
        # Envoy's in-flight counts refine heliostat's scraped weights between ticks.
        lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
    )
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
