"""SharedResponses: one response per key, bounded by the bytes it holds."""

from __future__ import annotations

from heliostat.xds.cache.responses import SharedResponses


def test_a_key_is_built_once_and_the_same_object_handed_out() -> None:
    table: SharedResponses[list[str]] = SharedResponses()
    built: list[str] = []

    def build() -> list[str]:
        built.append("x")
        return ["response"]

    first = table.get(("eds", "v1", "1"), 10, build)
    assert table.get(("eds", "v1", "1"), 10, build) is first
    assert len(built) == 1
    assert table.get(("eds", "v1", "2"), 10, build) is not first  # another nonce
    assert len(built) == 2


def test_the_least_recently_used_go_first_when_the_bytes_run_out() -> None:
    table: SharedResponses[str] = SharedResponses(max_bytes=100, max_entries=10)
    table.get("a", 40, lambda: "A")
    table.get("b", 40, lambda: "B")
    table.get("a", 40, lambda: "A2")  # used again: b is now the oldest
    table.get("c", 40, lambda: "C")
    assert len(table) == 2 and table.held_bytes == 80
    assert table.get("a", 40, lambda: "A3") == "A"
    assert table.get("b", 40, lambda: "B2") == "B2"  # was dropped, built again


def test_the_entry_count_is_bounded_too() -> None:
    table: SharedResponses[int] = SharedResponses(max_bytes=1_000, max_entries=3)
    for key in range(10):
        table.get(key, 1, lambda key=key: key)  # type: ignore[misc]
    assert len(table) == 3 and table.held_bytes == 3


def test_a_response_larger_than_the_table_is_built_and_not_kept() -> None:
    table: SharedResponses[str] = SharedResponses(max_bytes=100)
    assert table.get("big", 101, lambda: "B") == "B"
    assert len(table) == 0 and table.held_bytes == 0


def test_a_size_given_as_a_function_is_counted_only_when_the_response_is_built() -> None:
    table: SharedResponses[str] = SharedResponses(max_bytes=100)
    counted: list[int] = []

    def size() -> int:
        counted.append(1)
        return 30

    for _ in range(5):  # five streams asking for the same response
        assert table.get("a", size, lambda: "A") == "A"
    assert len(counted) == 1 and table.held_bytes == 30
