"""Responses built once and handed to every stream that would build the same one.

When a snapshot changes, every subscribed stream answers with a response of its own. Most of
them are the same response: the same resources (a version names them by content), the same
nonce (streams with the same history count their responses alike). Each protobuf response
copies its resources into its own arena (upb: invisible to tracemalloc), so 1,000 streams
held 1,000 copies of a 31 KB assignment at once during a push, +42 MB of serve's peak
(bench/measure/sotw_push_memory.py). Sharing the message keeps one copy; gRPC still
serializes it per stream, but that buffer lives only while it is written.

A response is a pure function of its key (the caller keys it by type, version, nonce and,
where the resources are not implied by the version, their names and versions), so sharing
one between streams, or between two servers in one process, can never hand out a wrong one.
Messages handed out must not be modified. Memory is bounded by the resource bytes held
(LRU): the table keeps what a push burst shares, not history.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from heliostat.xds.cache.lru import ByteBudgetLRU

R = TypeVar("R")

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 256


class SharedResponses(Generic[R]):
    """A bounded LRU table of built responses by key, weighed by their resources' bytes."""

    __slots__ = ("_table",)

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._table: ByteBudgetLRU[Hashable, R] = ByteBudgetLRU(max_bytes, max_entries)

    def get(self, key: Hashable, size: int | Callable[[], int], build: Callable[[], R]) -> R:
        """The response for `key`, built by `build` the first time; `size` is what it holds
        (its resources' bytes), or a function that counts them, called only on a miss (a
        thousand streams asking for one response count it once). One larger than the whole
        table is built and not kept."""
        hit = self._table.get(key)
        if hit is not None:
            return hit
        if callable(size):
            size = size()
        response = build()
        self._table.put(key, response, size)
        return response

    def __len__(self) -> int:
        return len(self._table)

    @property
    def held_bytes(self) -> int:
        return self._table.held_bytes
