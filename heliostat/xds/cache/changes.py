"""What changed between two snapshots' resources of one type, worked out once for all streams.

A delta stream in step with the last snapshot needs to look only at the names whose content
changed since, not at every resource: with LEDS a node group has thousands of endpoint
resources, and a thousand streams each walking all of them on every push was most of the
push's time. The streams of a group hold the very same resource maps (snapshots are
immutable and shared), so the difference is computed by the first stream that asks and
found by the others, keyed by the maps' identity. When whoever made the newer map noted
what it changed (`snapshot.note_changes`: a LEDS round knows which members it replaced),
that is taken as it is, and not even the first stream compares every resource.
"""

from __future__ import annotations

from collections.abc import Mapping

from heliostat.xds.cache.identity import IdentityMemo
from heliostat.xds.resources.snapshot import Resource, Snapshot, noted_changes
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl

Resources = Mapping[str, Resource]

# a few node groups x types x the snapshots in flight
_DIFFS: IdentityMemo[tuple[frozenset[str], frozenset[str]]] = IdentityMemo(64)
_NONE: frozenset[str] = frozenset()


def changes(old: Resources, new: Resources) -> tuple[frozenset[str], frozenset[str]]:
    """(names in `new` whose version differs from `old` or are new, names gone from it)."""
    if old is new:
        return _NONE, _NONE
    return _DIFFS.get((old, new), lambda: noted_changes(old, new) or _diff(old, new))


def _diff(old: Resources, new: Resources) -> tuple[frozenset[str], frozenset[str]]:
    changed = frozenset(
        name
        for name, resource in new.items()
        if (before := old.get(name)) is None or before.version != resource.version
    )
    gone = frozenset(name for name in old if name not in new)
    return changed, gone


# a few node groups x the snapshots in flight
_MOVED_TYPES: IdentityMemo[frozenset[TypeUrl]] = IdentityMemo(64)


def moved_types(old: Snapshot, new: Snapshot) -> frozenset[TypeUrl]:
    """The types with a resource added, changed or gone between two snapshots (one look per
    pair of snapshots, shared by every stream that moves from one to the other)."""
    if old is new:
        return frozenset()
    return _MOVED_TYPES.get(
        (old, new),
        lambda: frozenset(
            t for t in PUSH_ORDER if any(changes(old.resources(t), new.resources(t)))
        ),
    )
