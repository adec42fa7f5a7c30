"""Scenario files: the shipped ones load, and mistakes are reported at FILE:LINE, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.routing import SCENARIOS
from bench.scenario import ScenarioError, load_all, load_scenario, parse_scenario, scenario_files

GOOD = """\
name: tiny-edge
regions:
  na: {rtt_ms: {eu: 90, sa: 120}}
  eu: {rtt_ms: {sa: 190}}
  sa: {}
replicas:
  na: {count: 2, max_num_seqs: 4, speed: 1.5, num_gpu_blocks: 512}
  eu:
    - {count: 1, speed: 1.0}
    - {count: 1, speed: 3.0}
  sa: {count: 0}
slo: {ttft_ms: 600, network_budget_ms: 150}
workload: chat
phases:
  - {seconds: 15, load: {na: 0.5, eu: 0.5}, rps: {sa: 2}}
  - {seconds: 10, load: {na: 1.3, eu: 1.3}, ramp: true}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "s.yaml")
    return caught.value.lines()


def test_a_scenario_knows_its_replicas_edges_and_budget() -> None:
    scenario = parse_scenario(GOOD)
    assert [scenario.count(r) for r in ("na", "eu", "sa")] == [2, 2, 0]
    assert scenario.is_edge("sa") and not scenario.is_edge("eu")
    assert [k.get("speed") for k in scenario.knobs("eu")] == [1.0, 3.0]
    assert scenario.knobs("na")[0] == {"max_num_seqs": 4, "speed": 1.5, "num_gpu_blocks": 512}
    assert scenario.rtt_ms("sa", "na") == 120 and scenario.rtt_ms("eu", "sa") == 190
    assert scenario.within_budget("sa") == ["sa", "na"]  # eu is 190 ms away
    assert scenario.seconds == 25


def test_every_shipped_scenario_loads_and_the_names_are_distinct() -> None:
    files = scenario_files(SCENARIOS)
    names = {p.stem for p in files}
    assert {"chat", "shared_prefix", "regional_surge", "flash_crowd", "mixed_gpus"} <= names
    loaded = load_all(files)
    assert [s.name for s in loaded] == [p.stem for p in files]
    assert any(s.is_edge(r) for s in loaded for r in s.regions)  # an edge region ships


def test_mistakes_are_reported_at_their_line_with_their_path() -> None:
    text = (
        GOOD.replace("ttft_ms: 600", "ttft_ms: -1")
        .replace("workload: chat", "workload: chats")
        .replace("{count: 1, speed: 3.0}", "{count: 1, sped: 3.0}")
    )
    found = problems(text)
    assert any(line.startswith("s.yaml:12: slo.ttft_ms:") for line in found), found
    assert any(line.startswith("s.yaml:13: workload:") for line in found), found
    assert any(
        line.startswith("s.yaml:10: replicas.eu[1].sped: unknown key") and "'speed'" in line
        for line in found
    ), found


def test_cross_references_are_checked_and_located() -> None:
    text = GOOD.replace("rps: {sa: 2}", "rps: {sa: 2, euu: 1}").replace(
        "load: {na: 1.3, eu: 1.3}, ramp", "load: {na: 1.3, eu: 1.3, sa: 0.5}, ramp"
    )
    found = problems(text)
    assert "s.yaml:15: phases[0].rps.euu: unknown region 'euu' (did you mean 'eu'?)" in found
    assert any(
        line.startswith("s.yaml:16: phases[1].load.sa:") and "edge region" in line for line in found
    ), found


def test_regions_follow_the_policys_rtt_rules() -> None:
    found = problems(GOOD.replace("eu: {rtt_ms: {sa: 190}}", "eu: {rtt_ms: {sa: 190, na: 80}}"))
    assert any(
        line.startswith("s.yaml:4: regions.eu.rtt_ms.na: RTT is symmetric") for line in found
    )
    found = problems(GOOD.replace("eu: {rtt_ms: {sa: 190}}", "eu: {}"))
    assert any("missing RTT between 'eu' and 'sa'" in line for line in found), found


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("  sa: {count: 0}\n", ""), "no replicas given for region 'sa'"),
        (("  - {seconds: 15, load", "  - {seconds: 15, ramp: true, load"), "no earlier rate"),
        (("rps: {sa: 2}", "rps: {sa: 2, na: 3}"), "'na' is given both load and rps"),
        (("seconds: 15", "seconds: 0"), "phases[0].seconds"),
        (("count: 2, max", "count: yes, max"), "s.yaml:7: replicas.na.count: input should be"),
    ],
)
def test_each_rule(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(expected in line for line in found), found


def test_nothing_offered_and_no_replicas_anywhere_are_refused() -> None:
    text = GOOD.replace("count: 2,", "count: 0,").replace("count: 1,", "count: 0,")
    text = text.replace("load: {na: 0.5, eu: 0.5}, rps: {sa: 2}", "rps: {sa: 0}")
    text = text.replace("load: {na: 1.3, eu: 1.3}, ramp: true", "rps: {}")
    found = problems(text)
    assert any("no region has replicas" in line for line in found), found
    assert any("no phase offers any load" in line for line in found), found


def test_unreadable_and_empty_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "absent.yaml")
    assert problems("") == ["s.yaml:1: (document): the file is empty: expected one scenario"]
    assert problems("a: [\n") and problems("a: [\n")[0].startswith("s.yaml:")


def test_load_all_reports_every_file_and_duplicate_names(tmp_path: Path) -> None:
    good, twin, bad = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    good.write_text(GOOD)
    twin.write_text("# the same name again\n" + GOOD)
    bad.write_text(GOOD.replace("workload: chat", "workload: 3"))
    with pytest.raises(ValueError) as caught:
        load_all([good, twin, bad])
    message = str(caught.value)
    assert f"{twin}:2: name: 'tiny-edge' is taken by {good}" in message
    assert f"{bad}:13: workload:" in message
