"""Each response's bytes made once, however many streams send it.

The streams of a node group answer a change with the very same response object
(heliostat.xds.cache.responses); gRPC would serialize it again for each of them, a thousand
times per push. The ADS handlers are registered with a serializer that passes bytes
through, and the server hands them the bytes of each response object, made here on first
use and kept while the table's bounds allow (keyed by the object, which the entry pins, so
an id is never mistaken for another object's).
"""

from __future__ import annotations

from collections import OrderedDict

from google.protobuf.message import Message

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 512


class WireBytes:
    """A bounded LRU table: response object -> its serialized bytes."""

    __slots__ = ("_entries", "_held", "max_bytes", "max_entries")

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[int, tuple[Message, bytes]] = OrderedDict()
        self._held = 0

    def of(self, message: Message) -> bytes:
        key = id(message)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is message:
            self._entries.move_to_end(key)
            return hit[1]
        data: bytes = message.SerializeToString()
        if len(data) > self.max_bytes:
            return data
        if hit is not None:  # another object had this id: it is gone, forget its entry
            self._held -= len(hit[1])
        self._entries[key] = (message, data)
        self._entries.move_to_end(key)
        self._held += len(data)
        while self._held > self.max_bytes or len(self._entries) > self.max_entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._held -= len(dropped)
        return data

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        return self._held


def passthrough(data: bytes) -> bytes:
    """The response serializer of the ADS handlers: the server yields bytes already."""
    return data
