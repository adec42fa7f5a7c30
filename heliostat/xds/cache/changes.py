"""What changed between two snapshots' resources of one type, worked out once for all streams.

A delta stream in step with the last snapshot needs to look only at the names whose content
changed since, not at every resource: with LEDS a node group has thousands of endpoint
resources, and a thousand streams each walking all of them on every push was most of the
push's time. The streams of a group hold the very same resource maps (snapshots are
immutable and shared), so the difference is computed by the first stream that asks and
found by the others, keyed by the maps' identity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from heliostat.xds.resources.snapshot import Resource

Resources = Mapping[str, Resource]

_LIMIT = 64  # a few node groups x types x the snapshots in flight
_DIFFS: OrderedDict[tuple[int, int], tuple[Resources, Resources, frozenset[str], frozenset[str]]]
_DIFFS = OrderedDict()
_NONE: frozenset[str] = frozenset()


def changes(old: Resources, new: Resources) -> tuple[frozenset[str], frozenset[str]]:
    """(names in `new` whose version differs from `old` or are new, names gone from it)."""
    if old is new:
        return _NONE, _NONE
    key = (id(old), id(new))
    hit = _DIFFS.get(key)
    if hit is not None and hit[0] is old and hit[1] is new:  # the entry pins both maps
        _DIFFS.move_to_end(key)
        return hit[2], hit[3]
    changed = frozenset(
        name
        for name, resource in new.items()
        if (before := old.get(name)) is None or before.version != resource.version
    )
    gone = frozenset(name for name in old if name not in new)
    _DIFFS[key] = (old, new, changed, gone)
    if len(_DIFFS) > _LIMIT:
        _DIFFS.popitem(last=False)
    return changed, gone
