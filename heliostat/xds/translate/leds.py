"""The LEDS form of a view's assignment: each endpoint its own resource, for delta-xDS nodes.

In EDS a ClusterLoadAssignment is all-or-nothing: one endpoint's new weight resends every
endpoint of the cluster (and a drain touches the model's cluster, its version and its tenant
clusters), ~10 KB per push for 300 endpoints. With LEDS (Locality Endpoint Discovery) a
locality names a glob collection (`leds_cluster_locality_config`) and each of its endpoints
is an `envoy.config.endpoint.v3.LbEndpoint` resource in it, so delta xDS sends the one
endpoint that changed (~100 bytes). Envoy 1.40 takes it over delta ADS
(bench/measure/leds_probe.py). SotW has no glob collections, so SotW nodes keep plain EDS.

Names: `xdstp://heliostat/envoy.config.endpoint.v3.LbEndpoint/<cluster>/<region>-p<priority>/
<host>_<port>`. Envoy decodes each name and re-encodes its collection to match it against
its subscriptions, so every segment is kept to characters the URL form leaves alone; any
other character becomes `_` and the segment gets a digest of the original, which keeps
distinct names distinct. A locality without endpoints is written inline (empty): Envoy waits
for a collection's first update before the cluster warms, and an empty collection has none.

The endpoint bytes are exactly those of its plain EDS entry (`endpoints.lb_endpoint_bytes`),
so the delta form is a pure function of the plain one (the snapshot's version relies on it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from heliostat.balance import ClusterView, LocalityView
from heliostat.wire import LEDS_AUTHORITY
from heliostat.xds.resources.snapshot import Resource
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate.endpoints import (
    add_drop_policy,
    lb_endpoint_bytes,
    locality_tail,
    locality_weight_scale,
)
from heliostat.xds.translate.memo import TranslationMemo

PREFIX = f"xdstp://{LEDS_AUTHORITY}/{endpoint_components_pb2.LbEndpoint.DESCRIPTOR.full_name}/"
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class LedsAssignment:
    """One cluster in LEDS form: its assignment and the endpoint resources it refers to."""

    assignment: Resource
    endpoints: tuple[Resource, ...]


def segment(text: str) -> str:
    """`text` as one path segment of an xdstp name that Envoy's URL form leaves as it is."""
    if _SAFE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', text)}-{digest}"


def collection(cluster: str, locality: LocalityView) -> str:
    """The collection of a cluster's locality, ending in `/` (a member's name follows)."""
    return f"{PREFIX}{segment(cluster)}/{segment(locality.region or '_')}-p{locality.priority}/"


def leds_assignment(view: ClusterView, memo: TranslationMemo | None = None) -> LedsAssignment:
    """The view's assignment with each non-empty locality's endpoints in its collection."""
    if memo is None:
        memo = TranslationMemo()
    scale = locality_weight_scale(view)
    endpoints: list[Resource] = []
    shapes = []
    for locality in view.localities:
        members = _members(view.name, locality, memo) if locality.endpoints else []
        endpoints += members
        reason = tuple(sorted(locality.reason.items())) if locality.reason else ()
        shapes.append((locality.region, locality.priority, locality.weight, bool(members), reason))
    key = (view.name, view.drop_overload_percent, tuple(shapes))
    assignment = memo.leds_assignments.get(key)
    if assignment is None:
        assignment = _assignment(view, scale)
        memo.leds_assignments.put(key, assignment)
    return LedsAssignment(covering(assignment, endpoints), tuple(endpoints))


def covering(assignment: Resource, members: list[Resource]) -> Resource:
    """The assignment with a version that also covers its collections' members.

    Envoy 1.40 lists no collection member in a reconnecting stream's
    `initial_resource_versions`, only the assignment. With this version the assignment
    stands for exactly its members, so a server seeing it listed at the version it would
    send knows which endpoints the node holds (heliostat.xds.protocol.delta sends this
    version only once the node has ACKed those members). A pure function of content, so
    every heliostat replica gives the same one.
    """
    digest = hashlib.sha256(assignment.version.encode())
    for member in members:
        digest.update(f"\n{member.name}\0{member.version}".encode())
    return Resource(
        assignment.name,
        digest.hexdigest()[:16],
        assignment.packed,
        assignment.message,
    )


def _assignment(view: ClusterView, scale: int) -> Resource:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=view.name)
    for locality in view.localities:
        entry = message.endpoints.add(locality=base_pb2.Locality(region=locality.region))
        entry.MergeFrom(locality_tail(locality, scale))
        if locality.endpoints:
            config = entry.leds_cluster_locality_config
            config.leds_config.ads.SetInParent()
            config.leds_config.resource_api_version = config_source_pb2.V3
            config.leds_collection_name = collection(view.name, locality) + "*"
    add_drop_policy(message, view)
    return Resource.of(TypeUrl.ENDPOINT, view.name, message)


def _members(cluster: str, locality: LocalityView, memo: TranslationMemo) -> list[Resource]:
    prefix = collection(cluster, locality)
    seen: dict[str, int] = {}
    members = []
    for view in locality.endpoints:
        key = (prefix, id(view))
        hit = memo.leds_endpoints.get(key)
        if hit is not None:
            resource = hit[1]
        else:
            name = prefix + segment(f"{view.host}_{view.port}")
            resource = Resource.of_payload(
                TypeUrl.LB_ENDPOINT,
                name,
                lb_endpoint_bytes(view, memo),
                endpoint_components_pb2.LbEndpoint,
            )
            memo.leds_endpoints.put(key, (view, resource))
        # One address listed twice in a locality stays two hosts, as in EDS.
        count = seen.get(resource.name, 0)
        seen[resource.name] = count + 1
        if count:
            resource = Resource(
                f"{resource.name}-{count + 1}",
                resource.version,
                resource.packed,
                None,
                endpoint_components_pb2.LbEndpoint,
            )
        members.append(resource)
    return members
