"""Scenario files: problems at FILE:LINE like the policy's, and `heliostat simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heliostat.cli import main
from heliostat.planet.loader import ScenarioError, parse_scenario

GOOD = """\
name: tiny
duration: 2m
step: 1s
model:
  engine: {max_num_seqs: 32, speed: 8}
regions:
  a: {rtt_ms: {b: 40}, replicas: 2, gateways: 2}
  b: {replicas: 1, gateways: 2}
demand:
  a: {curve: [CURVE]}
  b: {peak_rps: 10, peak_hour: 0, trough: 0.5}
events:
  - {kind: region_loss, region: b, at: 30s, until: 90s}
policy:
  signals: {interval: 2s}
""".replace("CURVE", ", ".join(["15"] * 24))


def test_a_good_scenario_loads() -> None:
    scenario = parse_scenario(GOOD, "tiny.yaml")
    assert scenario.regions["a"].replicas == 2
    assert scenario.events[0].at == 30.0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("replicas: 1, gateways: 2}", "replicas: 1, gatways: 2}"),
            "tiny.yaml:8: regions.b.gatways: unknown key 'gatways' (did you mean 'gateways'?)",
        ),
        (
            ("region: b, at: 30s", "region: c, at: 30s"),
            "tiny.yaml:13: events[0].region: unknown region 'c'",
        ),
        (
            ("signals: {interval: 2s}", "signals: {interval: 2s}\n  thresholds: {queue: -1}"),
            "tiny.yaml:16: policy.thresholds.queue: input should be greater than 0",
        ),
        (
            ("{rtt_ms: {b: 40}, ", "{"),
            "tiny.yaml:7: regions.a: missing RTT between 'a' and 'b' (give rtt_ms on either side)",
        ),
        (
            ("signals: {interval: 2s}", "signals: {interval: 2s}\n  endpoints: []"),
            "tiny.yaml:16: policy.endpoints: 'endpoints' is set by the scenario; remove it here",
        ),
        (
            ("b: {peak_rps: 10,", "b: {curve: [1, 2], peak_rps: 10,"),
            "tiny.yaml:11: demand.b: give either `curve` (24 hourly values) or `peak_rps`",
        ),
    ],
)
def test_every_problem_is_reported_at_its_line(edit: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "tiny.yaml")
    assert expected in caught.value.lines(), caught.value.lines()


def test_simulate_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(GOOD)
    assert main(["simulate", str(scenario), "--report", str(tmp_path / "out"), "--quiet"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["policies"]) == {"heliostat", "nearest_region", "least_request", "picker"}
    for summary in report["policies"].values():
        for key in (
            "slo_attainment",
            "goodput_rps",
            "refused_share",
            "ttft_p99_ms",
            "gpu_hours",
            "gpu_utilisation",
        ):
            assert key in summary
    assert "recovery_ticks" in report and "wall_s" in report
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| heliostat |" in markdown
    assert "heliostat" in capsys.readouterr().out


def test_simulate_refuses_a_bad_scenario_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(GOOD.replace("region: b, at", "region: bb, at"))
    assert main(["simulate", str(scenario)]) == 1
    err = capsys.readouterr().err
    assert f"{scenario}:13: events[0].region: unknown region 'bb'" in err
    assert "Traceback" not in err
