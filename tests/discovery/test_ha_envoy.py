"""Two heliostat replicas, no leader, one real Envoy that loses the one it streams from.

Both replicas follow the same policy and the same EndpointSlices (a local API server); each
computes its snapshots on its own. The Envoy's ADS cluster lists both, as a headless Service
would. Under steady traffic the replica Envoy streams from is killed: Envoy reconnects to the
other, is sent nothing (same content, same version hashes), and no request fails.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from heliostat.lab.processes import (
    LOCALHOST,
    EnvoyProcess,
    Heliostat,
    Process,
    free_port,
    wait_until,
    write_policy,
)
from tests.discovery.apiserver import FakeApiServer
from tests.discovery.shapes import SLICES, endpoint, endpoint_slice
from tests.e2e.harness import Upstream, request

pytestmark = pytest.mark.envoy

NODE = "gw-eu"
TRAFFIC_S = 4.0  # of requests before the kill, and again after the reconnect


@pytest.fixture
def running() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture
def cluster() -> Iterator[tuple[FakeApiServer, list[Upstream]]]:
    api = FakeApiServer().start()
    upstreams = [Upstream(free_port(), "eu-west").start() for _ in range(2)]
    for n, upstream in enumerate(upstreams):
        api.put(
            SLICES,
            endpoint_slice(
                f"llama-eu-{n}",
                [endpoint(LOCALHOST)],
                region="eu-west",
                ports=[{"name": "http", "port": upstream.port, "protocol": "TCP"}],
            ),
        )
    yield api, upstreams
    for upstream in upstreams:
        upstream.stop()
    api.stop()


def policy(gateway_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "heliostat.dev/v1alpha1",
        "kind": "InferencePolicy",
        "metadata": {"name": "ha"},
        "spec": {
            "regions": {"us-east": {"rtt_ms": {"eu-west": 80}}, "eu-west": {}},
            "gateway": {"port": gateway_port, "address": LOCALHOST},
            "models": [{"name": "llama-70b", "kubernetes": {"namespace": "inference"}}],
        },
    }


def bootstrap(xds_ports: list[int], admin_port: int, delta: bool) -> dict[str, Any]:
    """`heliostat bootstrap`, with every replica in the ADS cluster (a headless Service)."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "heliostat", "bootstrap", "--node-id", NODE]
    args += ["--region", "eu-west", "--xds-address", f"{LOCALHOST}:{xds_ports[0]}"]
    args += ["--admin-port", str(admin_port), *(["--delta"] if delta else [])]
    text = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    document: dict[str, Any] = yaml.safe_load(text)
    (xds,) = document["static_resources"]["clusters"]
    (group,) = xds["load_assignment"]["endpoints"]
    template = group["lb_endpoints"][0]
    group["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": LOCALHOST, "port_value": p}}}}
        for p in xds_ports
    ]
    assert template["endpoint"]["address"]["socket_address"]["port_value"] == xds_ports[0]
    return document


class Traffic:
    """Requests one after another from a thread, every outcome kept (bounded by `stop`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.replicas: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                reply = request(self.port, timeout=5.0)
                self.outcomes[str(reply.status)] += 1
                self.replicas[reply.headers.get("x-replica-id", "?")] += 1
            except OSError as exc:
                self.outcomes[type(exc).__name__] += 1
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def versions(heliostat: Heliostat) -> dict[str, str]:
    return {k: v["version"] for k, v in heliostat.state()["snapshots"].items()}


def synced(heliostat: Heliostat) -> dict[str, Any] | None:
    node = heliostat.node(NODE)
    return node if node is not None and node["in_sync"] else None


def settled(heliostat: Heliostat) -> bool:
    """In sync with no LEDS assignment pending (heliostat.xds.grpc.settle): what the node
    lists on a reconnect then names every endpoint it holds."""
    node = synced(heliostat)
    return node is not None and not any(t.get("settling") for t in node["types"].values())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_loses_one_of_two_replicas_under_traffic_and_nothing_fails_or_is_resent(
    tmp_path: Path,
    running: list[Process],
    cluster: tuple[FakeApiServer, list[Upstream]],
    delta: bool,
) -> None:
    api, upstreams = cluster
    gateway = free_port()
    path = tmp_path / "policy.yaml"
    write_policy(path, policy(gateway))
    replicas = []
    for _ in range(2):
        # A fleet at rest settles its LEDS assignments (delta) once its endpoints were still
        # this long (serve's default is 30 s); the kill comes after that.
        args = ["--kube-server", api.url, "--leds-settle-after", "0.5"]
        replica = Heliostat(path, tmp_path, extra_args=args)
        running.append(replica)
        replica.start()
        replicas.append(replica)
    expected = {u.address for u in upstreams}

    admin = free_port()
    envoy = EnvoyProcess(
        tmp_path, NODE, bootstrap([r.xds_port for r in replicas], admin, delta), admin
    )
    running.append(envoy)
    envoy.start()
    wait_until(lambda: any(synced(r) for r in replicas), timeout=20, message="envoy in sync")
    (first,) = [r for r in replicas if synced(r)]
    (second,) = [r for r in replicas if r is not first]
    wait_until(lambda: set(envoy.hosts("llama-70b")) == expected, timeout=20)
    before = versions(first)
    assert before and versions(second) == {}  # a replica builds a group's snapshot on demand
    updates = envoy.stats(r"^(cluster_manager\.cds|listener_manager\.lds)\.update_success$")

    with Traffic(gateway) as traffic:
        time.sleep(TRAFFIC_S)
        wait_until(lambda: settled(first), timeout=20, message="envoy settled")
        at_kill = sum(traffic.outcomes.values())
        last = versions(first)  # what Envoy has (in sync), just before the kill
        assert synced(first)
        first.kill()
        node = wait_until(
            lambda: synced(second), timeout=30, interval=0.05, message="envoy moved over"
        )
        time.sleep(TRAFFIC_S)
    after_kill = sum(traffic.outcomes.values()) - at_kill
    print(
        f"\nHA ({'delta' if delta else 'sotw'}): {dict(traffic.outcomes)} "
        f"({at_kill} before the kill, {after_kill} after), replicas {dict(traffic.replicas)}"
    )
    assert set(traffic.outcomes) == {"200"}, traffic.outcomes  # not one request failed
    assert at_kill >= 20 and after_kill >= 20, traffic.outcomes
    assert set(traffic.replicas) == expected
    # Envoy asked the second replica with what it had from the first: nothing was re-sent.
    assert {t: s["responses"] for t, s in node["types"].items()} == dict.fromkeys(node["types"], 0)
    assert envoy.stats(r"^(cluster_manager\.cds|listener_manager\.lds)\.update_success$") == updates
    assert versions(second) == last  # no leader, same inputs: the same content hashes
    assert envoy.stat("control_plane.connected_state") == 1
