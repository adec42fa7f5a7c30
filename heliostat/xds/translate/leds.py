"""The LEDS form of a view's assignment: each endpoint its own resource, for delta-xDS nodes.

In EDS a ClusterLoadAssignment is all-or-nothing: one endpoint's new weight resends every
endpoint of the cluster (and a drain touches the model's cluster, its version and its tenant
clusters), ~10 KB per push for 300 endpoints. With LEDS (Locality Endpoint Discovery) a
locality names a glob collection (`leds_cluster_locality_config`) and each of its endpoints
is an `envoy.config.endpoint.v3.LbEndpoint` resource in it, so delta xDS sends the one
endpoint that changed (~100 bytes). Envoy 1.40 takes it over delta ADS
(bench/measure/leds_probe.py). SotW has no glob collections, so SotW nodes keep plain EDS.

Names: `xdstp://heliostat/envoy.config.endpoint.v3.LbEndpoint/<cluster>/<region>-<n>/`
then `<host>_<port>`: the cluster and region of the least of the localities that hold the
same endpoints and share the collection (`leds_forms`). Envoy decodes each name and
re-encodes its collection to match it against its subscriptions, so every segment is kept
to characters the URL form leaves alone; any other character becomes `_` and the segment
gets a digest of the original, which keeps distinct names distinct. A locality without
endpoints is written inline (empty): Envoy waits for a collection's first update before the
cluster warms, and an empty collection has none.

The endpoint bytes are exactly those of its plain EDS entry (`endpoints.lb_endpoint_bytes`),
so the delta form is a pure function of the plain one (the snapshot's version relies on it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress, groupby
from operator import is_not
from types import MappingProxyType

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import any_pb2

from heliostat.balance import ClusterView, EndpointView
from heliostat.wire import LEDS_AUTHORITY
from heliostat.xds.resources.snapshot import Resource, new_resource, note_changes, version_of
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate.endpoints import (
    add_drop_policy,
    lb_endpoint_bytes,
    locality_tail,
    locality_weight_scale,
)
from heliostat.xds.translate.memo import Payload, TranslationMemo

_new_member = new_resource

PREFIX = f"xdstp://{LEDS_AUTHORITY}/{endpoint_components_pb2.LbEndpoint.DESCRIPTOR.full_name}/"
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Collection:
    """One collection: the members of the localities (of any cluster) holding its endpoints,
    in their order.

    `prefix` is its name (ending in `/`); `views` the endpoint tuple they were made from
    (pinned: the next round compares its tuple with it by identity); `pieces` are what each
    member adds to the collection's `digest`, which every assignment naming the collection
    adds to its covering version (`covering`): hashed once, however many clusters and node
    groups share it.
    A collection patched from another (`_patched`) keeps that one's id in `origin` and the
    positions whose member it replaced in `moved`, so whoever holds the other can follow
    the change without comparing every member (0 and every position when made anew)."""

    prefix: str
    views: tuple[EndpointView, ...]
    resources: tuple[Resource, ...]
    names: tuple[str, ...]
    heads: tuple[bytes, ...]  # each member's piece up to its version
    pieces: tuple[bytes, ...]
    digest: bytes
    origin: int
    moved: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LedsAssignment:
    """One cluster in LEDS form: its assignment and the endpoint resources it refers to,
    collection by collection (`names`: every member's name, in order)."""

    assignment: Resource
    collections: tuple[Collection, ...]
    names: tuple[str, ...]

    @property
    def endpoints(self) -> tuple[Resource, ...]:
        return tuple(chain.from_iterable(c.resources for c in self.collections))


def segment(text: str) -> str:
    """`text` as one path segment of an xdstp name that Envoy's URL form leaves as it is."""
    if _SAFE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', text)}-{digest}"


def collection(cluster: str, region: str, occurrence: int = 1) -> str:
    """The collection first held by a cluster's `occurrence`-th locality of `region` (the
    region alone names a locality: its priority differs from view to view), ending in `/`
    (a member's name follows). The occurrence always ends the segment, after a `-`: no
    region's name can pass for another's with an occurrence."""
    return f"{PREFIX}{segment(cluster)}/{segment(region or '_')}-{occurrence}/"


def leds_assignment(view: ClusterView, memo: TranslationMemo | None = None) -> LedsAssignment:
    """The view's assignment in LEDS form on its own: its collections shared with no other
    cluster's (see `leds_forms`)."""
    return leds_forms([view], memo)[0]


def leds_forms(
    views: Sequence[ClusterView], memo: TranslationMemo | None = None
) -> list[LedsAssignment]:
    """The views' assignments with each non-empty locality's endpoints in a collection, the
    localities holding the same endpoints sharing one.

    The same endpoints are found in many localities of a node group: a model's cluster, its
    batch cluster, its tenants' clusters hold each region's endpoints, and its version
    clusters each a subset (7 collections an endpoint in the scale benchmark's fleet). A
    member's bytes are its endpoint's, whatever the cluster, so the localities with the same
    members in the same order (compared by content: `_grouped`) name one collection. It is
    named after its least (cluster, region, occurrence), which keeps a name while the
    localities sharing it hold the same endpoints, as their weights move and as endpoints
    come and go: only the collection's changed members are sent, once for every cluster
    (Envoy 1.40 fills every cluster naming a collection from one subscription,
    bench/measure/leds_probe.py --shared). No priority is in the name, so every node group
    whose view holds the same endpoints shares the very collection and its members.

    A round's cost follows what changed: a collection whose endpoint tuple is the one it
    was made from last is that same object, and a new tuple is compared with it position
    by position, making resources only for the endpoints whose view changed (`_collection`);
    a cluster whose collections and assignment all held is the same LedsAssignment."""
    if memo is None:
        memo = TranslationMemo()
    return [_form(view, row, memo) for view, row in zip(views, _grouped(views, memo), strict=True)]


@dataclass(slots=True)
class _Group:
    """Localities with the same endpoints: their tuple (the first seen), where they are
    (cluster, region, occurrence) and, once named, their collection."""

    views: tuple[EndpointView, ...]
    slots: list[tuple[str, str, int]]
    clusters: set[str]
    made: Collection | None = None


def _grouped(views: Sequence[ClusterView], memo: TranslationMemo) -> list[list[_Group | None]]:
    """Every view's localities' groups (None for an empty locality), each group with its
    collection. A group takes no second locality of one cluster (Envoy keys a cluster's
    LEDS localities by their config, one subscription each)."""
    buckets: dict[tuple[int, str], list[_Group]] = {}
    rows: list[list[_Group | None]] = []
    for view in views:
        row: list[_Group | None] = []
        occurrences: dict[str, int] = {}
        for locality in view.localities:
            region = locality.region
            occurrence = occurrences[region] = occurrences.get(region, 0) + 1
            endpoints = locality.endpoints
            if not endpoints:
                row.append(None)
                continue
            bucket = buckets.setdefault((len(endpoints), endpoints[0].address), [])
            for group in bucket:
                if view.name not in group.clusters and _same(group.views, endpoints, memo):
                    break
            else:
                group = _Group(endpoints, [], set())
                bucket.append(group)
            group.slots.append((view.name, region, occurrence))
            group.clusters.add(view.name)
            row.append(group)
        rows.append(row)
    for bucket in buckets.values():
        for group in bucket:
            group.made = _collection(collection(*min(group.slots)), group.views, memo)
    return rows


def _same(
    these: tuple[EndpointView, ...], those: tuple[EndpointView, ...], memo: TranslationMemo
) -> bool:
    """Whether two tuples of one length give the same members: the same views (compared in
    C), else the same bytes where the views differ (views are compared by identity, and two
    equal views may be two objects)."""
    if these is those:
        return True
    differ = compress(range(len(these)), map(is_not, these, those))
    return all(
        lb_endpoint_bytes(these[i], memo) == lb_endpoint_bytes(those[i], memo) for i in differ
    )


def _form(view: ClusterView, row: list[_Group | None], memo: TranslationMemo) -> LedsAssignment:
    made: list[Collection] = []
    shapes = []
    for locality, group in zip(view.localities, row, strict=True):
        prefix = None
        if group is not None:
            assert group.made is not None
            made.append(group.made)
            prefix = group.made.prefix
        reason = tuple(sorted(locality.reason.items())) if locality.reason else ()
        shapes.append((locality.region, locality.priority, locality.weight, prefix, reason))
    key = (view.name, view.drop_overload_percent, tuple(shapes))
    assignment = memo.leds_assignments.get(key)
    if assignment is None:
        prefixes = [group.made.prefix if group and group.made else None for group in row]
        assignment = _assignment(view, locality_weight_scale(view), prefixes)
        memo.leds_assignments.put(key, assignment)
    found = tuple(made)
    form_key = (id(assignment), *map(id, found))
    hit = memo.leds_forms.get(form_key)
    if hit is not None:
        return hit[1]
    form = LedsAssignment(
        _covering(assignment, found),
        found,
        tuple(chain.from_iterable(c.names for c in found)),
    )
    memo.leds_forms.put(form_key, (assignment, form))  # pins every id it is keyed by
    return form


Members = dict[str, Collection]  # a node group's collections by name
EndpointMap = tuple[Members, MappingProxyType[str, Resource]]


def endpoint_map(
    forms: list[LedsAssignment], last: EndpointMap | None, memo: TranslationMemo | None = None
) -> EndpointMap:
    """`_endpoint_map`, the same one for every node group of a round with the same
    collections and the same last map (node groups whose views hold the same endpoints
    share their collections, `leds_forms`): made once, shared by their snapshots."""
    if memo is None:
        return _endpoint_map(forms, last)
    # Each view lists its localities by its own priorities: the collections as a set.
    key = (
        0 if last is None else id(last[1]),
        frozenset([id(c) for f in forms for c in f.collections]),
    )
    hit = memo.shared_maps.get(key)
    if hit is not None and hit[0] is last:
        return hit[1]
    made = _endpoint_map(forms, last)
    memo.shared_maps.put(key, (last, made))  # pins the last map; `made` pins the collections
    return made


def _endpoint_map(forms: list[LedsAssignment], last: EndpointMap | None) -> EndpointMap:
    """A node group's LbEndpoint resources by name (read-only, for its snapshot), from its
    clusters' forms, and its collections by name.

    `last` (what the group's last round gave) is copied and brought up to date where a
    collection is not the one it had, which for a collection patched from that very one is
    only its `moved` members: copying a dict is a block copy in C, where inserting a group's
    tens of thousands of members one by one was a third of a LEDS publish. The last map is
    never changed (a snapshot holds it), and is handed back as it is when no collection
    moved. What differs from it is noted with the new map (`snapshot.note_changes`), so the
    streams moving from one to the other need not compare every member."""
    now = {c.prefix: c for form in forms for c in form.collections}
    if last is None:
        endpoints: dict[str, Resource] = {}
        for found in now.values():
            endpoints.update(zip(found.names, found.resources, strict=True))
        return now, MappingProxyType(endpoints)
    before, old = last
    if now.keys() == before.keys() and all(before[p] is c for p, c in now.items()):
        return last
    endpoints = old.copy()
    changed, removed = _brought_up_to_date(endpoints, now, before)
    made = MappingProxyType(endpoints)
    note_changes(old, made, frozenset(changed), frozenset(removed).difference(endpoints))
    return now, made


def _brought_up_to_date(
    endpoints: dict[str, Resource], now: Members, before: Members
) -> tuple[list[str], list[str]]:
    """Make `endpoints` (a copy of `before`'s map) `now`'s; returns the names changed (new,
    or with another version) and those removed (some may be back: names follow addresses)."""
    changed: list[str] = []
    removed: list[str] = []
    remade: list[Collection] = []
    for prefix, found in now.items():
        was = before.get(prefix)
        if was is found:
            continue
        names, resources = found.names, found.resources
        if was is not None and found.origin == id(was):  # `was` is alive: not a recycled id
            for index in found.moved:
                name, resource = names[index], resources[index]
                if endpoints[name].version != resource.version:
                    changed.append(name)
                endpoints[name] = resource
            continue
        if was is not None and was.names is not names:
            removed += was.names
        changed += _differing(endpoints, names, resources)
        remade.append(found)
    for prefix, was in before.items():
        if prefix not in now:
            removed += was.names
    for name in removed:
        del endpoints[name]
    for found in remade:  # after the removals: a name can be removed and in use again
        endpoints.update(zip(found.names, found.resources, strict=True))
    return changed, removed


def _differing(
    old: Mapping[str, Resource], names: tuple[str, ...], resources: tuple[Resource, ...]
) -> list[str]:
    """The names whose resource is new to `old` or has another version there."""
    return [
        name
        for name, resource in zip(names, resources, strict=True)
        if (before := old.get(name)) is None or before.version != resource.version
    ]


def covering(assignment: Resource, members: list[Resource]) -> Resource:
    """The assignment with a version that also covers its collections' members.

    Envoy 1.40 lists no collection member in a reconnecting stream's
    `initial_resource_versions`, only the assignment. With this version the assignment
    stands for exactly its members, so a server seeing it listed at the version it would
    send knows which endpoints the node holds (heliostat.xds.protocol.delta sends this
    version only once the node has ACKed those members). A pure function of content, so
    every heliostat replica gives the same one: the digest of the assignment's version and
    of each of its collections' digests, in order, a collection's digest being that of its
    members' names and versions, in order (`members` are the collections' members in
    order, one collection after the other).
    """
    digests = [
        _digest(b"".join(map(_piece, group)))
        for _, group in groupby(members, key=lambda m: m.name[: m.name.rfind("/") + 1])
    ]
    return _covered(assignment, b"".join(digests))


def _covering(assignment: Resource, found: tuple[Collection, ...]) -> Resource:
    """`covering` from each collection's digest, made once with the collection."""
    return _covered(assignment, b"".join([c.digest for c in found]))


def _digest(pieces: bytes) -> bytes:
    return hashlib.sha256(pieces).digest()


def _covered(assignment: Resource, digests: bytes) -> Resource:
    digest = hashlib.sha256(assignment.version.encode())
    digest.update(digests)
    return Resource(
        assignment.name,
        digest.hexdigest()[:16],
        assignment.packed,
        assignment.message,
    )


def _piece(member: Resource) -> bytes:
    """What one member adds to its assignment's covering version (`Collection.pieces`)."""
    return f"\n{member.name}\0{member.version}".encode()


def _assignment(view: ClusterView, scale: int, prefixes: list[str | None]) -> Resource:
    """The assignment naming each non-empty locality's collection (`prefixes`, in order)."""
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=view.name)
    for locality, prefix in zip(view.localities, prefixes, strict=True):
        entry = message.endpoints.add(locality=base_pb2.Locality(region=locality.region))
        entry.MergeFrom(locality_tail(locality, scale))
        if prefix is not None:
            config = entry.leds_cluster_locality_config
            config.leds_config.ads.SetInParent()
            config.leds_config.resource_api_version = config_source_pb2.V3
            config.leds_collection_name = prefix + "*"
    add_drop_policy(message, view)
    return Resource.of(TypeUrl.ENDPOINT, view.name, message)


