"""The policy loader: a good file loads; every bad file fails with `FILE:LINE: path: message`."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import yaml

from heliostat import cli
from heliostat.policy import Policy, PolicyError, limits, load_policy, parse_duration, parse_policy
from heliostat.policy import problems as problems
from heliostat.policy.schema import UpstreamProtocol
from heliostat.samples import Engine

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "policies" / "demo.yaml"

# The line numbers in the expectations below refer to this text; keep it stable.
BASE = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: demo}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}
    eu-west: {rtt_ms: {ap-southeast: 160}}
    ap-southeast: {}
  gateway: {port: 10000, address: 127.0.0.1}
  models:
    - name: llama-70b
      engine: vllm
      slo: {ttft_ms: 800, network_budget_ms: 150}
      signals: {interval: 2s, timeout: 500ms, stale_after: 1m}
      connect_timeout: 1s
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east, version: v1}
        - {address: 127.0.0.1:9102, region: us-east, version: v1}
        - {address: 127.0.0.1:9103, region: us-east}
        - {address: 127.0.0.1:9201, region: eu-west}
        - {address: 127.0.0.1:9301, region: ap-southeast}
    - name: qwen-7b
      protocol: http2
      endpoints:
        - {address: 127.0.0.1:9111, region: us-east}
        - {address: 127.0.0.1:9211, region: eu-west}
"""

LINE_FORMAT = re.compile(r"^demo\.yaml:[1-9]\d*: \S+: \S.*$")


def edit(old: str, new: str, text: str = BASE) -> str:
    """Replace text that must occur exactly once, so a drifting BASE fails loudly."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "demo.yaml")
    lines = info.value.lines()
    assert str(info.value) == "\n".join(lines)
    for line in lines:
        assert LINE_FORMAT.match(line), line
    return lines


# -- the good files ---------------------------------------------------------------------------


def test_base_policy_loads() -> None:
    policy = parse_policy(BASE, "demo.yaml")
    assert policy.metadata.name == "demo"
    assert list(policy.spec.regions) == ["us-east", "eu-west", "ap-southeast"]
    assert policy.spec.gateway.port == 10000
    assert policy.spec.gateway.address == "127.0.0.1"
    llama, qwen = policy.spec.models
    assert llama.name == "llama-70b" and llama.engine is Engine.VLLM
    assert llama.slo.ttft_ms == 800 and llama.slo.network_budget_ms == 150
    assert [e.address for e in llama.endpoints][:2] == ["127.0.0.1:9101", "127.0.0.1:9102"]
    assert llama.endpoints[0].version == "v1" and llama.endpoints[2].version is None
    assert llama.protocol is UpstreamProtocol.HTTP1
    assert qwen.protocol is UpstreamProtocol.HTTP2
    assert policy.model("qwen-7b") is qwen and policy.model("nope") is None


def test_repository_demo_policy_loads() -> None:
    policy = load_policy(DEMO)
    assert policy.metadata.name == "demo"
    assert set(policy.spec.regions) == {"us-east", "eu-west", "ap-southeast"}
    assert policy.spec.models and all(m.endpoints for m in policy.spec.models)


def test_demo_error_points_at_the_line_of_the_value(tmp_path: Path) -> None:
    """The brief's example, against the real demo file: the line of the third endpoint."""
    text = DEMO.read_text()
    lines = text.splitlines()
    third = [i for i, line in enumerate(lines, 1) if line.lstrip().startswith("- {address:")][2]
    lines[third - 1] = lines[third - 1].replace("region: us-east", "region: eu-wst")
    assert "eu-wst" in lines[third - 1]
    path = tmp_path / "demo.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.lines() == [
        f"{path}:{third}: spec.models[0].endpoints[2].region: "
        "unknown region 'eu-wst' (did you mean 'eu-west'?)"
    ]


# -- one kind of problem per case -------------------------------------------------------------

