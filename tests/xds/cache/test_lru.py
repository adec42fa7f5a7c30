"""ByteBudgetLRU: the most recently used values that fit a byte budget and an entry budget."""

from __future__ import annotations

from heliostat.xds.cache.lru import ByteBudgetLRU


def test_the_least_recently_put_go_first_when_the_bytes_run_out() -> None:
    table: ByteBudgetLRU[str, str] = ByteBudgetLRU(max_bytes=100, max_entries=10)
    for key in "abc":
        assert table.put(key, key.upper(), 40)
    assert len(table) == 2 and table.held_bytes == 80
    assert table.get("a") is None
    assert table.get("b") == "B" and table.get("c") == "C"


def test_a_read_makes_a_value_the_most_recently_used() -> None:
    table: ByteBudgetLRU[str, str] = ByteBudgetLRU(max_bytes=100, max_entries=10)
    table.put("a", "A", 40)
    table.put("b", "B", 40)
    assert table.get("a") == "A"  # a is used again: b is now the oldest
    table.put("c", "C", 40)
    assert table.get("b") is None
    assert table.get("a") == "A" and table.get("c") == "C"


def test_as_many_small_values_go_as_it_takes_to_fit_a_large_one() -> None:
    table: ByteBudgetLRU[int, int] = ByteBudgetLRU(max_bytes=100, max_entries=10)
    for key in range(5):
        table.put(key, key, 20)
    table.put(9, 9, 70)
    assert [key for key in range(5) if table.get(key) is not None] == [4]
    assert table.held_bytes == 90 and table.get(9) == 9


def test_the_entry_count_is_bounded_too() -> None:
    table: ByteBudgetLRU[int, int] = ByteBudgetLRU(max_bytes=1_000, max_entries=3)
    for key in range(10):
        table.put(key, key, 1)
    assert len(table) == 3 and table.held_bytes == 3
    assert [table.get(key) for key in range(10)] == [None] * 7 + [7, 8, 9]


def test_a_value_larger_than_the_byte_budget_is_not_kept_and_nothing_is_dropped_for_it() -> None:
    table: ByteBudgetLRU[str, str] = ByteBudgetLRU(max_bytes=100, max_entries=10)
    table.put("a", "A", 60)
    assert not table.put("big", "B", 101)
    assert table.get("big") is None
    assert len(table) == 1 and table.held_bytes == 60 and table.get("a") == "A"
    assert table.put("full", "F", 100)  # exactly the budget fits, alone
    assert len(table) == 1 and table.held_bytes == 100


def test_a_value_put_again_replaces_the_old_one_and_its_weight() -> None:
    table: ByteBudgetLRU[str, str] = ByteBudgetLRU(max_bytes=100, max_entries=10)
    table.put("a", "A", 30)
    table.put("b", "B", 30)
    table.put("a", "A2", 50)  # replaced, and now the most recently used
    assert len(table) == 2 and table.held_bytes == 80
    table.put("c", "C", 40)
    assert table.get("b") is None and table.get("a") == "A2"
    # Replaced by one too large to keep: the old value is not answered any more either.
    assert not table.put("a", "A3", 500)
    assert table.get("a") is None and table.held_bytes == 40
