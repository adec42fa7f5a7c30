"""Who is connected and how in sync each node is, queryable while streams run.

The status page, `/debug/state`, CSDS and operator commands read from here; the server
writes. Entries point at the live protocol objects, so a read always sees the current state.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from heliostat.xds.protocol.events import TypeStatus
from heliostat.xds.resources.nodes import NodeGroup


@dataclass(slots=True)
class StreamEntry:
    node_id: str
    group: NodeGroup
    mode: str  # "sotw" | "delta"
    peer: str
    connected_at: float
    status: Callable[[], dict[str, TypeStatus]]
    stream_id: int = 0
    notes: list[str] = field(default_factory=list)
    # Responses sent on the stream, every type (the sum of `status`'s, without building it:
    # a push reads it on every stream of its group, before any of them sends).
    responses: Callable[[], int] | None = None

    def sent(self) -> int:
        if self.responses is not None:
            return self.responses()
        return sum(status.responses for status in self.status().values())

    def as_json(self) -> dict[str, object]:
        types = self.status()
        return {
            "node_id": self.node_id,
            "group": self.group.key,
            "region": self.group.region,
            "role": self.group.role.value,
            "mode": self.mode,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "in_sync": all(t.as_json()["in_sync"] for t in types.values()) if types else False,
            "types": {name: status.as_json() for name, status in types.items()},
            "notes": list(self.notes),
        }


class StreamRegistry:
    def __init__(self) -> None:
        self._entries: dict[int, StreamEntry] = {}
        # The same entries by group: a push asks for its group's before any stream sends
        # (comparing every entry's group, 3,000 comparisons a push at 1,000 streams).
        self._groups: dict[NodeGroup, dict[int, StreamEntry]] = {}
        self._ids = itertools.count(1)

    def add(self, entry: StreamEntry) -> Callable[[], None]:
        entry.stream_id = next(self._ids)
        self._entries[entry.stream_id] = entry
        self._groups.setdefault(entry.group, {})[entry.stream_id] = entry

        def remove() -> None:
            self._entries.pop(entry.stream_id, None)
            group = self._groups.get(entry.group)
            if group is not None:
                group.pop(entry.stream_id, None)
                if not group:
                    del self._groups[entry.group]

        return remove

    def entries(self) -> list[StreamEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.node_id, e.stream_id))

    def get(self, stream_id: int) -> StreamEntry | None:
        return self._entries.get(stream_id)

    def of_group(self, group: NodeGroup) -> list[StreamEntry]:
        """The group's streams, oldest first (no sorting: called on every push)."""
        return list(self._groups.get(group, {}).values())

    def __len__(self) -> int:
        return len(self._entries)
