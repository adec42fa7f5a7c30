"""The KV block pool with its prefix cache, modelled on vLLM v1's block manager.

One pool of ``num_gpu_blocks`` blocks serves two purposes at once, as on a real GPU: blocks held
by running requests, and blocks that finished requests left behind and that still hold a cached
prompt prefix. The second kind are free (any new request may take them) but stay findable by hash
until reallocated, least recently used first. That shared budget is why a long-prefix workload
thrashes a small cache, and why routing a prefix group to one replica pays off.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Allocation:
    """Blocks granted to one request; the first ``hit_blocks`` came from the prefix cache."""

    blocks: tuple[int, ...]
    hit_blocks: int


class BlockPool:
    """Fixed pool of KV blocks with reference counts and an LRU prefix cache."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._by_hash: dict[int, int] = {}
        # Blocks nobody holds, in eviction order: the first entry is reused first.
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))

    @property
    def num_free(self) -> int:
        """Blocks a new request could take (cached-but-unreferenced blocks included)."""
        return len(self._free)

    @property
    def num_used(self) -> int:
        """Blocks some request holds."""
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held, as vLLM's ``kv_cache_usage_perc`` reports it (0-1)."""
        return self.num_used / self.num_blocks

    @property
    def num_cached(self) -> int:
        """Blocks whose content is findable by prefix hash."""
        return len(self._by_hash)

    def match_prefix(self, hashes: Sequence[int], max_blocks: int | None = None) -> list[int]:
        """Cached blocks of the longest prefix of ``hashes``; a miss ends the chain."""
        limit = len(hashes) if max_blocks is None else min(max_blocks, len(hashes))
        found: list[int] = []
        for h in hashes[:limit]:
            block = self._by_hash.get(h)
            if block is None:
                break
            found.append(block)
        return found

    def allocate(
        self, hashes: Sequence[int], total_blocks: int, max_hit_blocks: int | None = None
    ) -> Allocation | None:
        """Grant ``total_blocks`` blocks, reusing cached prefix blocks; None if they do not fit.

        Cache hits that nobody holds still count against the free pool (taking them makes them
        unavailable to others), so the fit check subtracts them before allocating new blocks.
        """
        hits = self.match_prefix(hashes, max_hit_blocks)[:total_blocks]
        needed = total_blocks - len(hits)
        idle_hits = sum(1 for b in hits if self._ref[b] == 0)
        if needed > len(self._free) - idle_hits:
            return None
        for b in hits:
            if self._ref[b] == 0:
                del self._free[b]
            self._ref[b] += 1
        fresh: list[int] = []
        for _ in range(needed):
            b, _unused = self._free.popitem(last=False)
            old = self._hash_of[b]
            if old is not None:  # evict the LRU cached block
                del self._by_hash[old]
                self._hash_of[b] = None
            self._ref[b] = 1
            fresh.append(b)
        return Allocation(blocks=tuple(hits + fresh), hit_blocks=len(hits))

    def commit(self, blocks: Sequence[int], hashes: Sequence[int]) -> None:
        """Make computed prompt blocks findable by later requests.

        A hash already cached in another block (two identical prompts prefilled at once) keeps
        its first block; the duplicate stays private and is recycled first when freed.
        """
        for block, h in zip(blocks, hashes, strict=False):
            if self._hash_of[block] is None and h not in self._by_hash:
                self._by_hash[h] = block
                self._hash_of[block] = h

    def free(self, blocks: Sequence[int]) -> None:
        """Release a request's blocks.

        Walking them in reverse puts a prompt's tail blocks ahead of its head in the eviction
        order, so the shared head (system prompt) outlives the per-request tail, as in vLLM.
        Blocks with no cached content go to the very front: they are worth nothing.
        """
        for b in reversed(blocks):
            self._ref[b] -= 1
            if self._ref[b] < 0:
                raise RuntimeError(f"block {b} freed twice")
            if self._ref[b] == 0:
                self._free[b] = None
                if self._hash_of[b] is None:
                    self._free.move_to_end(b, last=False)
