"""The fallback model without sockets: its validation (each problem at its line) and its
translation (route metadata for the Lua filter, the served-model header, tenants)."""

from __future__ import annotations

import pytest

from heliostat.policy import PolicyError, parse_policy

# The line numbers below refer to this text; keep it stable.
POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: fallback}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}
    eu-west: {rtt_ms: {ap-southeast: 160}}
    ap-southeast: {}
  tenants:
    - {name: acme, header: x-tenant, value: acme, regions: [eu-west]}
    - {name: zeta, header: x-tenant, value: zeta, regions: [ap-southeast]}
  models:
    - name: llama-70b
      affinity: {header: x-session-id, prefix_chars: 100}
      fallback: {model: llama-8b, max_share: 0.5}
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
        - {address: 127.0.0.1:9201, region: eu-west}
        - {address: 127.0.0.1:9301, region: ap-southeast}
    - name: llama-8b
      versions: {v1: 80, v2: 20}
      endpoints:
        - {address: 127.0.0.1:9111, region: us-east, version: v1}
        - {address: 127.0.0.1:9211, region: eu-west, version: v2}
    - name: qwen-7b
      endpoints:
        - {address: 127.0.0.1:9121, region: us-east}
"""


def edit(old: str, new: str, text: str = POLICY) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return info.value.lines()


# -- the policy ---------------------------------------------------------------------------------


def test_the_fallback_section_loads_with_its_default_share() -> None:
    policy = parse_policy(POLICY)
    llama = policy.model("llama-70b")
    assert llama is not None and llama.fallback is not None
    assert (llama.fallback.model, llama.fallback.max_share) == ("llama-8b", 0.5)
    default = parse_policy(edit("{model: llama-8b, max_share: 0.5}", "{model: llama-8b}"))
    found = default.model("llama-70b")
    assert found is not None and found.fallback is not None and found.fallback.max_share == 0.5
    assert parse_policy(edit("max_share: 0.5", "max_share: 1")).spec.models[0].fallback


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "message"),
    [
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8c, max_share: 0.5}",
            15,
            "spec.models[0].fallback.model",
            "unknown model 'llama-8c' (did you mean 'llama-8b'?); the fallback must be another "
            "model of this policy (llama-8b, qwen-7b)",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-70b}",
            15,
            "spec.models[0].fallback.model",
            "model 'llama-70b' cannot fall back to itself",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, max_share: 0}",
            15,
            "spec.models[0].fallback.max_share",
            "input should be greater than 0",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, max_share: 1.5}",
            15,
            "spec.models[0].fallback.max_share",
            "input should be less than or equal to 1",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, max_share: '0.5'}",
            15,
            "spec.models[0].fallback.max_share",
            "input should be a valid number",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, share: 0.5}",
            15,
            "spec.models[0].fallback.share",
            "unknown key 'share' (did you mean 'max_share'?)",
        ),
        (
            "    - name: llama-8b\n",
            "    - name: llama-8b\n      fallback: {model: llama-70b}\n",
            15,
            "spec.models[0].fallback.model",
            "fallback cycle llama-70b -> llama-8b -> llama-70b",
        ),
    ],
)
def test_each_fallback_problem_is_reported_at_its_line(
    old: str, new: str, line: int, path: str, message: str
) -> None:
    lines = problems_of(edit(old, new))
    assert f"p.yaml:{line}: {path}: {message}" in "\n".join(lines), lines


def test_a_cycle_through_three_models_is_reported_once_and_a_chain_is_fine() -> None:
    chain = edit(
        "    - name: llama-8b\n", "    - name: llama-8b\n      fallback: {model: qwen-7b}\n"
    )
    assert parse_policy(chain).model("llama-8b") is not None  # a -> b -> c: no cycle
    cycle = edit(
        "    - name: qwen-7b\n", "    - name: qwen-7b\n      fallback: {model: llama-70b}\n", chain
    )
    lines = problems_of(cycle)
    assert len(lines) == 1, lines
    assert "llama-70b -> llama-8b -> qwen-7b -> llama-70b" in lines[0]
