"""Two-generation memo tables for translation: reuse what the last round built, forget the rest.

Translation is re-run every tick for every node group, but most of what it builds (an
endpoint whose weight held, a locality whose endpoints all held, a message already
serialized) is identical to the last round's. Tables keyed by object identity let those be
reused; keeping only the current and the previous round bounds memory to what is live,
however long the process runs. A table holds no global state: whoever owns a set of tables
(the publisher, through `heliostat.xds.translate.memo.TranslationMemo`) rotates them once
per publish.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RoundMemo(Generic[K, V]):
    __slots__ = ("_current", "_previous")

    def __init__(self) -> None:
        self._current: dict[K, V] = {}
        self._previous: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self._current.get(key)
        if value is None:
            value = self._previous.get(key)
            if value is not None:
                self._current[key] = value
        return value

    def get_many(self, keys: Sequence[K]) -> list[V | None]:
        """`get` for many keys at once: the lookups that hit this round run in C, which is
        what keeps re-joining a large locality cheap when few of its endpoints changed."""
        found = list(map(self._current.get, keys))
        if None in found:
            current, previous = self._current, self._previous
            for index, value in enumerate(found):
                if value is None:
                    key = keys[index]
                    value = previous.get(key)
                    if value is not None:
                        current[key] = value
                        found[index] = value
        return found

    def put(self, key: K, value: V) -> None:
        self._current[key] = value

    def rotate(self) -> None:
        """Start a round: last round's entries stay reachable, older ones go."""
        self._previous, self._current = self._current, {}

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