CASES = {
    # unknown keys, with a did-you-mean when one is close
    "unknown key in a model": (
        edit("      engine: vllm", "      engnie: vllm"),
        ["demo.yaml:12: spec.models[0].engnie: unknown key 'engnie' (did you mean 'engine'?)"],
    ),
    "unknown key in an endpoint": (
        edit("9101, region: us-east, version: v1", "9101, region: us-east, verison: v1"),
        [
            "demo.yaml:17: spec.models[0].endpoints[0].verison: "
            "unknown key 'verison' (did you mean 'version'?)"
        ],
    ),
    "unknown key in a region": (
        edit("eu-west: {rtt_ms: {ap-southeast: 160}}", "eu-west: {rtt: {ap-southeast: 160}}"),
        ["demo.yaml:7: spec.regions.eu-west.rtt: unknown key 'rtt' (did you mean 'rtt_ms'?)"],
    ),
    "unknown key in the slo": (
        edit("slo: {ttft_ms: 800,", "slo: {ttft: 800,"),
        ["demo.yaml:13: spec.models[0].slo.ttft: unknown key 'ttft' (did you mean 'ttft_ms'?)"],
    ),
    "unknown key at the top": (
        BASE + "status: {}\n",
        ["demo.yaml:27: status: unknown key 'status'"],
    ),
    "unknown key with nothing close": (
        edit("address: 127.0.0.1}", "address: 127.0.0.1, colour: blue}"),
        ["demo.yaml:9: spec.gateway.colour: unknown key 'colour'"],
    ),
    # wrong types
    "port as a string": (
        edit("port: 10000", 'port: "10000"'),
        ["demo.yaml:9: spec.gateway.port: input should be a valid integer (got '10000')"],
    ),
    "port as a boolean": (
        edit("port: 10000", "port: true"),
        ["demo.yaml:9: spec.gateway.port: input should be a valid integer (got True)"],
    ),
    "port with a fraction": (
        edit("port: 10000", "port: 10000.5"),
        ["demo.yaml:9: spec.gateway.port: input should be a valid integer (got 10000.5)"],
    ),
    "port zero": (
        edit("port: 10000", "port: 0"),
        ["demo.yaml:9: spec.gateway.port: input should be greater than or equal to 1"],
    ),
    "number as a word": (
        edit("ttft_ms: 800", "ttft_ms: fast"),
        ["demo.yaml:13: spec.models[0].slo.ttft_ms: input should be a valid number (got 'fast')"],
    ),
    "rtt as a yaml boolean": (
        edit("ap-southeast: 160", "ap-southeast: yes"),
        [
            "demo.yaml:7: spec.regions.eu-west.rtt_ms.ap-southeast: "
            "input should be a valid number (got True)"
        ],
    ),
    "rtt infinite": (
        edit("ap-southeast: 160", "ap-southeast: .inf"),
        ["demo.yaml:7: spec.regions.eu-west.rtt_ms.ap-southeast: input should be a finite number"],
    ),
    "name as a number": (
        edit("- name: qwen-7b", "- name: 42"),
        ["demo.yaml:22: spec.models[1].name: input should be a valid string (got 42)"],
    ),
    "invalid name": (
        edit("- name: qwen-7b", "- name: Qwen_7B"),
        [
            "demo.yaml:22: spec.models[1].name: invalid name 'Qwen_7B': use lower-case letters, "
            "digits, '.', '_' or '-' (at most 63 characters, starting and ending with a letter "
            "or digit)"
        ],
    ),
    "endpoints as a string": (
        edit(
            "      endpoints:\n"
            "        - {address: 127.0.0.1:9111, region: us-east}\n"
            "        - {address: 127.0.0.1:9211, region: eu-west}\n",
            "      endpoints: none\n",
        ),
        ["demo.yaml:24: spec.models[1].endpoints: input should be a valid tuple (got 'none')"],
    ),
    "unknown engine": (
        edit("engine: vllm", "engine: vlm"),
        [
            "demo.yaml:12: spec.models[0].engine: input should be 'vllm', 'sglang', 'triton', "
            "'trtllm' or 'tgi' (got 'vlm')"
        ],
    ),
    "unknown protocol": (
        edit("protocol: http2", "protocol: http3"),
        ["demo.yaml:23: spec.models[1].protocol: input should be 'http1' or 'http2' (got 'http3')"],
    ),
    "missing required key": (
        edit("        - {address: 127.0.0.1:9211, region: eu-west}", "        - {region: eu-west}"),
        ["demo.yaml:26: spec.models[1].endpoints[1].address: missing required key 'address'"],
    ),
    "gateway address as a hostname": (
        edit("address: 127.0.0.1}", "address: localhost}"),
        [
            "demo.yaml:9: spec.gateway.address: "
            "'localhost' is not an IP address (use 0.0.0.0 for every interface)"
        ],
    ),
    # regions
    "unknown region in an endpoint": (
        edit("127.0.0.1:9103, region: us-east", "127.0.0.1:9103, region: eu-wst"),
        [
            "demo.yaml:19: spec.models[0].endpoints[2].region: "
            "unknown region 'eu-wst' (did you mean 'eu-west'?)"
        ],
    ),
    "unknown region in rtt_ms": (
        edit("{ap-southeast: 160}", "{ap-southeast: 160, us-est: 5}"),
        [
            "demo.yaml:7: spec.regions.eu-west.rtt_ms.us-est: "
            "unknown region 'us-est' (did you mean 'us-east'?)"
        ],
    ),
    "unknown region with nothing close": (
        edit("127.0.0.1:9211, region: eu-west", "127.0.0.1:9211, region: mars"),
        ["demo.yaml:26: spec.models[1].endpoints[1].region: unknown region 'mars'"],
    ),
    "negative rtt": (
        edit("ap-southeast: 160", "ap-southeast: -5"),
        [
            "demo.yaml:7: spec.regions.eu-west.rtt_ms.ap-southeast: "
            "RTT must not be negative (got -5)"
        ],
    ),
    "missing rtt for a pair": (
        edit("eu-west: {rtt_ms: {ap-southeast: 160}}", "eu-west: {}"),
        [
            "demo.yaml:7: spec.regions.eu-west: missing RTT between 'eu-west' and "
            "'ap-southeast' (give rtt_ms on either side)"
        ],
    ),
    "asymmetric rtt given twice": (
        edit("ap-southeast: {}", "ap-southeast: {rtt_ms: {eu-west: 170}}"),
        [
            "demo.yaml:8: spec.regions.ap-southeast.rtt_ms.eu-west: RTT is symmetric but "
            "'eu-west'->'ap-southeast' is 160 ms and 'ap-southeast'->'eu-west' is 170 ms; "
            "give it once"
        ],
    ),
    "rtt of a region to itself": (
        edit("ap-southeast: {}", "ap-southeast: {rtt_ms: {ap-southeast: 3}}"),
        [
            "demo.yaml:8: spec.regions.ap-southeast.rtt_ms.ap-southeast: "
            "a region's RTT to itself is 0; remove this entry"
        ],
    ),
    "no regions": (
        edit(
            "    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}\n"
            "    eu-west: {rtt_ms: {ap-southeast: 160}}\n"
            "    ap-southeast: {}\n",
            "    {}\n",
        ).replace("region: ap-southeast}", "region: us-east}"),
        None,  # checked in its own test below
    ),
    # duplicates
    "duplicate model name": (
        edit("- name: qwen-7b", "- name: llama-70b"),
        [
            "demo.yaml:22: spec.models[1].name: "
            "duplicate model name 'llama-70b' (first at spec.models[0])"
        ],
    ),
    "duplicate endpoint address": (
        edit("127.0.0.1:9102", "127.0.0.1:9101"),
        [
            "demo.yaml:18: spec.models[0].endpoints[1].address: duplicate endpoint address "
            "'127.0.0.1:9101' (first at spec.models[0].endpoints[0])"
        ],
    ),
    # addresses
    "address without a port": (
        edit("127.0.0.1:9102", "127.0.0.1"),
        [
            "demo.yaml:18: spec.models[0].endpoints[1].address: malformed address '127.0.0.1': "
            "expected IP:PORT such as 127.0.0.1:9101"
        ],
    ),
    "address with a hostname": (
        edit("127.0.0.1:9102", "gpu-1.local:9102"),
        [
            "demo.yaml:18: spec.models[0].endpoints[1].address: malformed address "
            "'gpu-1.local:9102': the host must be an IP literal "
            "(Envoy does not resolve names of EDS endpoints)"
        ],
    ),
    "address port out of range": (
        edit("127.0.0.1:9102", "127.0.0.1:70000"),
        [
            "demo.yaml:18: spec.models[0].endpoints[1].address: malformed address "
            "'127.0.0.1:70000': port must be 1-65535"
        ],
    ),
    "address port zero": (
        edit("127.0.0.1:9102", "127.0.0.1:0"),
        [
            "demo.yaml:18: spec.models[0].endpoints[1].address: malformed address "
            "'127.0.0.1:0': port must be 1-65535"
        ],
    ),
    "address port not a number": (
        edit("127.0.0.1:9102", "127.0.0.1:http"),
        [
            "demo.yaml:18: spec.models[0].endpoints[1].address: malformed address "
            "'127.0.0.1:http': port must be 1-65535"
        ],
    ),
    # empty lists
    "empty endpoint list": (
        edit(
            "      endpoints:\n"
            "        - {address: 127.0.0.1:9111, region: us-east}\n"
            "        - {address: 127.0.0.1:9211, region: eu-west}\n",
            "      endpoints: []\n",
        ),
        [
            "demo.yaml:24: spec.models[1].endpoints: "
            "at least one endpoint (or a kubernetes selector) is required"
        ],
    ),
    "empty models": (
        BASE.split("  models:\n")[0] + "  models: []\n",
        ["demo.yaml:10: spec.models: at least one model is required"],
    ),
    # durations
    "duration with a spelled-out unit": (
        edit("interval: 2s", "interval: 2 sec"),
        [
            "demo.yaml:14: spec.models[0].signals.interval: "
            "invalid duration '2 sec': use a number with ms, s, m or h"
        ],
    ),
    "negative duration": (
        edit("connect_timeout: 1s", "connect_timeout: -1s"),
        [
            "demo.yaml:15: spec.models[0].connect_timeout: "
            "invalid duration '-1s': use a number with ms, s, m or h"
        ],
    ),
    "duration as a boolean": (
        edit("connect_timeout: 1s", "connect_timeout: yes"),
        [
            "demo.yaml:15: spec.models[0].connect_timeout: "
            "expected a duration such as 500ms, 2s or 1m"
        ],
    ),
    "timeout longer than the interval": (
        edit("timeout: 500ms", "timeout: 3s"),
        ["demo.yaml:14: spec.models[0].signals.timeout: must not be longer than the interval"],
    ),
    "zero scrape timeout": (
        edit("timeout: 500ms", "timeout: 0s"),
        ["demo.yaml:14: spec.models[0].signals.timeout: must be longer than 0"],
    ),
    "stale_after shorter than the interval": (
        edit("stale_after: 1m", "stale_after: 1s"),
        ["demo.yaml:14: spec.models[0].signals.stale_after: must be at least the interval"],
    ),
    # the document itself
    "yaml syntax error": (
        edit("      engine: vllm", "      engine: vllm: x"),
        ["demo.yaml:12: (document): invalid YAML: mapping values are not allowed in this context"],
    ),
    "unclosed flow mapping": (
        edit("network_budget_ms: 150}", "network_budget_ms: 150"),
        [
            "demo.yaml:14: (document): invalid YAML: did not find expected ',' or '}'; "
            "the '{' opened at line 13 is not closed"
        ],
    ),
    "duplicate yaml key": (
        edit("      engine: vllm\n", "      engine: vllm\n      engine: sglang\n"),
        [
            "demo.yaml:13: spec.models[0].engine: "
            "duplicate key: a later value would silently replace the earlier one"
        ],
    ),
    "duplicate yaml key in a flow mapping": (
        edit("{port: 10000,", "{port: 10000, port: 10001,"),
        [
            "demo.yaml:9: spec.gateway.port: "
            "duplicate key: a later value would silently replace the earlier one"
        ],
    ),
    "several documents": (
        BASE + "---\nfoo: 1\n",
        ["demo.yaml:27: (document): expected one YAML document per policy file, found several"],
    ),
    "empty file": (
        "",
        ["demo.yaml:1: (document): the file is empty: expected one InferencePolicy document"],
    ),
    "only comments": (
        "# nothing here\n\n",
        ["demo.yaml:1: (document): the file is empty: expected one InferencePolicy document"],
    ),
    "not a mapping": (
        "- apiVersion\n- kind\n",
        ["demo.yaml:1: (document): expected a mapping with apiVersion, kind, metadata, spec"],
    ),
    "wrong apiVersion": (
        edit("apiVersion: heliostat/v1", "apiVersion: heliostat/v2"),
        [
            "demo.yaml:1: apiVersion: input should be 'heliostat.dev/v1alpha1' or "
            "'heliostat/v1' (got 'heliostat/v2')"
        ],
    ),
    "wrong kind": (
        edit("kind: InferencePolicy", "kind: Policy"),
        ["demo.yaml:2: kind: input should be 'InferencePolicy' (got 'Policy')"],
    ),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(*case, id=name) for name, case in CASES.items() if case[1] is not None],
)
def test_each_problem_is_one_located_line(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_no_regions_is_reported_once_at_regions() -> None:
    lines = problems_of(CASES["no regions"][0])
    assert lines[0] == "demo.yaml:5: spec.regions: at least one region is required"
    # Every endpoint then names an unknown region, each on its own line.
    assert all("unknown region" in line for line in lines[1:])
    assert len(lines) == 1 + 7


def test_the_same_rtt_given_twice_is_accepted() -> None:
    policy = parse_policy(edit("ap-southeast: {}", "ap-southeast: {rtt_ms: {eu-west: 160}}"))
    assert policy.rtt_ms("ap-southeast", "eu-west") == 160


def test_ipv6_endpoint_address_is_accepted() -> None:
    policy = parse_policy(edit("127.0.0.1:9102", "'[::1]:9102'"))
    assert policy.spec.models[0].endpoints[1].address == "[::1]:9102"


@pytest.mark.parametrize(
    ("old", "new", "path", "line"),
    [
        ("ttft_ms: 800", "ttft_ms: on", "spec.models[0].slo.ttft_ms", 13),
        (
            "network_budget_ms: 150",
            "network_budget_ms: no",
            "spec.models[0].slo.network_budget_ms",
            13,
        ),
        (
            "      engine: vllm",
            "      thresholds: {queue: yes}",
            "spec.models[0].thresholds.queue",
            12,
        ),
        (
            "      engine: vllm",
            "      thresholds: {failures: true}",
            "spec.models[0].thresholds.failures",
            12,
        ),
        (
            "      engine: vllm",
            "      overflow: {max_share: true}",
            "spec.models[0].overflow.max_share",
            12,
        ),
        (
            "region: us-east, version: v1}\n        - {address: 127.0.0.1:9102",
            "region: us-east, slots: true}\n        - {address: 127.0.0.1:9102",
            "spec.models[0].endpoints[0].slots",
            17,
        ),
    ],
)
def test_yaml_booleans_are_not_numbers(old: str, new: str, path: str, line: int) -> None:
    """YAML 1.1 reads yes/no/on/true as booleans; they must not pass as 1 or 0."""
    (problem,) = problems_of(edit(old, new))
    assert problem.startswith(f"demo.yaml:{line}: {path}: input should be a valid ")
    assert problem.endswith("(got True)") or problem.endswith("(got False)")


def test_several_schema_problems_are_reported_at_once_one_line_each() -> None:
    text = edit("engine: vllm", "engnie: vllm")
    text = edit("port: 10000", "port: 0", text)
    text = edit("127.0.0.1:9211", "gpu:9211", text)
    lines = problems_of(text)
    assert lines == [
        "demo.yaml:9: spec.gateway.port: input should be greater than or equal to 1",
        "demo.yaml:12: spec.models[0].engnie: unknown key 'engnie' (did you mean 'engine'?)",
        "demo.yaml:26: spec.models[1].endpoints[1].address: malformed address 'gpu:9211': "
        "the host must be an IP literal (Envoy does not resolve names of EDS endpoints)",
    ]


def test_several_semantic_problems_are_reported_at_once_sorted_by_line() -> None:
    text = edit("127.0.0.1:9103, region: us-east", "127.0.0.1:9103, region: eu-wst")
    text = edit("127.0.0.1:9102", "127.0.0.1:9101", text)
    text = edit("ap-southeast: 160", "ap-southeast: -5", text)
    text = edit("- name: qwen-7b", "- name: llama-70b", text)
    lines = problems_of(text)
    assert lines == [
        "demo.yaml:7: spec.regions.eu-west.rtt_ms.ap-southeast: RTT must not be negative (got -5)",
        "demo.yaml:18: spec.models[0].endpoints[1].address: duplicate endpoint address "
        "'127.0.0.1:9101' (first at spec.models[0].endpoints[0])",
        "demo.yaml:19: spec.models[0].endpoints[2].region: "
        "unknown region 'eu-wst' (did you mean 'eu-west'?)",
        "demo.yaml:22: spec.models[1].name: duplicate model name 'llama-70b' "
        "(first at spec.models[0])",
    ]


def test_duplicate_keys_are_reported_with_schema_problems() -> None:
    text = edit("      engine: vllm\n", "      engine: vllm\n      engine: sglang\n")
    text = edit("port: 10000", "port: 0", text)
    assert problems_of(text) == [
        "demo.yaml:9: spec.gateway.port: input should be greater than or equal to 1",
        "demo.yaml:13: spec.models[0].engine: "
        "duplicate key: a later value would silently replace the earlier one",
    ]


def test_the_source_name_is_used_as_is() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(edit("port: 10000", "port: 0"), "/etc/heliostat/prod.yaml")
    assert info.value.source == "/etc/heliostat/prod.yaml"
    assert info.value.lines()[0].startswith("/etc/heliostat/prod.yaml:9: spec.gateway.port: ")


# -- files --------------------------------------------------------------------------------------


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE)
    assert load_policy(path) == parse_policy(BASE)
    assert load_policy(str(path)) == parse_policy(BASE)


