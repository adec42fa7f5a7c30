"""Immutable, content-addressed xDS snapshots.

Each resource is serialized once, deterministically, when the snapshot is made; its version
is a hash of those bytes. Versions therefore depend on content only: two heliostat replicas
with the same inputs agree, and an Envoy that reconnects to either is not re-sent what it has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2
from google.protobuf.message import Message

from heliostat.xds.resources.memo import RoundMemo
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl

_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    version: str
    packed: any_pb2.Any
    # The message, or None until first asked for when the resource was made from its bytes
    # (`of_payload`): serving only needs the bytes, so a message is decoded for whoever reads.
    _message: Message | None = field(default=None, repr=False, compare=False)
    _message_type: type[Message] | None = field(default=None, repr=False, compare=False)

    @property
    def message(self) -> Message:
        message = self._message
        if message is None:
            assert self._message_type is not None
            message = self._message_type.FromString(self.packed.value)
            object.__setattr__(self, "_message", message)
        return message

    @classmethod
    def of(
        cls,
        type_url: TypeUrl,
        name: str,
        message: Message,
        serialized: RoundMemo[int, Resource] | None = None,
    ) -> Resource:
        """Serialize and hash once per message object: translators hand back the very same
        message for content that did not change, and every node group shares it through
        the caller's `serialized` memo (by message identity; the Resource pins its message)."""
        if serialized is None:
            return cls._serialize(type_url, name, message)
        hit = serialized.get(id(message))
        if hit is not None and hit._message is message and hit.name == name:
            return hit
        resource = cls._serialize(type_url, name, message)
        serialized.put(id(message), resource)
        return resource

    @classmethod
    def of_payload(
        cls, type_url: TypeUrl, name: str, payload: bytes, message_type: type[Message]
    ) -> Resource:
        """A resource from bytes a translator assembled itself; they must be what
        `SerializeToString(deterministic=True)` gives for the message, so the version is
        the same function of content whichever way the resource was made."""
        return cls(
            name,
            _version(payload),
            any_pb2.Any(type_url=type_url.value, value=payload),
            None,
            message_type,
        )

    @classmethod
    def _serialize(cls, type_url: TypeUrl, name: str, message: Message) -> Resource:
        payload = message.SerializeToString(deterministic=True)
        return cls(
            name, _version(payload), any_pb2.Any(type_url=type_url.value, value=payload), message
        )


_NEW_RESOURCE = object.__new__
_SET_RESOURCE = tuple(
    Resource.__dict__[name].__set__
    for name in ("name", "version", "packed", "_message", "_message_type")
)


def new_resource(
    name: str, version: str, packed: any_pb2.Any, message_type: type[Message]
) -> Resource:
    """`Resource(name, version, packed, None, message_type)`, the same object, built
    through its slots' descriptors rather than the frozen dataclass's `__init__` (one
    `object.__setattr__` per field): LEDS makes a resource per moved endpoint and
    collection it is in, tens of thousands per tick in a large fleet."""
    resource = _NEW_RESOURCE(Resource)
    set_name, set_version, set_packed, set_message, set_type = _SET_RESOURCE
    set_name(resource, name)
    set_version(resource, version)
    set_packed(resource, packed)
    set_message(resource, None)
    set_type(resource, message_type)
    return resource


def version_of(payload: bytes) -> str:
    """A resource's version: a digest of its serialized bytes."""
    return hashlib.sha256(payload).hexdigest()[:16]


_version = version_of


def combined_version(resources: Iterable[Resource]) -> str:
    """One version for a set of resources, independent of their order."""
    digest = hashlib.sha256()
    for name, version in sorted((r.name, r.version) for r in resources):
        digest.update(f"{name}\0{version}\n".encode())
    return digest.hexdigest()[:16]


def _by_name(items: Iterable[Resource] | Mapping[str, Resource]) -> dict[str, Resource]:
    if isinstance(items, dict):
        return items
    assert not isinstance(items, Mapping), "a read-only mapping is a MappingProxyType"
    return {r.name: r for r in items}


