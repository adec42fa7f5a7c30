"""mTLS on the xDS port with node identity, against a real `heliostat serve`: certificates
made here with `cryptography`; a real Envoy with a good certificate syncs and serves, one
whose certificate names another node is refused with PERMISSION_DENIED (and logged), a
plaintext one never gets a configuration; plaintext beyond loopback needs --insecure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from heliostat.lab.processes import EnvoyProcess
from tests.e2e.harness import (
    LOCALHOST,
    Heliostat,
    Process,
    Upstream,
    free_port,
    policy_document,
    request,
    wait_until,
    write_policy,
)
from tests.security.certs import Authority, Pair


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path)


def _policy(tmp_path: Path, upstream: Upstream, gateway: int) -> Path:
    path = tmp_path / "policy.yaml"
    write_policy(
        path, policy_document(gateway_port=gateway, endpoints=[(upstream.address, "eu-west")])
    )
    return path


@pytest.fixture
def secured(
    tmp_path: Path, ca: Authority, processes: list[Process]
) -> Iterator[tuple[Heliostat, Upstream, int]]:
    upstream = Upstream(free_port(), "eu-west").start()
    gateway = free_port()
    server = ca.server()
    heliostat = Heliostat(_policy(tmp_path, upstream, gateway), tmp_path)
    heliostat.args += [
        "--tls-cert",
        str(server.cert),
        "--tls-key",
        str(server.key),
        "--client-ca",
        str(ca.path),
    ]
    processes.append(heliostat)
    heliostat.start()
    yield heliostat, upstream, gateway
    upstream.stop()


def _envoy(
    tmp_path: Path,
    heliostat: Heliostat,
    node_id: str,
    pair: Pair | None,
    ca: Authority,
    listener: int | None = None,
) -> EnvoyProcess:
    admin = free_port()
    args = [sys.executable, "-m", "heliostat", "bootstrap", "--node-id", node_id]
    args += ["--region", "eu-west", "--xds-address", f"{LOCALHOST}:{heliostat.xds_port}"]
    args += ["--admin-port", str(admin)]
    if listener is not None:
        args += ["--listener-port", str(listener)]
    if pair is not None:
        args += ["--tls-cert", str(pair.cert), "--tls-key", str(pair.key), "--ca", str(ca.path)]
    text = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return EnvoyProcess(tmp_path, node_id, text, admin)


@pytest.mark.envoy
def test_a_real_envoy_with_its_certificate_syncs_the_others_are_refused(
    tmp_path: Path,
    ca: Authority,
    secured: tuple[Heliostat, Upstream, int],
    processes: list[Process],
) -> None:
    heliostat, upstream, gateway = secured
    good = ca.issue("gw-eu", uris=("spiffe://heliostat.test/ns/eu-west/sa/gw-eu",))
    other = ca.issue("gw-other", dns=("gw-other.us-east.gateways.test",))
    envoys = {
        "good": _envoy(tmp_path, heliostat, "gw-eu", good, ca),
        "impostor": _envoy(tmp_path, heliostat, "gw-eu-2", other, ca, listener=free_port()),
        "plaintext": _envoy(tmp_path, heliostat, "gw-eu-3", None, ca, listener=free_port()),
    }
    for name, envoy in envoys.items():
        processes.append(envoy)
        envoy.start(wait=name == "good")  # the refused ones wait out their initial fetch
    wait_until(
        lambda: (n := heliostat.node("gw-eu")) is not None and n["in_sync"],
        timeout=30,
        message="the Envoy with a good certificate in sync",
    )
    wait_until(lambda: request(gateway).status == 200, timeout=20)
    assert upstream.seen
    wait_until(
        lambda: "node_refused" in heliostat.log() and "gw-eu-2" in heliostat.log(), timeout=20
    )
    time.sleep(3)  # several reconnect attempts of the refused ones
    connected = {n["node_id"] for n in heliostat.state()["nodes"]}
    assert connected == {"gw-eu"}
    for name in ("impostor", "plaintext"):
        envoy = envoys[name]
        updates = envoy.stats(r"^cluster_manager\.cds\.update_success$")
        assert updates.get("cluster_manager.cds.update_success", 0) == 0, name
    # The impostor's streams open and are closed with the reason; the plaintext one never
    # gets through the TLS handshake.
    assert "closed: 7, node 'gw-eu-2' claims region 'eu-west'" in envoys["impostor"].log()
    assert envoys["plaintext"].stat("control_plane.connected_state") == 0
    refused = [line for line in heliostat.log().splitlines() if "node_refused" in line]
    assert refused and all("gw-eu-2" in line for line in refused)
    assert (
        json.loads(refused[0])["error"]
        == "node 'gw-eu-2' claims region 'eu-west' but its certificate is for gw-other in us-east"
    )
    assert "Traceback" not in heliostat.log()


async def test_a_wrong_identity_gets_permission_denied_with_the_reason(
    ca: Authority, secured: tuple[Heliostat, Upstream, int]
) -> None:
    heliostat, _, _ = secured
    other = ca.issue("gw-x", uris=("spiffe://heliostat.test/ns/us-east/sa/gw-x",))
    credentials = grpc.ssl_channel_credentials(
        ca.path.read_bytes(), other.key.read_bytes(), other.cert.read_bytes()
    )
    async with grpc.aio.secure_channel(f"{LOCALHOST}:{heliostat.xds_port}", credentials) as ch:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        node = base_pb2.Node(id="gw-x", locality=base_pb2.Locality(region="eu-west"))
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url="x"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        "node 'gw-x' claims region 'eu-west' but its certificate is for gw-x in us-east"
    )


def _serve(tmp_path: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    path = tmp_path / "plain.yaml"
    document = policy_document(gateway_port=free_port(), endpoints=[("127.0.0.1:9", "eu-west")])
    write_policy(path, document)
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "heliostat", "serve", "--policy", str(path), *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def test_plaintext_beyond_loopback_needs_insecure(tmp_path: Path) -> None:
    port = free_port()
    admin = ["--admin-address", f"{LOCALHOST}:{free_port()}"]
    log = tmp_path / "refused.log"
    refused = _serve(tmp_path, log, "--xds-address", f"0.0.0.0:{port}", *admin)
    assert refused.wait(timeout=60) == 1
    assert log.read_text() == (
        f"heliostat serve: xDS on 0.0.0.0:{port} would be plaintext beyond loopback: "
        "give --tls-cert, --tls-key and --client-ca, or --insecure\n"
    )
    log = tmp_path / "insecure.log"
    allowed = _serve(tmp_path, log, "--xds-address", f"0.0.0.0:{port}", "--insecure", *admin)
    try:
        wait_until(
            lambda: '"event": "serving"' in log.read_text() or allowed.poll() is not None, 30
        )
    finally:
        allowed.terminate()
        allowed.wait(timeout=30)
    assert allowed.returncode == 0, log.read_text()
    assert '"event": "serving"' in log.read_text()
