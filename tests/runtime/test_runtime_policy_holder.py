"""The publisher is the one holder of the policy in force; the control loop reads it there."""

from __future__ import annotations

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from prometheus_client import CollectorRegistry

from heliostat.balance import static_views
from heliostat.policy import Policy, parse_policy
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.types import TypeUrl


def _policy(name: str, port: int) -> Policy:
    return parse_policy(
        "apiVersion: heliostat/v1\n"
        "kind: InferencePolicy\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        "  regions: {us-east: {}}\n"
        "  gateway: {port: 10000, address: 127.0.0.1}\n"
        "  models:\n"
        "    - name: llama\n"
        "      endpoints:\n"
        f"        - {{address: 127.0.0.1:{port}, region: us-east}}\n"
    )


def _wired(policy: Policy) -> tuple[Publisher, ControlLoop]:
    publisher = Publisher(SnapshotCache(), Inputs(policy, static_views(policy)))
    publisher.snapshot_for(NodeGroup(Role.GATEWAY, "us-east"), "gw-1")
    return publisher, ControlLoop(publisher, dict, CollectorRegistry(), clock=lambda: 1000.0)


def _endpoint_port(publisher: Publisher) -> int:
    snapshot = publisher.snapshot_for(NodeGroup(Role.GATEWAY, "us-east"), "gw-1")
    message = snapshot.resources(TypeUrl.ENDPOINT)["llama"].message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    port: int = message.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value
    return port


def test_a_new_policy_is_held_once_and_published() -> None:
    publisher, loop = _wired(_policy("old", 9101))
    new = _policy("new", 9102)
    assert loop.set_policy(new)  # the gateway's group changed
    assert loop.policy is new
    assert publisher.inputs.policy is new
    assert _endpoint_port(publisher) == 9102
    loop.tick()  # later ticks keep the policy in force
    assert publisher.inputs.policy is new


def test_a_policy_the_law_refuses_leaves_the_last_one_in_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = _policy("old", 9101)
    publisher, loop = _wired(old)

    def refuse(*_args: object) -> None:
        raise ValueError("refused")

    monkeypatch.setattr("heliostat.runtime.control.compute", refuse)
    with pytest.raises(ValueError, match="refused"):
        loop.set_policy(_policy("new", 9102))
    assert loop.policy is old
    assert _endpoint_port(publisher) == 9101
