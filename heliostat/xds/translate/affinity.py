"""Session and prefix affinity: consistent hashing with bounded load, when it pays.

A model with `affinity` gets, per the control law's choice (`heliostat.balance.affinity`,
carried by the view as `ClusterView.balancing`), either least-request clusters (while its
prompts share no prefixes) or ring-hash / Maglev clusters with `hash_balance_factor` =
bounded_load x 100: a replica takes at most that multiple of the average in-flight requests,
so a hot session spills to another replica instead of queueing. Host weights from the
control law shape ring shares, and the locality weights and priorities of the view still
apply. The choice and its reason are in the cluster's metadata (`heliostat`), visible in
Envoy's config_dump. Routes always hash on the session header and, for `prefix_chars`, on
the key the Lua filter (`prefix_key.py`) derives from the prompt: a least-request cluster
ignores the hash, so switching the cluster's policy needs no route or listener change.

A ring-hash ring has a fixed size (RING_SIZE points, the minimum and the maximum alike; more
for a big cluster, `ring_size`), so that a change of weights or shares moves only the keys
it must. Envoy gives each host
scale x its normalised weight points, a host's points being the first ones of a sequence
hashed from its address, and by default chooses the scale so that the *lightest* host gets
a whole number of at least min_ring_size x its weight points: the scale is anywhere between
min_ring_size and min_ring_size + 1 / (lightest weight). heliostat's weights make light
hosts: an overflow share of half a percent spread over another region's four replicas, a
replica at its floor weight. When such a weight comes or goes, or moves by a little, every
host's point count changes by one factor (up to 1 + 1 / (min_ring_size x lightest weight)),
and keys move between replicas whose own shares did not change, losing their cached
prefixes. A model of the ring (points from the
documented algorithm, 20,000 keys, a region of 3 replicas whose overflow share to a region
of 4 goes 0, 0.5%, 2%, 5%, ...): the first half-percent moved 22% of the keys that stayed in
the region from one of its replicas to another, 0.2% with a fixed scale; over a sequence of
twelve share changes, 95% against 40%. With a fixed scale a host always holds RING_SIZE x its
share: a share that grows adds points, one that shrinks drops its last ones. Maglev's table
has a fixed size already.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2, wrappers_pb2

from heliostat.balance.view import Balancing, ClusterView, LbPolicy
from heliostat.policy import Model
from heliostat.wire import LUA_FILTER_NAME, METADATA_NAMESPACE, PREFIX_KEY_HEADER, SESSION_HEADER
from heliostat.xds.translate.common import pack
from heliostat.xds.translate.prefix_key import SOURCE

# Points on a ring-hash ring, whatever the weights (see the module docstring). Envoy's default
# minimum is 1,024: at this size a host with a 1% share still holds ~80 points, and building
# the ring at each EDS update costs well under a millisecond.
RING_SIZE = 8192
# A big cluster gets a bigger ring, so that every host of equal weight keeps at least this many
# points (a host's share of the keys varies by about 1 / sqrt(points)); the size goes up in
# powers of two, so it changes (a CDS update) only when the host count doubles.
MIN_POINTS_PER_HOST = 16
# Envoy's upper bound on maximum_ring_size (8M points).
ENVOY_MAX_RING_SIZE = 8_388_608


def host_count(view: ClusterView) -> int:
    """The cluster's endpoints, all localities and priorities together (no tuple built)."""
    return sum(len(locality.endpoints) for locality in view.localities)


def ring_size(hosts: int) -> int:
    """The ring's size for a cluster of `hosts` endpoints (all its priorities together)."""
    wanted = MIN_POINTS_PER_HOST * max(hosts, 1)
    return min(ENVOY_MAX_RING_SIZE, max(RING_SIZE, 1 << (wanted - 1).bit_length()))


_LB_POLICY = {
    LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    LbPolicy.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    LbPolicy.MAGLEV: cluster_pb2.Cluster.MAGLEV,
}


def apply_balancing(
    cluster: cluster_pb2.Cluster, balancing: Balancing | None, hosts: int = 0
) -> None:
    """Set a cluster's load balancer from the law's choice, in place, with its reason in the
    cluster's metadata. None (a model without affinity) leaves least-request as it is.
    `hosts` (the cluster's endpoints) sizes a ring-hash ring (`ring_size`)."""
    if balancing is None:
        return
    cluster.lb_policy = _LB_POLICY[balancing.policy]
    if balancing.policy is not LbPolicy.LEAST_REQUEST:
        # A hashing policy is the legacy lb_policy's: the typed least-request policy would
        # take precedence, and locality weights go back into common_lb_config.
        cluster.ClearField("load_balancing_policy")
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    if balancing.hash_balance_factor is not None:
        cluster.common_lb_config.consistent_hashing_lb_config.CopyFrom(
            cluster_pb2.Cluster.CommonLbConfig.ConsistentHashingLbConfig(
                hash_balance_factor=wrappers_pb2.UInt32Value(value=balancing.hash_balance_factor)
            )
        )
    if balancing.policy is LbPolicy.RING_HASH:
        size = ring_size(hosts)
        cluster.ring_hash_lb_config.CopyFrom(
            cluster_pb2.Cluster.RingHashLbConfig(
                minimum_ring_size=wrappers_pb2.UInt64Value(value=size),
                maximum_ring_size=wrappers_pb2.UInt64Value(value=size),
            )
        )
    reason = struct_pb2.Struct()
    reason.update(dict(balancing.reason))
    cluster.metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(reason)


def session_header(model: Model) -> str:
    """The header that names a session: the affinity's, or the default one for version pinning."""
    return model.affinity.header if model.affinity else SESSION_HEADER


def hash_policies(model: Model) -> list[rc.RouteAction.HashPolicy]:
    """What a route hashes: for load balancing (affinity) and version picks (versions).

    Absent headers contribute nothing; with neither present Envoy picks at random.
    """
    if model.affinity is None and not model.versions:
        return []
    policies = [_header_hash(session_header(model))]
    if model.affinity is not None and model.affinity.prefix_chars is not None:
        policies.append(_header_hash(PREFIX_KEY_HEADER))
    return policies


def _header_hash(name: str) -> rc.RouteAction.HashPolicy:
    return rc.RouteAction.HashPolicy(header=rc.RouteAction.HashPolicy.Header(header_name=name))


def prefix_key_settings(model: Model) -> dict[str, Any] | None:
    """What the Lua program reads to derive this model's prefix key, or None without one."""
    if model.affinity is None or model.affinity.prefix_chars is None:
        return None
    return {
        "prefix_chars": model.affinity.prefix_chars,
        "session_header": model.affinity.header,
        "key_header": PREFIX_KEY_HEADER,
    }


def prefix_key_metadata(model: Model) -> base_pb2.Metadata | None:
    """Route metadata that turns the Lua prefix-key program on for this route."""
    settings = prefix_key_settings(model)
    if settings is None:
        return None
    values = struct_pb2.Struct()
    values.update(settings)
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[LUA_FILTER_NAME].CopyFrom(values)
    return metadata


def lua_filter() -> hcm_pb2.HttpFilter:
    """The listener's Lua filter; it does nothing on routes without prefix-key or fallback
    metadata."""
    config = lua_pb2.Lua(default_source_code=base_pb2.DataSource(inline_string=SOURCE))
    return hcm_pb2.HttpFilter(name=LUA_FILTER_NAME, typed_config=pack(config))
