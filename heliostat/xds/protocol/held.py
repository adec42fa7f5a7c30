"""What a delta node's assignment version says about the LEDS endpoints it holds.

Envoy 1.40 lists no LEDS collection member in a reconnecting stream's
`initial_resource_versions` (only the glob in `resource_names_subscribe`; seen with
`heliostat serve --leds` and a restart, tests/e2e/test_restart_resync.py), so on its own a
server must send every endpoint again after a restart or an HA failover. The assignments are
listed, though, and in the LEDS form an assignment's version covers its members
(heliostat.xds.translate.leds.covering). A stream keeps that promise true on the node:

- an assignment goes out under its own version only while the node has ACKed every member
  at the versions it covers, with nothing of LEDS in flight;
- otherwise it goes out under a *pending* version (`pending_version`), which no snapshot
  ever has: sent before the members change, it tells a server seeing it later that the
  node's endpoints may be anything, so all of them are sent.

The pending version names the assignment's content only (a digest of its bytes), not the
members it covers: a node already holding the assignment pending needs no new one when
only member weights move again, so while it stays pending a weight change is one LEDS
response. It becomes its own version again only when the stream settles
(heliostat.xds.protocol.delta: `settle`, which the server calls once the node's endpoints
have been still for 30 s and no stream has a change in flight, heliostat.xds.grpc.settle):
that response serves only a later reconnect, so it waits until the endpoints stop moving
(settled, the next change would have to send the assignment pending again first) and the
change's fan-out is done (instead of competing with it).

Envoy applies the responses of one ADS stream in order, so a node listing an assignment at
the version a server would send holds exactly the members that version covers, and that
server sends none of them (`seed`). Anything else, including an old or pending version, and
the node gets the collection whole, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace

from heliostat.xds.cache.changes import changes
from heliostat.xds.cache.identity import IdentityMemo
from heliostat.xds.resources.snapshot import Resource

PENDING = "~"  # a version suffix no content hash has

Resources = Mapping[str, Resource]

_LIMIT = 256
_COLLECTIONS: IdentityMemo[frozenset[str]] = IdentityMemo(_LIMIT)
_PENDING: IdentityMemo[Resource] = IdentityMemo(_LIMIT)
_MOVED: IdentityMemo[frozenset[str]] = IdentityMemo(_LIMIT)


def pending_version(version: str) -> str:
    return version + PENDING


def pending_form(assignment: Resource) -> Resource:
    """`assignment` under the pending version of its content, made once for every stream of
    the group: the same content is the same pending version whatever its members are."""
    return _PENDING.get(
        (assignment,),
        lambda: replace(assignment, version=pending_version(content_version(assignment))),
    )


def content_version(assignment: Resource) -> str:
    """A digest of the assignment's bytes alone (its version also covers its members)."""
    return hashlib.sha256(assignment.packed.value).hexdigest()[:16]


def is_pending(version: str | None) -> bool:
    return version is not None and version.endswith(PENDING)


def collections(members: tuple[str, ...]) -> frozenset[str]:
    """The collections (`.../` prefixes) `members` are in, worked out once per tuple (every
    stream of a group shares the snapshot's tuples)."""
    return _COLLECTIONS.get((members,), lambda: _prefixes(members))


# Collection sets by content, so that equal sets from two snapshots are the same object.
_SETS: dict[frozenset[str], frozenset[str]] = {}
_NAMED: IdentityMemo[Mapping[str, frozenset[str]]] = IdentityMemo(_LIMIT)


def named_collections(members: Mapping[str, tuple[str, ...]]) -> Mapping[str, frozenset[str]]:
    """The collections each cluster's assignment names (a snapshot's `members`), worked out
    once per snapshot; a set equal to an earlier snapshot's is that very object, so a stream
    finds an assignment naming what it named before by identity."""

    def made() -> Mapping[str, frozenset[str]]:
        if len(_SETS) > 4 * _LIMIT:
            _SETS.clear()
        return {
            cluster: _SETS.setdefault(found := _prefixes(names), found)
            for cluster, names in members.items()
        }

    return _NAMED.get((members,), made)


def _prefixes(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name[: name.rfind("/") + 1] for name in names)


def moved(since: Resources, now: Resources) -> frozenset[str]:
    """The collections with a member added, changed or gone between the two maps, worked
    out once for every stream (as `changes` is)."""
    if since is now:
        return frozenset()
    return _MOVED.get((since, now), lambda: _prefixes(frozenset.union(*changes(since, now))))
