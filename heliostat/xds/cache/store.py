"""The snapshot cache: the latest snapshot of every node group, and who is waiting on it.

Like go-control-plane's cache it is the only thing the server and the producer of snapshots
share. It knows nothing of streams, nonces or policy; setting a snapshot whose version did not
change is a no-op, which is what keeps pushes from happening when nothing changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from heliostat.xds.resources.nodes import NodeGroup
from heliostat.xds.resources.snapshot import Snapshot

Watcher = Callable[[Snapshot], None]


class SnapshotCache:
    def __init__(self) -> None:
        self._snapshots: dict[NodeGroup, Snapshot] = {}
        self._watchers: defaultdict[NodeGroup, set[Watcher]] = defaultdict(set)

    def get(self, group: NodeGroup) -> Snapshot | None:
        return self._snapshots.get(group)

    def set(self, group: NodeGroup, snapshot: Snapshot) -> bool:
        """Store a snapshot; tells the group's watchers only if its version changed."""
        current = self._snapshots.get(group)
        if current is not None and current.version == snapshot.version:
            return False
        self._snapshots[group] = snapshot
        for watcher in list(self._watchers.get(group, ())):
            watcher(snapshot)
        return True

    def watch(self, group: NodeGroup, watcher: Watcher) -> Callable[[], None]:
        self._watchers[group].add(watcher)

        def cancel() -> None:
            watchers = self._watchers.get(group)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[group]

        return cancel

    def groups(self) -> list[NodeGroup]:
        return sorted(self._snapshots, key=lambda g: g.key)

    def watched(self, group: NodeGroup) -> int:
        return len(self._watchers.get(group, ()))
