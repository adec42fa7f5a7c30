"""Each response's bytes made once, however many streams send it.

The streams of a node group answer a change with the very same response object
(heliostat.xds.cache.responses); gRPC would serialize it again for each of them, a thousand
times per push. The ADS handlers are registered with a serializer that passes bytes
through, and the server hands them the bytes of each response object, made here on first
use and kept while the table's bounds allow (keyed by the object, which the entry pins, so
an id is never mistaken for another object's).
"""

from __future__ import annotations

from google.protobuf.message import Message

from heliostat.xds.cache.lru import ByteBudgetLRU

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 512


class WireBytes:
    """A bounded LRU table: response object -> its serialized bytes."""

    __slots__ = ("_table",)

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        # Keyed by id: a message is not hashable by content (nor should two equal ones be
        # told apart by it); the entry pins the object, so its id stays its own while kept.
        self._table: ByteBudgetLRU[int, tuple[Message, bytes]] = ByteBudgetLRU(
            max_bytes, max_entries
        )

    def of(self, message: Message) -> bytes:
        key = id(message)
        hit = self._table.get(key)
        if hit is not None and hit[0] is message:
            return hit[1]
        # A miss, or another object had this id: it is gone, its entry is replaced.
        data: bytes = message.SerializeToString()
        self._table.put(key, (message, data), len(data))
        return data

    def __len__(self) -> int:
        return len(self._table)

    @property
    def held_bytes(self) -> int:
        return self._table.held_bytes


def passthrough(data: bytes) -> bytes:
    """The response serializer of the ADS handlers: the server yields bytes already."""
    return data
