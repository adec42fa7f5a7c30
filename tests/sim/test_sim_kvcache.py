"""The block pool: reference counting, prefix hits and LRU eviction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.sim.kvcache import BlockPool


def test_allocate_and_free_balance() -> None:
    pool = BlockPool(8, 16)
    alloc = pool.allocate([], 5)
    assert alloc is not None and len(alloc.blocks) == 5 and alloc.hit_blocks == 0
    assert pool.num_used == 5 and pool.usage == 5 / 8
    assert pool.allocate([], 4) is None  # only 3 left
    pool.free(alloc.blocks)
    assert pool.num_used == 0


def test_committed_prefix_is_found_after_free() -> None:
    pool = BlockPool(8, 16)
    alloc = pool.allocate([11, 12, 13], 4)
    assert alloc is not None
    pool.commit(alloc.blocks[:3], [11, 12, 13])
    pool.free(alloc.blocks)
    again = pool.allocate([11, 12, 99], 4)
    assert again is not None and again.hit_blocks == 2
    assert again.blocks[:2] == alloc.blocks[:2]


def test_concurrent_holders_share_cached_blocks() -> None:
    pool = BlockPool(8, 16)
    first = pool.allocate([1, 2], 3)
    assert first is not None
    pool.commit(first.blocks[:2], [1, 2])
    second = pool.allocate([1, 2], 3)
    assert second is not None and second.hit_blocks == 2
    assert pool.num_used == 4  # two shared blocks + one private block each
    pool.free(first.blocks)
    assert pool.num_used == 3  # the shared blocks are still held by the second request
    pool.free(second.blocks)
    assert pool.num_used == 0


def test_idle_cached_blocks_count_against_free_space() -> None:
    pool = BlockPool(4, 16)
    a = pool.allocate([1, 2], 2)
    assert a is not None
    pool.commit(a.blocks, [1, 2])
    pool.free(a.blocks)
    # Hitting both cached blocks and needing 3 more would take 5 of 4 blocks.
    assert pool.allocate([1, 2], 5) is None
    assert pool.allocate([1, 2], 4) is not None


def test_lru_eviction_keeps_the_shared_head_longest() -> None:
    pool = BlockPool(4, 16)
    a = pool.allocate([1, 2, 3], 3)
    assert a is not None
    pool.commit(a.blocks, [1, 2, 3])
    pool.free(a.blocks)
    # Two fresh blocks: the free block with no content goes first, then the prompt's tail.
    b = pool.allocate([], 2)
    assert b is not None
    assert pool.match_prefix([1, 2, 3]) == list(a.blocks[:2])
    assert pool.num_cached == 2


def test_max_blocks_limits_the_match() -> None:
    pool = BlockPool(4, 16)
    a = pool.allocate([1, 2], 2)
    assert a is not None
    pool.commit(a.blocks, [1, 2])
    assert len(pool.match_prefix([1, 2], max_blocks=1)) == 1


ops = st.lists(
    st.tuples(st.sampled_from(["alloc", "free"]), st.lists(st.integers(0, 5), max_size=4)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_pool_invariants_hold_under_random_use(script: list[tuple[str, list[int]]]) -> None:
    pool = BlockPool(12, 4)
    held: list[tuple[int, ...]] = []
    for op, hashes in script:
        if op == "alloc":
            # Hash chains: make each list a chain so prefixes are consistent.
            chain = [hash(tuple(hashes[: i + 1])) for i in range(len(hashes))]
            alloc = pool.allocate(chain, len(chain) + 1)
            if alloc is not None:
                pool.commit(alloc.blocks[: len(chain)], chain)
                held.append(alloc.blocks)
        elif held:
            pool.free(held.pop(0))
        assert pool.num_used + pool.num_free == pool.num_blocks
        assert pool.num_used == len({b for blocks in held for b in blocks})
        for blocks in held:
            assert len(set(blocks)) == len(blocks)
    for blocks in held:
        pool.free(blocks)
    assert pool.num_used == 0