def _collection(prefix: str, views: tuple[EndpointView, ...], memo: TranslationMemo) -> Collection:
    """The collection `prefix` of these views: the one made from this very tuple (this
    round or the last), or the last one of its name patched where the tuple's views
    changed, or made anew (reusing, by view identity, whatever members the last one had).

    Patching keeps every member's name, so it is taken only when each changed position
    still holds the same address (a weight, health or reason that moved): names follow
    addresses and their order (an address listed twice is two hosts, `-2`), and with every
    address where it was, every name is what it was."""
    last = memo.collections.get(prefix)
    if last is not None:
        if last.views is views:
            return last
        before = last.views
        if len(before) == len(views):
            changed = list(compress(range(len(views)), map(is_not, before, views)))
            if not changed:  # another tuple of the same views: the same collection
                return last
            if all(views[i].address == before[i].address for i in changed):
                made = _patched(prefix, last, views, changed, memo)
                memo.collections.put(prefix, made)
                return made
    made = _made(prefix, views, last, memo)
    memo.collections.put(prefix, made)
    return made


def _patched(
    prefix: str,
    last: Collection,
    views: tuple[EndpointView, ...],
    changed: list[int],
    memo: TranslationMemo,
) -> Collection:
    """`last` with a new member at each `changed` position (same name, the view's bytes).
    The loop is every moved endpoint times the collections it is in: kept to lookups."""
    resources = list(last.resources)
    pieces = list(last.pieces)
    heads = last.heads
    payloads = memo.leds_payloads
    for index in changed:
        view = views[index]
        hit = payloads.get(id(view)) or _payload(view, memo)
        resources[index] = _new_member(resources[index].name, hit[1], hit[2], _LB_ENDPOINT_TYPE)
        pieces[index] = heads[index] + hit[3]
    return Collection(
        prefix,
        views,
        tuple(resources),
        last.names,
        heads,
        tuple(pieces),
        _digest(b"".join(pieces)),
        id(last),
        tuple(changed),
    )


