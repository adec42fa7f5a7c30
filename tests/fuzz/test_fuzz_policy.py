"""Policy files, structure-aware: the shipped policies, mutated at any place of their tree
(values replaced by hostile ones, keys dropped or invented) and in their text (bytes cut,
inserted, anchors and deep nesting). Each mutant is either a policy that translates into
Envoy resources that serialize, or a `PolicyError` whose every line names the file and is
short. Never a traceback, never another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from heliostat.balance import static_views
from heliostat.policy import Policy, PolicyError, parse_policy
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.types import PUSH_ORDER
from heliostat.xds.translate import build_snapshot
from tests.fuzz.conftest import cases

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
SOURCES = {
    name: yaml.safe_load((REPO / "policies" / name).read_text())
    for name in ("demo.yaml", "traffic.yaml")
}
FILE = "fuzzed.yaml"

_DURATIONS = st.sampled_from(
    ["0ms", "1ms", "-1s", "1e99h", "99999999999999999999h", "1.5s", "2m", "nan", "inf", "", "1"]
)
_ADDRESSES = st.sampled_from(
    [
        "127.0.0.1:9101",
        "[::ffff:127.0.0.1]:9101",
        "[::1]:0",
        "256.1.1.1:80",
        "host:99999",
        ":80",
        "a" * 300 + ":1",
        "127.0.0.1",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    _DURATIONS,
    _ADDRESSES,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the document tree (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(document: Any, path: tuple[Any, ...], how: str, value: Any, key: str) -> Any:
    if not path:
        return value if how == "replace" else document
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    elif how == "add" and isinstance(parent[last], list):
        parent[last].append(value)
    elif how == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return document


def _assert_sound(text: str) -> Policy | None:
    try:
        policy = parse_policy(text, FILE)
    except PolicyError as error:
        lines = error.lines()
        assert lines, "a rejection without a problem"
        for line in lines:
            assert line.startswith(FILE), line
            assert "Traceback" not in line and len(line) < 600, line
        return None
    # Accepted: it must translate into resources Envoy can decode, for every region.
    views = static_views(policy)
    for region in policy.spec.regions:
        snapshot = build_snapshot(policy, views.for_region(region), NodeGroup(Role.GATEWAY, region))
        for type_url in PUSH_ORDER:
            for resource in snapshot.resources(type_url).values():
                assert resource.packed.SerializeToString()
    return policy


@given(
    source=st.sampled_from(sorted(SOURCES)),
    pick=st.integers(min_value=0),
    how=st.sampled_from(["replace", "replace", "delete", "add", "duplicate"]),
    value=_VALUES,
    key=st.text(max_size=10),
    extra=st.integers(min_value=0, max_value=3),
)
@cases(2000)
def test_mutated_documents_are_served_or_refused_clearly(
    source: str, pick: int, how: str, value: Any, key: str, extra: int
) -> None:
    document = copy.deepcopy(SOURCES[source])
    for round_ in range(1 + extra):
        paths = _paths(document)
        path = paths[(pick + round_ * 7919) % len(paths)]
        try:
            document = _mutate(document, path, how, copy.deepcopy(value), key)
        except (KeyError, IndexError, TypeError):
            break  # an earlier mutation removed the place
    _assert_sound(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


_SNIPPETS = st.sampled_from(
    ["[", "]", "{", "}", ":", "- ", "&a ", "*a", "!!python/object:os.system ", "\t", '"', "'",
     "\x00", "\ufeff", "%YAML 1.1\n", "---\n", "...\n", "<<: *a\n", "? ", "|\n", ">-\n"]
)  # fmt: skip


@given(
    source=st.sampled_from(sorted(SOURCES)),
    at=st.integers(min_value=0),
    cut=st.integers(min_value=0, max_value=40),
    insert=st.one_of(_SNIPPETS, st.text(max_size=20)),
    depth=st.integers(min_value=0, max_value=300),
)
@cases(2000)
def test_mutated_text_is_served_or_refused_clearly(
    source: str, at: int, cut: int, insert: str, depth: int
) -> None:
    text = (REPO / "policies" / source).read_text()
    where = at % (len(text) + 1)
    mutant = text[:where] + insert * max(1, depth // 50) + text[where + cut :]
    if depth > 250:
        mutant += "x: " + "[" * depth * 10 + "\n"
    _assert_sound(mutant)
