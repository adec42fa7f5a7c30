"""A policy with every bounded value at its limit is accepted by a real Envoy.

The unit tests check translation against the validation rules in Envoy's protos; Envoy also
validates in C++ (durations it turns into milliseconds, timers it arms). Here a real Envoy
receives the policies with every field at its lowest and at its highest allowed value, ACKs
every resource, and, at the highest, answers requests through them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import (
    Envoy,
    Heliostat,
    Upstream,
    free_port,
    request,
    wait_until,
    write_policy,
)
from tests.xds.translate.bounds_policies import bounds_policy

pytestmark = pytest.mark.envoy


@pytest.mark.parametrize("high", [False, True], ids=["lowest", "highest"])
def test_envoy_acks_a_policy_at_its_bounds(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
    high: bool,
    mode: str,
) -> None:
    regions = ("us-east", "eu-west", "ap-southeast")
    served = {region: [upstreams(region), upstreams(region)] for region in regions}
    addresses = {region: [u.address for u in listed] for region, listed in served.items()}
    gateway = free_port()
    policy = tmp_path / "policy.yaml"
    write_policy(policy, bounds_policy(high, addresses, gateway_port=gateway))
    heliostat = start_heliostat(policy)
    envoy = start_envoy(heliostat, "gw-eu", "eu-west")

    node = wait_until(
        lambda: (n := heliostat.node("gw-eu")) and n["in_sync"] and n,
        timeout=20,
        message=f"envoy in sync (log: {envoy.log_path})",
    )
    # A delta node takes each endpoint as its own LEDS resource; SotW has plain EDS.
    leds = {"LEDS"} if mode == "delta" else set()
    assert set(node["types"]) == {"CDS", "EDS", "LDS", "RDS"} | leds
    assert all(status["last_nack"] is None for status in node["types"].values()), node
    assert heliostat.state()["snapshot_error"] is None
    wait_until(lambda: len(envoy.hosts("llama-70b")) == 6, message="every endpoint in Envoy")

    if high:  # at the lowest, every circuit breaker is 0 and Envoy refuses by design
        models = ("llama-70b", "qwen-7b") * 3
        replies = [request(gateway, model=model) for model in models]
        assert [r.status for r in replies] == [200] * 6
        answered = [(model, r.json()["region"]) for model, r in zip(models, replies, strict=True)]
        assert all(region == "eu-west" for _, region in answered), (answered, heliostat.log_path)
    else:
        reply = request(gateway)
        assert reply.status == 503 and reply.headers.get("x-envoy-overloaded") == "true"
        assert reply.headers.get("retry-after", "").isdigit()  # the client backs off
    assert envoy.running
