"""Reading YAML that tries to hurt: aliases, nesting, tags, and where syntax errors point.

Every hostile document here must end as located problems (`FILE:LINE: path: message`), never
as a traceback, a RecursionError or a process that grows without bound.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from heliostat.policy import PolicyError, parse_policy, yamlsource
from heliostat.policy.yamlsource import YamlLimits, YamlSyntaxError, load_located

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both parsers PyYAML may bring: libyaml's and its pure-Python fallback."""
    if request.param == "libyaml":
        if not yaml.__with_libyaml__:
            pytest.skip("PyYAML built without libyaml")
        monkeypatch.setattr(yamlsource, "_LOADER", yaml.CSafeLoader)
    else:
        monkeypatch.setattr(yamlsource, "_LOADER", yaml.SafeLoader)
    yield request.param


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    text_out = str(info.value)
    assert "Traceback" not in text_out
    return info.value.lines()


def laughs(levels: int, width: int = 9) -> str:
    """The "billion laughs": each level a list of `width` aliases of the level before."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


# -- the same data as yaml.safe_load ------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "traffic.yaml"])
def test_data_is_what_safe_load_reads(parser: str, name: str) -> None:
    text = (REPO / "policies" / name).read_text()
    assert load_located(text).data == yaml.safe_load(text)


def test_scalars_resolve_as_safe_load_does(parser: str) -> None:
    text = (
        "ints: [1, 0x1f, 0o17, -3, 1_000]\n"
        "floats: [1.5, .inf, -.inf, 1e3, 6.0e+2]\n"
        "bools: [yes, no, on, off, true, False]\n"
        "nulls: [~, null, ]\n"
        "strings: ['1', \"yes\", plain text, 127.0.0.1:9101, '']\n"
        "tagged: [!!str 12, !!int '7', !!float '2']\n"
        "date: 2001-12-14\n"
    )
    assert load_located(text).data == yaml.safe_load(text)


def test_lines_of_values_keys_and_items(parser: str) -> None:
    located = load_located("a:\n  b: 1\n  c:\n    - x\n    -\n      d: 2\n")
    assert located.lines[()] == 1
    assert located.lines[("a",)] == 1
    assert located.lines[("a", "b")] == 2
    assert located.lines[("a", "c", 0)] == 4
    assert located.lines[("a", "c", 1, "d")] == 6
    assert located.line_of(("a", "c", 1, "d", "missing")) == 6


def test_duplicate_keys_are_found(parser: str) -> None:
    located = load_located("a: 1\nb: 2\na: 3\n")
    assert located.duplicate_keys == ((("a",), 3),)
    assert located.data == {"a": 3, "b": 2}


# -- aliases ------------------------------------------------------------------------------------


def test_aliases_share_their_anchor_instead_of_copying_it(parser: str) -> None:
    """Five levels of nine aliases: 9^5 values if copied, five lists when shared."""
    data = load_located(laughs(5)).data
    assert data["a4"][0] is data["a3"]
    assert all(item is data["a3"] for item in data["a4"])
    assert data["a1"][8] is data["a0"]


def test_billion_laughs_is_one_located_line(parser: str) -> None:
    """Nine levels: 9^9 (387 million) values once expanded; refused at the alias that
    crosses the limit, without expanding anything."""
    (line,) = problems(laughs(9))
    assert line == (
        "p.yaml:7: a6[0]: the document holds more than 1,000,000 values "
        "(counting every use of an alias)"
    )


def test_billion_laughs_inside_the_policy_is_refused_too(parser: str) -> None:
    text = laughs(9).replace("a0:", "apiVersion: heliostat/v1\nkind: InferencePolicy\na0:", 1)
    (line,) = problems(text)
    assert "more than 1,000,000 values" in line


def test_expanded_size_counts_every_use_of_an_alias(parser: str) -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a]\nc: [*a, *a, *a]\n"
    # 1 root + 2 keys... : count them: root, a, [1,2,3] (4), b, [..] (1 + 2*4), c, [..] (1+3*4)
    assert load_located(text, YamlLimits(max_values=1 + 1 + 4 + 1 + 9 + 1 + 13)).data
    with pytest.raises(YamlSyntaxError) as info:
        load_located(text, YamlLimits(max_values=1 + 1 + 4 + 1 + 9 + 1 + 12))
    assert info.value.line == 3 and info.value.path == ("c", 2)


def test_alias_count_is_capped(parser: str) -> None:
    items = "\n".join("  - *x" for _ in range(1001))
    (line,) = problems(f"x: &x 1\nlist:\n{items}\n")
    assert line == "p.yaml:1003: list[1000]: more than 1000 aliases; write the values out"


def test_an_alias_inside_its_own_anchor_is_refused(parser: str) -> None:
    (line,) = problems("a: &a [1, *a]\n")
    assert line == "p.yaml:1: a[1]: alias *a refers to a value that contains it"


def test_an_alias_without_anchor_is_refused(parser: str) -> None:
    (line,) = problems("a: 1\nb: *nowhere\n")
    assert line == "p.yaml:2: b: alias *nowhere has no anchor before it"


def test_an_alias_that_nests_too_deep_is_refused(parser: str) -> None:
    deep = "[" * 20 + "]" * 20
    located = load_located(f"a: &a {deep}\nb: *a\n")
    assert located.data["b"] is located.data["a"]
    with pytest.raises(YamlSyntaxError) as info:
        load_located(f"a: &a {deep}\nb: [[[[[[[[[[[[[[*a]]]]]]]]]]]]]]\n")
    assert info.value.line == 2
    assert info.value.message == "alias *a nests values deeper than 32 levels"


def test_problems_inside_an_alias_are_located_at_the_alias(parser: str) -> None:
    text = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: demo}
spec:
  regions: {us-east: {}}
  models:
    - name: a
      slo: &slo {ttft_ms: 800, network_budget_ms: -1}
      endpoints: [{address: 127.0.0.1:9101, region: us-east}]
    - name: b
      slo: *slo
      endpoints: [{address: 127.0.0.1:9102, region: us-east}]
"""
    assert problems(text) == [
        "p.yaml:8: spec.models[0].slo.network_budget_ms: input should be greater than or "
        "equal to 0",
        "p.yaml:11: spec.models[1].slo.network_budget_ms: input should be greater than or "
        "equal to 0",
    ]