def _made(
    prefix: str, views: tuple[EndpointView, ...], last: Collection | None, memo: TranslationMemo
) -> Collection:
    # The last collection pins the views its ids belong to while it is in use.
    known = {} if last is None else dict(zip(map(id, last.views), last.resources, strict=True))
    seen: dict[str, int] = {}
    resources = []
    for view in views:
        name = prefix + segment(f"{view.host}_{view.port}")
        # One address listed twice in a locality stays two hosts, as in EDS.
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count:
            name = f"{name}-{count + 1}"
        member = known.get(id(view))
        if member is None:
            hit = memo.leds_payloads.get(id(view)) or _payload(view, memo)
            member = _new_member(name, hit[1], hit[2], _LB_ENDPOINT_TYPE)
        elif member.name != name:
            member = _new_member(name, member.version, member.packed, _LB_ENDPOINT_TYPE)
        resources.append(member)
    names = tuple(r.name for r in resources)
    heads = tuple(f"\n{name}\0".encode() for name in names)
    pieces = tuple(head + r.version.encode() for head, r in zip(heads, resources, strict=True))
    return Collection(
        prefix,
        views,
        tuple(resources),
        names,
        heads,
        pieces,
        _digest(b"".join(pieces)),
        0,
        tuple(range(len(resources))),
    )


def _payload(view: EndpointView, memo: TranslationMemo) -> Payload:
    """The view's LbEndpoint bytes, packed, with their version (also as bytes). An endpoint
    is a member of every collection holding it (its model's region, its version's subset),
    all with the same bytes: those are made and hashed once per view."""
    payload = lb_endpoint_bytes(view, memo)
    version = version_of(payload)
    made = (view, version, any_pb2.Any(type_url=_LB_ENDPOINT, value=payload), version.encode())
    memo.leds_payloads.put(id(view), made)  # pins the view: the id is never a recycled one
    return made


_LB_ENDPOINT = TypeUrl.LB_ENDPOINT.value
_LB_ENDPOINT_TYPE = endpoint_components_pb2.LbEndpoint