def test_load_policy_reports_errors_against_the_path(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(edit("127.0.0.1:9102", "127.0.0.1"))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.lines() == [
        f"{path}:18: spec.models[0].endpoints[1].address: malformed address '127.0.0.1': "
        "expected IP:PORT such as 127.0.0.1:9101"
    ]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.lines() == [
        f"{path}:1: (document): cannot read policy file: No such file or directory"
    ]


def test_directory_is_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.lines() == [
        f"{tmp_path}:1: (document): cannot read policy file: Is a directory"
    ]


def test_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (line,) = info.value.lines()
    assert line.startswith(f"{path}:1: (document): cannot read policy file: ")
    assert "utf-8" in line


# -- durations ----------------------------------------------------------------------------------


def test_durations_in_the_file_are_seconds() -> None:
    signals = parse_policy(BASE).spec.models[0].signals
    assert signals.interval == 2.0
    assert signals.timeout == 0.5
    assert signals.stale_after == 60.0
    assert parse_policy(BASE).spec.models[0].connect_timeout == 1.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 250ms ", 0.25),
        (3, 3.0),
        (0.25, 0.25),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["2", "2 sec", "-1s", "1d", "ms", "", True, None, [1], float("inf")]
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bare_number_duration_in_the_file_is_seconds() -> None:
    policy = parse_policy(edit("connect_timeout: 1s", "connect_timeout: 3"))
    assert policy.spec.models[0].connect_timeout == 3.0


# -- the loaded model ---------------------------------------------------------------------------


def test_policy_is_frozen() -> None:
    policy = parse_policy(BASE)
    with pytest.raises(pydantic.ValidationError):
        policy.spec.gateway.port = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        policy.metadata = policy.metadata  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        policy.spec.models[0].endpoints[0].region = "eu-west"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.spec.models[0].endpoints[0] = policy.spec.models[0].endpoints[1]  # type: ignore[index]
    assert policy.spec.gateway.port == 10000


def test_rtt_is_symmetric() -> None:
    policy = parse_policy(BASE)
    regions = list(policy.spec.regions)
    for a in regions:
        assert policy.rtt_ms(a, a) == 0.0
        for b in regions:
            assert policy.rtt_ms(a, b) == policy.rtt_ms(b, a)
    assert policy.rtt_ms("us-east", "eu-west") == 80
    assert policy.rtt_ms("ap-southeast", "us-east") == 210
    assert policy.rtt_ms("ap-southeast", "eu-west") == 160
    with pytest.raises(KeyError):
        policy.rtt_ms("us-east", "mars")


# -- the CLI ------------------------------------------------------------------------------------


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text
        assert 'File "' not in text


def test_cli_validate_good_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(BASE)
    assert cli.main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok: policy 'demo', 3 regions, 2 models, 7 endpoints\n"
    assert err == ""


def test_cli_validate_repository_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(DEMO)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{DEMO}: ok: policy 'demo', 3 regions, ")
    assert err == ""


def test_cli_validate_bad_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = edit("127.0.0.1:9103, region: us-east", "127.0.0.1:9103, region: eu-wst")
    path.write_text(edit("ap-southeast: 160", "ap-southeast: -5", text))
    assert cli.main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:7: spec.regions.eu-west.rtt_ms.ap-southeast: RTT must not be negative (got -5)",
        f"{path}:19: spec.models[0].endpoints[2].region: "
        "unknown region 'eu-wst' (did you mean 'eu-west'?)",
    ]
    _no_traceback(out, err)