# -- nesting ------------------------------------------------------------------------------------


def test_deep_flow_nesting_is_one_located_line(parser: str) -> None:
    (line,) = problems("spec: " + "[" * 100_000 + "\n")
    assert line.startswith("p.yaml:1: ")
    assert line.endswith("nested deeper than 32 levels; a policy needs far fewer")


def test_deep_block_nesting_is_one_located_line(parser: str) -> None:
    text = "".join(" " * depth + "k:\n" for depth in range(1_500))
    (line,) = problems(text)
    assert line == "p.yaml:33: " + ".".join(["k"] * 32) + (
        ": nested deeper than 32 levels; a policy needs far fewer"
    )


def test_nesting_up_to_the_limit_is_fine(parser: str) -> None:
    located = load_located("[" * 32 + "]" * 32)
    assert located.data is not None


def test_reading_never_recurses(parser: str) -> None:
    """The walk is iterative: with the limit lifted, depth costs no Python stack (libyaml
    stops at 1,000 levels itself; a recursive walk needs several frames per level)."""
    depth = 900
    assert depth * 2 > sys.getrecursionlimit()
    text = "".join(" " * level + "k:\n" for level in range(depth))
    located = load_located(text, YamlLimits(max_depth=depth + 1))
    assert located.line_of(("k",) * 5) == 5


# -- scalars that cannot be read ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: !foo x\n", "p.yaml:1: a: unknown tag '!foo'"),
        ("a:\n  b: !!python/object:os.system x\n", "p.yaml:2: a.b: unknown tag "),
        ("a: !!int abc\n", "p.yaml:1: a: cannot read 'abc' as tag:yaml.org,2002:int: "),
        ("a: !!map x\n", "p.yaml:1: a: tag 'tag:yaml.org,2002:map' does not apply to a scalar"),
        ("a: " + "9" * 5000 + "\n", "p.yaml:1: a: cannot read '99999999999"),
        ("a:\n  <<: {b: 1}\n", "p.yaml:2: a: merge keys (<<) are not supported"),
        ("? [a, b]\n: 1\n", "p.yaml:1: (document): a mapping or a list cannot be a key"),
    ],
)
def test_unreadable_scalars_are_one_located_line(parser: str, text: str, expected: str) -> None:
    (line,) = problems(text)
    assert line.startswith(expected)


# -- syntax errors name the bracket left open --------------------------------------------------


def test_unclosed_bracket_names_the_line_it_was_opened_on(parser: str) -> None:
    text = "spec:\n  regions: [us-east,\n    eu-west\n  models: []\n"
    (line,) = problems(text)
    assert line.startswith("p.yaml:4: (document): invalid YAML: ")
    assert line.endswith("; the '[' opened at line 2 is not closed")


def test_unclosed_brace_at_the_end_of_the_file(parser: str) -> None:
    (line,) = problems("metadata: {name: demo,\n\n\n")
    assert line.endswith("; the '{' opened at line 1 is not closed")


def test_error_on_the_bracket_line_names_no_other_line(parser: str) -> None:
    (line,) = problems("a: [1, 2}\n")
    assert line.startswith("p.yaml:1: (document): invalid YAML: ")
    assert "opened at" not in line


def test_unclosed_quote_names_where_it_started(parser: str) -> None:
    (line,) = problems("a: 'open\nb: 1\n")
    assert "which starts at line 1" in line


def test_tab_indentation_says_so(parser: str) -> None:
    (line,) = problems("a:\n\tb: 1\n")
    assert line.startswith("p.yaml:2: ")
    assert line.endswith("(a tab: YAML indents with spaces)")


def test_several_documents_point_at_the_second_one(parser: str) -> None:
    (line,) = problems("a: 1\n---\nb: 2\n")
    assert line == "p.yaml:2: (document): expected one YAML document per policy file, found several"


def test_a_character_yaml_does_not_allow(parser: str) -> None:
    (line,) = problems("a: 1\nb: \x07\n")
    assert line.startswith("p.yaml:")
    assert "invalid YAML" in line