# What differs between two resource maps, noted by whoever made the newer one from the
# older (heliostat.xds.translate.leds.endpoint_map knows which members it replaced), by the
# maps' identity, pinned: the streams' `changes` (heliostat.xds.cache.changes) find it here
# instead of comparing every one of a group's LEDS endpoints on each push. A few groups x
# the snapshots in flight; the oldest are dropped past _NOTED_LIMIT.
_NOTED: dict[tuple[int, int], tuple[object, object, frozenset[str], frozenset[str]]] = {}
_NOTED_LIMIT = 64


def note_changes(
    old: Mapping[str, Resource],
    new: Mapping[str, Resource],
    changed: frozenset[str],
    gone: frozenset[str],
) -> None:
    """Note that `new` holds `changed` (new names, or a version other than in `old`) and
    lacks `gone`, and is `old` otherwise; both maps must never change."""
    _NOTED[id(old), id(new)] = (old, new, changed, gone)
    while len(_NOTED) > _NOTED_LIMIT:
        del _NOTED[next(iter(_NOTED))]


def noted_changes(
    old: Mapping[str, Resource], new: Mapping[str, Resource]
) -> tuple[frozenset[str], frozenset[str]] | None:
    """(changed, gone) as noted for these two very maps, or None."""
    hit = _NOTED.get((id(old), id(new)))
    if hit is None or hit[0] is not old or hit[1] is not new:
        return None
    return hit[2], hit[3]


class InconsistentSnapshot(ValueError):
    """A snapshot that would leave Envoy pointing at resources it never receives."""


