"""Smoke test: the routing benchmark runs a scenario end to end at its tiny size, through real
Envoys, with an edge region, replicas of two speeds and a ramp.

It proves every policy's gateways accept their configuration and carry requests (the edge
region's too), and that the result has the shape the report reads. It asserts no timing
(benchmarks report).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import routing
from bench.__main__ import main
from bench.routing_measure import FIELDS

SCENARIO = """\
name: smoke
regions:
  na: {rtt_ms: {eu: 80, edge: 60}}
  eu: {rtt_ms: {edge: 150}}
  edge: {}
replicas:
  na:
    - {count: 1, max_num_seqs: 4, speed: 1.0, num_gpu_blocks: 512}
    - {count: 1, max_num_seqs: 4, speed: 3.0, num_gpu_blocks: 512}
  eu: {count: 1, max_num_seqs: 4, speed: 1.5, num_gpu_blocks: 512}
  edge: {count: 0}
slo: {ttft_ms: 500, network_budget_ms: 170}
workload: chat
phases:
  - {seconds: 24, load: {na: 0.5, eu: 0.5}, rps: {edge: 4}}
  - {seconds: 24, load: {na: 0.9, eu: 0.9}, rps: {edge: 8}, ramp: true}
"""

RATES = ("slo_attainment", "prefix_hit_rate", "cross_region_share")


@pytest.mark.envoy
def test_every_policy_is_measured_on_a_scenario_at_tiny_size(tmp_path: Path) -> None:
    path = tmp_path / "smoke.yaml"
    path.write_text(SCENARIO)
    result = routing.run("tiny", tmp_path / "work", scenarios=[path])

    by_policy = result["workloads"]["smoke"]
    assert set(by_policy) == set(routing.POLICIES)
    for policy, entry in by_policy.items():
        assert set(FIELDS) <= set(entry), policy
        for field in FIELDS:
            value = entry[field]
            assert isinstance(value, int | float) and not isinstance(value, bool), policy
        assert entry["requests"] > 0, policy
        assert entry["errors"] + entry["refused"] <= max(1, entry["requests"] // 10), entry
        for rate in RATES:
            assert 0.0 <= entry[rate] <= 1.0, (policy, rate, entry[rate])
        # the edge region's users were served, and necessarily elsewhere
        edge = entry["by_origin"]["edge"]
        assert edge["requests"] > 0 and edge["cross_region_share"] == 1.0, (policy, edge)
        assert entry["orca_reports"] == 0  # streams: vLLM (and the simulator) send no ORCA
    # Same work for every policy: the same number of requests.
    assert len({entry["requests"] for entry in by_policy.values()}) == 1
    details = result["details"]["smoke"]
    assert details["picker"]["picker"]["decisions"] == by_policy["picker"]["requests"]
    # heliostat's shares were sampled, the edge view's included, and all of it elsewhere
    shares = by_policy["heliostat"]["shares"]
    assert shares and all(set(s["shares"]) == {"na", "eu", "edge"} for s in shares)
    assert all("edge" not in s["shares"]["edge"] for s in shares)
    assert len(by_policy["heliostat"]["weight_reversals"]) == 3  # every replica
    assert set(details["envoy_orca"]["load_aware_locality"]) == {"na", "eu", "edge"}
    setup = result["setup"]["scenarios"]["smoke"]
    assert setup["fleet"]["regions"]["edge"]["edge"] is True
    assert [p["ramp"] for p in setup["workload"]["phases"]] == [False, True]
    assert result["targets"] and {c["scenario"] for c in result["targets"]} == {"smoke"}
    text = routing.summary(result)
    assert "smoke" in text and "targets" in text


def test_the_cli_refuses_a_bad_scenario_file_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SCENARIO.replace("edge: {count: 0}", "edge: {count: -1}"))
    code = main(["--tiny", "--only", "routing", "--scenario", str(path), "--out", str(tmp_path)])
    assert code == 2
    assert f"{path}:11: replicas.edge.count:" in capsys.readouterr().err
    assert not (tmp_path / "routing.json").exists()


@pytest.mark.envoy
def test_the_cli_runs_only_the_policies_named(tmp_path: Path) -> None:
    """`--policy heliostat` measures heliostat alone (no static gateway started); its
    checks against the baselines it left out read n/a, never met."""
    path = tmp_path / "smoke.yaml"
    path.write_text(SCENARIO)
    out = tmp_path / "out"
    argv = ["--tiny", "--only", "routing", "--scenario", str(path), "--policy", "heliostat"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "routing.json").read_text())
    assert set(result["workloads"]["smoke"]) == {"heliostat"}
    assert result["workloads"]["smoke"]["heliostat"]["requests"] > 0
    assert result["setup"]["policy_order"] == ["heliostat"]
    against = [c for c in result["targets"] if "baseline" in c["target"]]
    assert against and all(c["verdict"] == "n/a" for c in against)


def test_the_cli_refuses_an_unknown_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--tiny", "--only", "routing", "--policy", "heliostat", "nginx"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nginx'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown routing policies: nginx"):
        routing.run("tiny", tmp_path, policies=["nginx"])
