"""Values worked out once from immutable objects that every stream of a group shares.

The streams of a node group hold the very same snapshot objects (resource maps, resources,
name tuples), so what one stream derives from them (the names that changed between two
maps, an assignment's pending twin, the collections of a member tuple) is found by the
others by the objects' identity instead of being worked out again per stream. An entry
pins the objects it was keyed by, so an id is never reused under it; the table keeps the
most recently used `limit` entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from operator import is_
from typing import Generic, TypeVar

V = TypeVar("V")


class IdentityMemo(Generic[V]):
    """(objects, by identity) -> the value computed from them, least recently used dropped."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple[int, ...], tuple[tuple[object, ...], V]] = OrderedDict()

    def get(self, keys: tuple[object, ...], compute: Callable[[], V]) -> V:
        """The value for `keys`, computed by `compute` on the first call for these objects."""
        entries = self._entries
        # One or two objects, nearly every call (~7 per stream and change at 1,000 streams):
        # spelled out, a hit costs half of what the general form's map() and all() do.
        if len(keys) == 2:
            first, second = keys
            key: tuple[int, ...] = (id(first), id(second))
            hit = entries.get(key)
            if hit is not None and hit[0][0] is first and hit[0][1] is second:
                entries.move_to_end(key)
                return hit[1]
        elif len(keys) == 1:
            key = (id(keys[0]),)
            hit = entries.get(key)
            if hit is not None and hit[0][0] is keys[0]:
                entries.move_to_end(key)
                return hit[1]
        else:
            key = tuple(map(id, keys))
            hit = entries.get(key)
            if hit is not None and all(map(is_, hit[0], keys)):
                entries.move_to_end(key)
                return hit[1]
        value = compute()
        entries[key] = (keys, value)
        if len(entries) > self.limit:
            entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