def test_cli_validate_checks_every_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("")
    missing = tmp_path / "missing.yaml"
    assert cli.main(["validate", str(bad), str(good), str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{good}: ok: policy 'demo', 3 regions, 2 models, 7 endpoints\n"
    assert err.splitlines() == [
        f"{bad}:1: (document): the file is empty: expected one InferencePolicy document",
        f"{missing}:1: (document): cannot read policy file: No such file or directory",
    ]
    _no_traceback(out, err)


def test_cli_validate_yaml_error_has_no_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [\n")
    assert cli.main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith(f"{path}:2: (document): invalid YAML: ")
    _no_traceback(out, err)


def test_cli_validate_without_files_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["validate"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert "usage:" in err
    _no_traceback(out, err)


def test_drain_names_endpoints_or_regions_of_the_model() -> None:
    text = edit(
        "      connect_timeout: 1s\n",
        "      connect_timeout: 1s\n"
        "      drain: {endpoints: [127.0.0.1:9101], regions: [eu-west]}\n",
    )
    model = parse_policy(text, "demo.yaml").spec.models[0]
    assert model.drained() == {"127.0.0.1:9101", "127.0.0.1:9201"}
    bad = edit(
        "      connect_timeout: 1s\n",
        "      connect_timeout: 1s\n"
        "      drain: {endpoints: [127.0.0.1:9111], regions: [eu-wst]}\n",
    )
    assert problems_of(bad) == [
        "demo.yaml:16: spec.models[0].drain.endpoints[0]: '127.0.0.1:9111' is not an endpoint "
        "of model 'llama-70b' (did you mean '127.0.0.1:9101'?)",
        "demo.yaml:16: spec.models[0].drain.regions[0]: unknown region 'eu-wst' "
        "(did you mean 'eu-west'?)",
    ]


# -- addresses are compared in one spelling -----------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("'[::ffff:127.0.0.1]:9102'", "127.0.0.1:9102"),
        ("127.0.0.1:09102", "127.0.0.1:9102"),
        ("'[2001:DB8::0001]:9102'", "[2001:db8::1]:9102"),
        ("'[::1]:9102'", "[::1]:9102"),
    ],
)
def test_endpoint_addresses_are_stored_canonical(written: str, canonical: str) -> None:
    policy = parse_policy(edit("127.0.0.1:9102", written))
    assert policy.spec.models[0].endpoints[1].address == canonical


@pytest.mark.parametrize("written", ["'[::ffff:127.0.0.1]:9101'", "127.0.0.1:09101"])
def test_two_spellings_of_one_endpoint_are_a_duplicate_at_its_line(written: str) -> None:
    assert problems_of(edit("127.0.0.1:9102", written)) == [
        "demo.yaml:18: spec.models[0].endpoints[1].address: duplicate endpoint address "
        "'127.0.0.1:9101' (first at spec.models[0].endpoints[0])"
    ]


def test_drained_endpoints_match_in_any_spelling() -> None:
    text = edit(
        "      connect_timeout: 1s\n",
        "      connect_timeout: 1s\n      drain: {endpoints: ['[::ffff:127.0.0.1]:9101']}\n",
    )
    assert parse_policy(text).spec.models[0].drained() == {"127.0.0.1:9101"}


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("'::1:9102'", "write an IPv6 host in brackets, such as [::1]:9102"),
        ("'[127.0.0.1]:9102'", "only IPv6 hosts take brackets"),
    ],
)
def test_ambiguous_address_spellings_are_refused(written: str, message: str) -> None:
    (line,) = problems_of(edit("127.0.0.1:9102", written))
    assert line.startswith("demo.yaml:18: spec.models[0].endpoints[1].address: malformed ")
    assert line.endswith(message)


