"""The identity memo: one computation per set of shared objects, never a stale value for an
object that merely reuses an id."""

from __future__ import annotations

from heliostat.xds.cache.identity import IdentityMemo


def test_the_same_objects_compute_once_equal_but_distinct_ones_compute_again() -> None:
    memo: IdentityMemo[int] = IdentityMemo(4)
    calls: list[int] = []
    first, twin = {"a": 1}, {"a": 1}

    def compute(value: int) -> int:
        calls.append(value)
        return value

    assert memo.get((first,), lambda: compute(1)) == 1
    assert memo.get((first,), lambda: compute(2)) == 1
    assert memo.get((twin,), lambda: compute(3)) == 3
    assert calls == [1, 3]


def test_the_least_recently_used_entry_is_dropped_first() -> None:
    memo: IdentityMemo[str] = IdentityMemo(2)
    a, b, c = (object() for _ in range(3))
    memo.get((a,), lambda: "a")
    memo.get((b,), lambda: "b")
    memo.get((a,), lambda: "not again")  # a is now the most recent
    memo.get((c,), lambda: "c")  # drops b
    assert len(memo) == 2
    assert memo.get((a,), lambda: "recomputed") == "a"
    assert memo.get((b,), lambda: "b again") == "b again"
