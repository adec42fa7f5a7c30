"""A least-recently-used table bounded by the bytes its values hold, and by their count.

The xDS tables that keep something per push burst (responses shared between streams,
heliostat.xds.cache.responses; their serialized bytes, heliostat.xds.grpc.wire) must not grow
with history: what they hold is measured in bytes, which an entry count alone does not bound
(one assignment may weigh a hundred bytes or megabytes). This is their one table: the caller
says what each value weighs, the table keeps the most recently used values that fit both
budgets and drops the least recently used first. It lives in the cache layer so that the
layers above (protocol, grpc) can share it; it does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteBudgetLRU(Generic[K, V]):
    """key -> value, at most `max_bytes` of values (as weighed by the caller) and
    `max_entries` of them; the least recently used (read or written) are dropped first.

    Values must not be None: `get` answers None for a key it does not hold.
    """

    __slots__ = ("_entries", "_held", "max_bytes", "max_entries")

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._held = 0

    def get(self, key: K) -> V | None:
        """The value kept under `key`, now the most recently used, or None."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        self._entries.move_to_end(key)
        return hit[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep `value` (weighing `size` bytes) under `key` as the most recently used, in
        place of any value held there, dropping the least recently used until both budgets
        hold. A value larger than the whole byte budget is not kept (keeping it would drop
        everything else and then itself); the value it replaces is dropped all the same, so
        `get` never answers a value the caller has replaced. Says whether it was kept."""
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            self._held -= replaced[1]
        if size > self.max_bytes:
            return False
        self._entries[key] = (value, size)
        self._held += size
        while self._held > self.max_bytes or len(self._entries) > self.max_entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._held -= dropped
        return True

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """The bytes the kept values weigh, as their callers weighed them."""
        return self._held
