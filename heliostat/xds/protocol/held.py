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

Envoy applies the responses of one ADS stream in order, so a node listing an assignment at
the version a server would send holds exactly the members that version covers, and that
server sends none of them (`seed`). Anything else, including an old or pending version, and
the node gets the collection whole, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from heliostat.xds.cache.changes import changes
from heliostat.xds.resources.snapshot import Resource

PENDING = "~"  # a version suffix no content hash has

_LIMIT = 256
_COLLECTIONS: OrderedDict[int, tuple[tuple[str, ...], frozenset[str]]] = OrderedDict()


def pending_version(version: str) -> str:
    return version + PENDING


def is_pending(version: str | None) -> bool:
    return version is not None and version.endswith(PENDING)


def collections(members: tuple[str, ...]) -> frozenset[str]:
    """The collections (`.../` prefixes) `members` are in, worked out once per tuple (every
    stream of a group shares the snapshot's tuples)."""
    key = id(members)
    hit = _COLLECTIONS.get(key)
    if hit is not None and hit[0] is members:  # the entry pins the tuple
        return hit[1]
    found = frozenset(name[: name.rfind("/") + 1] for name in members)
    _COLLECTIONS[key] = (members, found)
    if len(_COLLECTIONS) > _LIMIT:
        _COLLECTIONS.popitem(last=False)
    return found


def members_unchanged(
    members: tuple[str, ...], since: Mapping[str, Resource], now: Mapping[str, Resource]
) -> bool:
    """True when no member of `members`' collections differs between the two maps."""
    changed, gone = changes(since, now)
    if not changed and not gone:
        return True
    prefixes = collections(members)
    return not any(n[: n.rfind("/") + 1] in prefixes for n in (*changed, *gone))
