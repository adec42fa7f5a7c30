"""`Versions`: a node's name -> version table kept as differences from a shared snapshot map.

It must behave exactly as a plain dict whatever is done to it, rebased or not, and once it
is moved onto a map it agrees with it keeps nothing of its own (what saves serve's memory).
"""

from __future__ import annotations

from types import MappingProxyType

from envoy.config.endpoint.v3 import endpoint_components_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.xds.cache.changes import changes
from heliostat.xds.cache.versions import EMPTY, Resources, Versions
from heliostat.xds.resources.snapshot import Resource
from heliostat.xds.resources.types import TypeUrl

NAMES = [f"e{i}" for i in range(8)]


def resources(versions: dict[str, int]) -> Resources:
    made = {}
    for name, weight in versions.items():
        message = endpoint_components_pb2.LbEndpoint()
        message.load_balancing_weight.value = weight
        made[name] = Resource.of(TypeUrl.LB_ENDPOINT, name, message)
    return MappingProxyType(made)


def as_dict(base: Resources) -> dict[str, str]:
    return {name: r.version for name, r in base.items()}


def test_reads_through_to_the_base_and_overrides_it() -> None:
    base = resources({"a": 1, "b": 2})
    table = Versions(as_dict(base))
    assert table.own_entries == 2
    table.rebase(base, changes(EMPTY, base)[0])  # the same content, now shared
    assert table == as_dict(base) and table.own_entries == 0
    table["a"] = "other"
    assert table.pop("b") == base["b"].version
    assert table.pop("b") is None and "b" not in table
    table["c"] = "new"
    assert table.as_dict() == {"a": "other", "c": "new"}
    assert len(table) == 2 and sorted(table) == ["a", "c"]
    twin = table.copy()
    twin["a"] = base["a"].version
    assert table.get("a") == "other" and twin.get("a") == base["a"].version


def test_once_level_with_a_new_map_it_keeps_nothing_of_its_own() -> None:
    old = resources({"a": 1, "b": 2, "c": 3})
    new = resources({"a": 1, "b": 5, "d": 4})  # b changed, c gone, d added
    table = Versions(as_dict(old))
    table.rebase(old, as_dict(old))
    table["b"] = new["b"].version
    table.pop("c")
    table["d"] = new["d"].version
    changed, gone = changes(old, new)
    table.rebase(new, changed | gone)
    assert table == as_dict(new)
    assert table.own_entries == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(NAMES), st.integers(1, 3)), min_size=1, max_size=4),
    st.lists(
        st.tuples(
            st.sampled_from(["set", "pop", "rebase", "copy"]),
            st.sampled_from(NAMES),
            st.integers(0, 5),
        ),
        max_size=25,
    ),
)
def test_property_behaves_as_a_dict_whatever_happens(
    bases: list[dict[str, int]], steps: list[tuple[str, str, int]]
) -> None:
    maps = [resources(b) for b in bases]
    table, model = Versions({"e0": "initial"}), {"e0": "initial"}
    for step, name, n in steps:
        if step == "set":
            table[name] = model[name] = f"v{n}"
        elif step == "pop":
            assert table.pop(name) == model.pop(name, None)
        elif step == "rebase":
            target = maps[n % len(maps)]
            changed, gone = changes(table.base, target)
            table.rebase(target, changed | gone)
        else:
            table = table.copy()
        assert table == model
        assert {n: table.get(n) for n in NAMES} == {n: model.get(n) for n in NAMES}
        assert len(table) == len(model)
