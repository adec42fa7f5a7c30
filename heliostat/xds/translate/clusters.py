"""Cluster resources: one EDS cluster per cluster view (a model's, or one derived from it)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2, protocol_pb2
from envoy.extensions.load_balancing_policies.common.v3 import common_pb2 as lb_common_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.subset.v3 import subset_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.v3 import percent_pb2

from heliostat.balance import ClusterView
from heliostat.policy import Model, UpstreamProtocol
from heliostat.policy.traffic import RetryOn
from heliostat.xds.translate.affinity import apply_balancing, host_count
from heliostat.xds.translate.common import ads_source, pack, seconds
from heliostat.xds.translate.endpoints import REGION_KEY
from heliostat.xds.translate.resilience import circuit_breakers, outlier_detection

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Below this share of healthy hosts Envoy ignores health and sends to every host. heliostat's
# health comes from scrapes, and a control plane cut off from its replicas would mark them all
# unhealthy: panic then keeps traffic flowing. Above it (a region down, others up), failover
# to the next priority is what we want, so the threshold is set low on purpose.
PANIC_THRESHOLD_PERCENT = 25.0
LEAST_REQUEST_POLICY = "envoy.load_balancing_policies.least_request"
SUBSET_POLICY = "envoy.load_balancing_policies.subset"
_GATEWAY_ERRORS = {502, 503, 504}  # what Envoy's outlier detection counts as gateway failures


def model_cluster(
    view: ClusterView, model: Model, *, region_subsets: bool = False
) -> cluster_pb2.Cluster:
    """The view's cluster; with `region_subsets` also subsets by endpoint region, for the
    east-west listener's routes to match their own region's (`region_subsets`)."""
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
        load_balancing_policy=least_request_policy(full_scan(model, host_count(view))),
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
    if region_subsets:
        add_region_subsets(cluster)
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(
        pack(_protocol_options(model.protocol))
    )
    return cluster


def add_region_subsets(cluster: cluster_pb2.Cluster) -> None:
    """Subset the cluster by its endpoints' `envoy.lb` region label (the east-west hop,
    `east_west.py`), in place. A route without a metadata match (the region's users') uses
    the whole cluster as before (fallback ANY_ENDPOINT), with its locality weights
    (`locality_weight_aware`: without it Envoy's subset balancer ignores them, and a
    70% locality took 49%); a route matching a region is held to that region's hosts and
    finds none rather than falling back to the cluster when the region has none
    (NO_FALLBACK on the selector: a 503, never a lent request lent onward).

    A hashing cluster (the legacy lb_policy) takes `lb_subset_config`; a typed
    load_balancing_policy (least request) is wrapped in the typed subset policy, since
    Envoy refuses lb_subset_config beside it."""
    subsets = cluster_pb2.Cluster.LbSubsetConfig
    if cluster.HasField("load_balancing_policy"):
        inner = cluster_pb2.LoadBalancingPolicy()
        inner.CopyFrom(cluster.load_balancing_policy)
        config = subset_pb2.Subset(
            fallback_policy=subset_pb2.Subset.ANY_ENDPOINT,
            locality_weight_aware=True,
            subset_selectors=[
                subset_pb2.Subset.LbSubsetSelector(
                    keys=[REGION_KEY],
                    fallback_policy=subset_pb2.Subset.LbSubsetSelector.NO_FALLBACK,
                )
            ],
            subset_lb_policy=inner,
        )
        cluster.load_balancing_policy.CopyFrom(
            cluster_pb2.LoadBalancingPolicy(
                policies=[
                    cluster_pb2.LoadBalancingPolicy.Policy(
                        typed_extension_config=extension_pb2.TypedExtensionConfig(
                            name=SUBSET_POLICY, typed_config=pack(config)
                        )
                    )
                ]
            )
        )
        return
    cluster.lb_subset_config.CopyFrom(
        subsets(
            fallback_policy=subsets.ANY_ENDPOINT,
            locality_weight_aware=True,
            subset_selectors=[
                subsets.LbSubsetSelector(
                    keys=[REGION_KEY],
                    fallback_policy=subsets.LbSubsetSelector.NO_FALLBACK,
                )
            ],
        )
    )


def full_scan(model: Model, hosts: int) -> bool:
    """Whether the model's least-request clusters scan every host of the locality
    (`selection_method: FULL_SCAN`) rather than draw two (Envoy's default): when outlier
    detection ejects a replica that fails every try before a request runs out of tries.

    A replica that fails fast holds the fewest requests in flight, so a full scan sends it
    every request, and every retry too: previous_hosts makes Envoy pick again, but a scan
    picks the same host again (host_selection_retry_max_attempts times, then sends it
    there). Each try that fails counts towards ejection: connect failures, resets and
    timeouts count as gateway failures and 5xx (heliostat does not split local-origin
    errors), and so do the 502-504s retried. When every failure a route retries counts
    towards a consecutive threshold at most `num_retries`, enforced at 100%, and the
    cluster may eject one host (`max_ejection_percent` of `hosts`), the replica is ejected
    before the request's last try, which then goes to another host: a scan costs no
    failure two random choices would have hidden. Otherwise (outlier detection off, a
    higher threshold, a retried 4xx it never counts) two random choices: a retry's
    re-picks then land elsewhere (tests/e2e/test_traffic_policy's retry test)."""
    retries, detection = model.retries, model.outlier_detection
    codes: set[int] = set()
    if RetryOn.RETRIABLE_STATUS_CODES in retries.retry_on:
        codes |= set(retries.retriable_status_codes)
    if RetryOn.GATEWAY_ERROR in retries.retry_on:
        codes |= _GATEWAY_ERRORS
    if RetryOn.FIVE_XX in retries.retry_on:
        codes |= set(range(500, 600))
    if RetryOn.RETRIABLE_4XX in retries.retry_on or any(code < 500 for code in codes):
        return False  # outlier detection counts no 4xx: a host refusing fast is never ejected
    thresholds = []
    if detection.consecutive_5xx:
        thresholds.append(detection.consecutive_5xx)  # enforced at 100% (`outlier_detection`)
    if (
        detection.consecutive_gateway_failure
        and detection.enforcing_consecutive_gateway_failure == 100
        and codes <= _GATEWAY_ERRORS
    ):
        thresholds.append(detection.consecutive_gateway_failure)
    return (
        bool(thresholds)
        and min(thresholds) <= retries.num_retries
        and detection.max_ejection_percent * max(hosts, 1) >= 100
    )


def least_request_policy(scan: bool) -> cluster_pb2.LoadBalancingPolicy:
    """Least request with locality weights (bounded overflow is expressed as locality weights
    inside priority 0; Envoy refuses them in common_lb_config next to a typed policy): over
    every host of the locality (`selection_method: FULL_SCAN`, ties at random) when `scan`
    (see `full_scan`), else two random choices.

    A region's replicas hold a few slots each, and two draws among 3-4 replicas often miss
    the one with a free slot (on the planet's flash crowd, 72 of 89 late admitted requests
    had queued on a full replica while another in the region had a free slot). The planet
    (discrete, the bench fleet, seeds 0-5, two random choices -> full scan; within the SLO,
    TTFT p99): steady chat at 65% 97.1% -> 98.5%, 688 -> 546 ms; at 80% 89.8% -> 93.1%,
    772 -> 649 ms; flash crowd 97.1% -> 98.1% of the admitted, 688 -> 613 ms; regional
    surge 93.6% -> 95.4%, 972 -> 772 ms; a us-east replica dropping every connection from
    10 s (its metrics still answering) 91.9% -> 94.1%, no request failed either way.
    N_CHOICES with 3 or 4 choices, or as many as the locality has hosts, fell in between.
    Envoy keeps per-host counts across its workers: a scan of a few hosts is cheap and
    exact."""
    method = (
        least_request_pb2.LeastRequest.FULL_SCAN
        if scan
        else least_request_pb2.LeastRequest.N_CHOICES
    )
    config = least_request_pb2.LeastRequest(
        selection_method=method,
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
