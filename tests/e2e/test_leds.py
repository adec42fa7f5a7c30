"""LEDS through a real Envoy: a delta gateway takes its endpoints as LbEndpoint resources.

One endpoint's change (a drain, a new weight and health) must reach the delta Envoy as one
LEDS update and nothing else: while the node holds its assignments under a pending version
(its endpoints were not still for serve's --leds-settle-after, 30 s by default), Envoy applies
the endpoint with no assignment re-sent at all (heliostat.xds.protocol.held,
heliostat.xds.grpc.settle), and requests must follow it.
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
    idle_vllm_metrics,
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


def _pending(heliostat: Heliostat, node_id: str) -> int:
    """In sync, the number of assignments the node holds under a pending version (0 when
    not in sync): they settle only once its endpoints were still for 30 s."""
    node = heliostat.node(node_id)
    if not node or not node["in_sync"]:
        return 0
    return sum(t.get("settling") or 0 for t in node["types"].values())


def _idle_upstream() -> Upstream:
    """An eu-west upstream that answers scrapes as an idle vLLM (healthy, nothing queued)."""
    return Upstream(free_port(), "eu-west", metrics=idle_vllm_metrics(MODEL)).start()


def test_a_drain_reaches_a_delta_envoy_as_leds_alone_and_requests_follow(
    tmp_path: Path, processes: list[Process]
) -> None:
    # Both answer scrapes as an idle vLLM: healthy, so a drain is the only change.
    kept = _idle_upstream()
    drained = _idle_upstream()
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
        wait_until(lambda: _pending(heliostat, "gw-eu") > 0, message="node in sync, pending")
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
        seen = len(drained.seen)
        replies = [request(gateway) for _ in range(10)]
        assert [r.status for r in replies] == [200] * 10
        assert served_by(replies) == {kept.address: 10}
        assert len(drained.seen) == seen
        after = wait_until(
            lambda: _pending(heliostat, "gw-eu") > 0 and _responses(heliostat, "gw-eu"),
            message="node in sync after the drain",
        )
        # Envoy took the endpoint's LEDS update alone: no assignment went with it (they stay
        # pending), nothing else moved.
        assert after["LEDS"] > before["LEDS"]
        assert {t: n for t, n in after.items() if t != "LEDS"} == {
            t: n for t, n in before.items() if t != "LEDS"
        }
    finally:
        kept.stop()
        drained.stop()


def test_a_delta_envoy_is_sent_nothing_again_after_heliostat_stops_cleanly_and_restarts(
    tmp_path: Path, processes: list[Process]
) -> None:
    # Within serve's 30 s quiet the node's assignments stay pending, and a reconnect would
    # have every endpoint sent again; a clean stop (SIGTERM) settles them first.
    upstream = _idle_upstream()
    try:
        gateway = free_port()
        policy = tmp_path / "policy.yaml"
        endpoints = [(upstream.address, "eu-west")]
        write_policy(policy, policy_document(gateway_port=gateway, endpoints=endpoints))
        heliostat = Heliostat(policy, tmp_path)
        processes.append(heliostat)
        heliostat.start()
        envoy = Envoy(tmp_path, heliostat, node_id="gw-eu", region="eu-west", delta=True)
        processes.append(envoy)
        envoy.start()
        wait_until(lambda: len(envoy.hosts(MODEL)) == 1, message="the endpoint in /clusters")
        wait_until(lambda: _pending(heliostat, "gw-eu") > 0, message="node in sync, pending")
        asked = set(_responses(heliostat, "gw-eu"))

        heliostat.stop()  # SIGTERM
        restarted = Heliostat(policy, tmp_path, xds_port=heliostat.xds_port)
        processes.append(restarted)
        restarted.start()
        # Re-joined: in sync on every type it asked for before (in sync on CDS alone, just
        # after its first request, it is not yet, and only CDS was compared below).
        node = wait_until(
            lambda: (
                (n := restarted.node("gw-eu")) and n["in_sync"] and set(n["types"]) >= asked and n
            ),
            timeout=30,
            message="envoy re-joined the restarted heliostat",
        )
        # Envoy listed its assignments under their own versions: the restarted heliostat
        # took its endpoints as held and sent nothing at all on the new stream.
        assert not any(t.get("settling") for t in node["types"].values())
        assert _responses(restarted, "gw-eu") == dict.fromkeys(node["types"], 0)
        assert len(envoy.hosts(MODEL)) == 1
        assert {r.status for r in (request(gateway) for _ in range(4))} == {200}
    finally:
        upstream.stop()