# -- limits -------------------------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (limits.MAX_POLICY_BYTES + 1))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.lines() == [
        f"{path}:1: (document): the policy file is larger than 4 MiB (4,194,304 bytes), "
        "the most heliostat reads"
    ]


def test_an_endless_file_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("/dev/zero")
    (line,) = info.value.lines()
    assert "larger than 4 MiB" in line


def test_a_file_at_the_size_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    padding = limits.MAX_POLICY_BYTES - len(BASE.encode()) - 1
    path.write_text(BASE + "#" * padding + "\n")
    assert path.stat().st_size == limits.MAX_POLICY_BYTES
    assert load_policy(path).metadata.name == "demo"


def _many_endpoints(count: int) -> str:
    lines = [
        f"        - {{address: 10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}:8000, "
        "region: us-east}"
        for i in range(count)
    ]
    return edit(
        "        - {address: 127.0.0.1:9111, region: us-east}\n"
        "        - {address: 127.0.0.1:9211, region: eu-west}\n",
        "\n".join(lines) + "\n",
    )


def test_a_model_over_the_endpoint_limit_is_refused_at_its_endpoints() -> None:
    over = limits.MAX_ENDPOINTS_PER_MODEL + 1
    assert problems_of(_many_endpoints(over)) == [
        f"demo.yaml:24: spec.models[1].endpoints: {over:,} endpoints: a model may have at most "
        f"{limits.MAX_ENDPOINTS_PER_MODEL:,} (all of them travel in one EDS resource to every "
        "Envoy)"
    ]


