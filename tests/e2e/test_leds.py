"""LEDS through a real Envoy: a delta gateway takes its endpoints as LbEndpoint resources.

One endpoint's change (a drain, a new weight and health) must reach the delta Envoy as an
LEDS update, with no endpoint in the assignments re-sent around it (they only change version,
heliostat.xds.protocol.held), and requests must follow it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    Upstream,
    free_port,
    policy_document,
    request,
    served_by,
    wait_until,
    write_policy,
)

pytestmark = pytest.mark.envoy

MODEL = "llama-70b"


def _responses(heliostat: Heliostat, node_id: str) -> dict[str, int]:
    node = heliostat.node(node_id)
    assert node is not None
    return {t: s["responses"] for t, s in node["types"].items()}


def _settled(heliostat: Heliostat, node_id: str) -> bool:
    """In sync, with no assignment still under a pending version: the settling responses go
    once the fan-out is done (heliostat.xds.grpc.settle), so counting responses before that
    would race them."""
    node = heliostat.node(node_id)
    if not node or not node["in_sync"]:
        return False
    return not any(t.get("settling") for t in node["types"].values())


def test_a_drain_reaches_a_delta_envoy_as_one_leds_update_and_requests_follow(
    tmp_path: Path, processes: list[Process]
) -> None:
    kept, drained = Upstream(free_port(), "eu-west").start(), Upstream(free_port(), "eu-west")
    drained.start()
    try:
        gateway = free_port()
        policy = tmp_path / "policy.yaml"
        endpoints = [(kept.address, "eu-west"), (drained.address, "eu-west")]
        write_policy(policy, policy_document(gateway_port=gateway, endpoints=endpoints))
        heliostat = Heliostat(policy, tmp_path)  # LEDS is serve's default for delta nodes
        processes.append(heliostat)
        heliostat.start()
        envoy = Envoy(tmp_path, heliostat, node_id="gw-eu", region="eu-west", delta=True)
        processes.append(envoy)
        envoy.start()

        wait_until(lambda: len(envoy.hosts(MODEL)) == 2, message="both endpoints in /clusters")
        wait_until(lambda: _settled(heliostat, "gw-eu"), message="node in sync and settled")
        # The endpoints came as LEDS resources (Envoy's config_dump shows the assignment
        # with them merged in, so heliostat's count of what it sent is the witness).
        before = _responses(heliostat, "gw-eu")
        assert before["LEDS"] >= 1
        assert {r.status for r in (request(gateway) for _ in range(6))} == {200}

        done = subprocess.run(
            [
                *(sys.executable, "-m", "heliostat", "drain", "--model", MODEL),
                *("--endpoint", drained.address),
                *("--admin-address", f"{LOCALHOST}:{heliostat.admin_port}"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: "eds_status_draining" in envoy.hosts(MODEL)[drained.address]["health_flags"],
            message="Envoy sees the endpoint draining",
        )
        after = wait_until(
            lambda: _settled(heliostat, "gw-eu") and _responses(heliostat, "gw-eu"),
            message="node in sync and settled after the drain",
        )
        # The endpoint went as LEDS; the assignments (~100 bytes here, no endpoint in them)
        # went under a pending version before it and under their own once the fan-out was
        # done (heliostat.xds.protocol.held, xds.grpc.settle), at most twice per LEDS push;
        # nothing else moved.
        pushes = after["LEDS"] - before["LEDS"]
        assert pushes >= 1
        assert before["EDS"] < after["EDS"] <= before["EDS"] + 2 * pushes
        assert {t: n for t, n in after.items() if t not in ("LEDS", "EDS")} == {
            t: n for t, n in before.items() if t not in ("LEDS", "EDS")
        }
        seen = len(drained.seen)
        replies = [request(gateway) for _ in range(10)]
        assert [r.status for r in replies] == [200] * 10
        assert served_by(replies) == {kept.address: 10}
        assert len(drained.seen) == seen
    finally:
        kept.stop()
        drained.stop()
