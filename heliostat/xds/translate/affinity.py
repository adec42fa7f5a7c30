"""Session and prefix affinity: consistent hashing with bounded load.

A model with `affinity` gets ring-hash (or Maglev) clusters instead of least-request, with
`hash_balance_factor` = bounded_load x 100: a replica takes at most that multiple of the
average in-flight requests, so a hot session spills over to the next replica on the ring
rather than queueing. Host weights from the control law shape ring shares, and the locality
weights and priorities of the view still apply. Routes hash on the session header and, for
`prefix_chars`, on the key the Lua filter (`prefix_key.py`) derives from the prompt.
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

from heliostat.policy import Model
from heliostat.policy.traffic import Affinity, HashKind
from heliostat.wire import LUA_FILTER_NAME, PREFIX_KEY_HEADER, SESSION_HEADER
from heliostat.xds.translate.common import pack
from heliostat.xds.translate.prefix_key import SOURCE

_LB_POLICY = {
    HashKind.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    HashKind.MAGLEV: cluster_pb2.Cluster.MAGLEV,
}


def apply_hashing(cluster: cluster_pb2.Cluster, affinity: Affinity) -> None:
    """Switch a least-request cluster to bounded-load consistent hashing, in place."""
    cluster.lb_policy = _LB_POLICY[affinity.hash]
    cluster.common_lb_config.consistent_hashing_lb_config.CopyFrom(
        cluster_pb2.Cluster.CommonLbConfig.ConsistentHashingLbConfig(
            hash_balance_factor=wrappers_pb2.UInt32Value(value=round(affinity.bounded_load * 100))
        )
    )


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