def test_a_model_at_the_endpoint_limit_is_accepted() -> None:
    policy = parse_policy(_many_endpoints(limits.MAX_ENDPOINTS_PER_MODEL))
    assert len(policy.spec.models[1].endpoints) == limits.MAX_ENDPOINTS_PER_MODEL


def test_the_schema_itself_holds_the_endpoint_limit() -> None:
    """Policies built in code (the benchmarks) skip the loader's early check."""
    document = yaml.safe_load(BASE)
    endpoint = {"address": "10.0.0.1:8000", "region": "us-east"}
    document["spec"]["models"][1]["endpoints"] = [endpoint] * (limits.MAX_ENDPOINTS_PER_MODEL + 1)
    with pytest.raises(pydantic.ValidationError):
        Policy.model_validate(document)


def test_thousands_of_problems_are_reported_as_the_first_hundred_and_a_count() -> None:
    text = _many_endpoints(500)
    head, tail = text.split("    - name: qwen-7b\n")
    lines = problems_of(
        head + "    - name: qwen-7b\n" + tail.replace("region: us-east}", "region: mars}")
    )
    assert len(lines) == problems.MAX_REPORTED + 1
    assert lines[0] == "demo.yaml:25: spec.models[1].endpoints[0].region: unknown region 'mars'"
    assert lines[-2] == "demo.yaml:124: spec.models[1].endpoints[99].region: unknown region 'mars'"
    assert lines[-1] == "demo.yaml:125: (document): 400 more problems not shown"


