"""The policy's `signals` section for engines: default paths, path checks, LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from heliostat import cli
from heliostat.policy import PolicyError, parse_policy
from heliostat.signals import targets_from_policy
from heliostat.signals.from_policy import policy_notes

POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {{name: engines}}
spec:
  regions: {{eu: {{}}}}
  models:
    - name: llama
      engine: trtllm
      endpoints: [{{address: 127.0.0.1:9001, region: eu}}]
    - name: qwen
      engine: trtllm
      signals: {{metrics_path: {path}}}
      endpoints: [{{address: 127.0.0.1:9002, region: eu}}]
    - name: alpaca
      engine: {lora_engine}
      signals: {{base_model: meta-llama/Llama-3.1-8B-Instruct}}
      endpoints: [{{address: 127.0.0.1:9003, region: eu}}]
"""


def text(path: str = "/stats/prom", lora_engine: str = "vllm") -> str:
    return POLICY.format(path=path, lora_engine=lora_engine)


def test_each_engine_gets_its_own_path_unless_the_policy_says() -> None:
    targets = {t.model: t for t in targets_from_policy(parse_policy(text()))}
    assert targets["llama"].url == "http://127.0.0.1:9001/prometheus/metrics"
    assert targets["qwen"].url == "http://127.0.0.1:9002/stats/prom"
    assert targets["alpaca"].url == "http://127.0.0.1:9003/metrics"


def test_metrics_path_must_be_a_path() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text(path="prometheus/metrics"), "p.yaml")
    (line,) = caught.value.lines()
    assert line.startswith("p.yaml:12: spec.models[1].signals.metrics_path: ")
    assert "must start with '/'" in line


def test_lora_adapter_reads_its_base_models_series() -> None:
    alpaca = next(t for t in targets_from_policy(parse_policy(text())) if t.model == "alpaca")
    assert (alpaca.selector, alpaca.lora) == ("meta-llama/Llama-3.1-8B-Instruct", True)
    (note,) = policy_notes(parse_policy(text()))
    assert note.startswith("spec.models[2].signals.base_model: 'alpaca' is a LoRA adapter of")
    assert "the base model's" in note and "vllm:lora_requests_info" in note
    (sglang,) = policy_notes(parse_policy(text(lora_engine="sglang")))
    assert "sglang reports nothing per adapter" in sglang


def test_validate_says_the_signal_is_the_base_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text())
    assert cli.main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}: ok: policy 'engines'")
    assert out[1].startswith(f"{path}: note: spec.models[2].signals.base_model: 'alpaca'")