class Snapshot:
    """The resources one node group should have, by type and name.

    A snapshot may carry a second form for delta-xDS nodes (`for_delta`): the same cluster
    assignments with each locality's endpoints moved into an LEDS collection, and those
    endpoints as LbEndpoint resources of their own, so one endpoint's change is one small
    resource on the wire instead of the whole assignment. State-of-the-World cannot name a
    glob collection, so SotW nodes of the same group keep the plain form.
    """

    __slots__ = ("_delta", "_resources", "members", "version")

    def __init__(
        self,
        resources: Mapping[TypeUrl, Iterable[Resource]],
        delta: Mapping[TypeUrl, Iterable[Resource] | Mapping[str, Resource]] | None = None,
        members: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        """`delta` replaces types for delta nodes (the LEDS form of ENDPOINT, and
        LB_ENDPOINT); it must be a pure function of `resources` (see `version`). A type's
        resources may come as a dict by name, which the snapshot then keeps as it is (the
        caller hands it over: tens of thousands of LEDS endpoints are joined in C), or as a
        read-only mapping by name, kept as it is (shared with other snapshots).
        `members` names, by cluster, the LbEndpoint resources its assignment refers to."""
        by_type = {
            t: MappingProxyType({r.name: r for r in resources.get(t, ())}) for t in PUSH_ORDER
        }
        self._resources: Mapping[TypeUrl, Mapping[str, Resource]] = MappingProxyType(by_type)
        self.version = combined_version(r for t in PUSH_ORDER for r in by_type[t].values())
        self.members: Mapping[str, tuple[str, ...]] = MappingProxyType(dict(members or {}))
        self._delta: Snapshot | None = None
        if delta:
            # The delta form is derived from the plain one (the same endpoints' bytes, in
            # collections named after the same clusters and localities), so the plain
            # content plus the fact that it has a delta form addresses both: no second
            # pass over thousands of endpoint resources every tick. Both forms carry this
            # one version, which is what nodes ACK and convergence compares.
            self.version = hashlib.sha256(f"{self.version}\0leds".encode()).hexdigest()[:16]
            form = dict(by_type)
            for t, items in delta.items():
                form[t] = (
                    items
                    if isinstance(items, MappingProxyType)
                    else MappingProxyType(_by_name(items))
                )
            derived = Snapshot.__new__(Snapshot)
            derived._resources = MappingProxyType(form)
            derived.version = self.version
            derived.members = self.members
            derived._delta = None
            self._delta = derived

    def for_delta(self) -> Snapshot:
        """What a delta-xDS node gets: the LEDS form when there is one, else this."""
        return self._delta if self._delta is not None else self

    @classmethod
    def from_messages(
        cls,
        messages: Mapping[TypeUrl, Mapping[str, Message]],
        resources: Mapping[TypeUrl, Iterable[Resource]] | None = None,
        serialized: RoundMemo[int, Resource] | None = None,
        delta: Mapping[TypeUrl, Iterable[Resource] | Mapping[str, Resource]] | None = None,
        members: Mapping[str, tuple[str, ...]] | None = None,
    ) -> Snapshot:
        """A snapshot of messages, serialized here (or found in `serialized`, by message
        identity), plus `resources` already serialized; `delta` and `members` as in
        `Snapshot`."""
        made = {
            t: [Resource.of(t, name, message, serialized) for name, message in items.items()]
            for t, items in messages.items()
        }
        for t, ready in (resources or {}).items():
            made.setdefault(t, []).extend(ready)
        return cls(made, delta, members)

    def resources(self, type_url: TypeUrl) -> Mapping[str, Resource]:
        return self._resources[type_url]

    def select(self, type_url: TypeUrl, names: frozenset[str] | None) -> list[Resource]:
        """Resources of a type; `names` None means all of them (a wildcard subscription)."""
        items = self._resources[type_url]
        if names is None:
            return [items[n] for n in sorted(items)]
        return [items[n] for n in sorted(names) if n in items]

    def check_consistency(self) -> None:
        """Every EDS cluster has its endpoints, every listener its routes, every route its
        cluster. Raises InconsistentSnapshot listing every dangling reference."""
        clusters = self._resources[TypeUrl.CLUSTER]
        assignments = self._resources[TypeUrl.ENDPOINT]
        routes = self._resources[TypeUrl.ROUTE]
        dangling: list[str] = []
        for name, resource in clusters.items():
            cluster = resource.message
            assert isinstance(cluster, cluster_pb2.Cluster)
            if cluster.type == cluster_pb2.Cluster.EDS:
                service = cluster.eds_cluster_config.service_name or name
                if service not in assignments:
                    dangling.append(f"cluster {name!r} has no ClusterLoadAssignment {service!r}")
        for name, resource in self._resources[TypeUrl.LISTENER].items():
            listener = resource.message
            assert isinstance(listener, listener_pb2.Listener)
            for route_name in sorted(_references(listener, _route_config_names)):
                if route_name not in routes:
                    dangling.append(f"listener {name!r} needs RouteConfiguration {route_name!r}")
        for name, resource in routes.items():
            config = resource.message
            assert isinstance(config, route_pb2.RouteConfiguration)
            for cluster_name in sorted(_references(config, _route_clusters)):
                if cluster_name not in clusters:
                    dangling.append(f"routes {name!r} send to unknown cluster {cluster_name!r}")
        if dangling:
            raise InconsistentSnapshot("; ".join(dangling))


# What a listener or route configuration refers to, by the message's identity (pinned by
# the entry, so an id is never a recycled one): translation hands every round the very
# message it built while its inputs hold, so each tick's consistency check of every group
# found the same names again by unpacking the listener's HttpConnectionManager and walking
# every route. Messages in a snapshot are never changed after they are built; the table
# is emptied when it outgrows _REFERENCES_LIMIT: it can only be too small, never wrong.
_REFERENCES: dict[int, tuple[Message, frozenset[str]]] = {}
_REFERENCES_LIMIT = 1024


def route_clusters(resource: Resource) -> frozenset[str]:
    """The clusters a RouteConfiguration resource sends to (read once per message)."""
    return _references(resource.message, _route_clusters)


def _references(message: Message, find: Callable[[Message], Iterable[str]]) -> frozenset[str]:
    """`find(message)`, from the table when this very message was read before."""
    hit = _REFERENCES.get(id(message))
    if hit is not None and hit[0] is message:
        return hit[1]
    names = frozenset(find(message))
    if len(_REFERENCES) >= _REFERENCES_LIMIT:
        _REFERENCES.clear()
    _REFERENCES[id(message)] = (message, names)
    return names


def _route_config_names(listener: listener_pb2.Listener) -> list[str]:
    names = []
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != _HCM_TYPE:
                continue
            manager = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(manager)
            if manager.HasField("rds"):
                names.append(manager.rds.route_config_name)
    return names


def _route_clusters(config: route_pb2.RouteConfiguration) -> set[str]:
    clusters = set()
    for host in config.virtual_hosts:
        for route in host.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                clusters.add(action.cluster)
            clusters.update(w.name for w in action.weighted_clusters.clusters)
    return clusters