# -- numbers and durations within what Envoy accepts --------------------------------------------


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (
            "0ms",
            "must be at least 1ms (got 0s): Envoy requires a positive duration and counts it "
            "in milliseconds",
        ),
        (
            "0.5ms",
            "must be at least 1ms (got 0.5ms): Envoy requires a positive duration and counts "
            "it in milliseconds",
        ),
        (
            "99999999999999999999h",
            "duration '99999999999999999999h' is too long: at most 9223372035s (about 292 "
            "years, the longest duration Envoy accepts)",
        ),
        (
            "9223372036s",
            "duration '9223372036s' is too long: at most 9223372035s (about 292 years, the "
            "longest duration Envoy accepts)",
        ),
    ],
)
def test_connect_timeout_must_be_a_duration_envoy_accepts(written: str, message: str) -> None:
    assert problems_of(edit("connect_timeout: 1s", f"connect_timeout: {written}")) == [
        f"demo.yaml:15: spec.models[0].connect_timeout: {message}"
    ]


@pytest.mark.parametrize("written", ["1ms", "9223372035s", "153722867m"])
def test_connect_timeout_at_envoys_bounds_is_accepted(written: str) -> None:
    parse_policy(edit("connect_timeout: 1s", f"connect_timeout: {written}"))


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("outlier_detection: {interval: 0s}", "outlier_detection.interval: must be at least 1ms"),
        (
            "outlier_detection: {base_ejection_time: 0ms}",
            "outlier_detection.base_ejection_time: must be at least 1ms",
        ),
        ("retries: {per_try_timeout: 0.5ms}", "retries.per_try_timeout: must be at least 1ms"),
        (
            "retries: {num_retries: 101}",
            "retries.num_retries: input should be less than or equal to 100",
        ),
        (
            "circuit_breakers: {batch: {max_requests: 4294967296}}",
            "circuit_breakers.batch.max_requests: input should be less than or equal to 4294967295",
        ),
        (
            "outlier_detection: {consecutive_5xx: 4294967296}",
            "outlier_detection.consecutive_5xx: input should be less than or equal to 4294967295",
        ),
    ],
)
def test_values_beyond_envoys_fields_are_refused(section: str, problem: str) -> None:
    (line,) = problems_of(edit("      engine: vllm\n", f"      engine: vllm\n      {section}\n"))
    assert line.startswith(f"demo.yaml:13: spec.models[0].{problem}")


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("0.5", "greater than or equal to 1"),
        ("1.0e+300", "less than or equal to 4611686017500"),
    ],
)
def test_ttft_must_keep_the_default_per_try_timeout_a_duration_envoy_accepts(
    written: str, message: str
) -> None:
    """The streamed per-try timeout defaults to 2 x ttft_ms."""
    assert problems_of(edit("ttft_ms: 800", f"ttft_ms: {written}")) == [
        f"demo.yaml:13: spec.models[0].slo.ttft_ms: input should be {message}"
    ]


def test_per_try_timeout_zero_still_turns_it_off() -> None:
    policy = parse_policy(
        edit("connect_timeout: 1s", "connect_timeout: 1s\n      retries: {per_try_timeout: 0s}")
    )
    assert policy.spec.models[0].retries.per_try_timeout == 0
