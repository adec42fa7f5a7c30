"""`heliostat drain` against a running heliostat, through a real Envoy under load."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from heliostat.lab.mesh import MODEL, start_mesh
from tests.e2e.harness import LOCALHOST, Process, wait_until

pytestmark = pytest.mark.envoy


def _drain(admin_port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "heliostat",
            "drain",
            "--model",
            MODEL,
            *args,
            "--admin-address",
            f"{LOCALHOST}:{admin_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_draining_an_endpoint_under_load_fails_no_request(
    tmp_path: Path, processes: list[Process]
) -> None:
    mesh = start_mesh(
        tmp_path,
        processes,
        per_region={"us-east": 2, "eu-west": 1, "ap-southeast": 1},
        slots=4,
        speed=2.0,
    )
    drained, kept = mesh.replicas["us-east"]
    shots = mesh.shots("us-east", 8, 14)
    finish = mesh.start_load(shots)
    time.sleep(3)
    assert mesh.fleet_of(drained).stats(drained)["received"] > 0

    done = _drain(mesh.heliostat.admin_port, "--endpoint", drained)
    assert done.returncode == 0, done.stderr
    assert f"{MODEL}: draining: {drained}" in done.stdout
    envoy = mesh.envoys["us-east"]
    wait_until(
        lambda: "eds_status_draining" in envoy.hosts(MODEL)[drained]["health_flags"],
        message="Envoy sees the endpoint draining",
    )
    time.sleep(0.5)
    received = mesh.fleet_of(drained).stats(drained)["received"]
    time.sleep(4)
    # No new request reaches the drained replica; its in-flight ones finished.
    assert mesh.fleet_of(drained).stats(drained)["received"] == received
    state = mesh.heliostat.state()
    assert f"{MODEL}/{drained}" in state["control"]["drained"]
    reasons = [
        e
        for e in state["views"]["regions"]["us-east"][MODEL]["endpoints"]
        if e["address"] == drained
    ]
    assert reasons[0]["health"] == "DRAINING"

    undone = _drain(mesh.heliostat.admin_port, "--endpoint", drained, "--undo")
    assert undone.returncode == 0, undone.stderr
    report = finish()
    assert len(report.ok) == len(shots), report.statuses()
    assert mesh.fleet_of(kept).stats(kept)["received"] > 0
    # Traffic returns after --undo. Fresh requests, a second at a time: on a loaded machine
    # the drain and its checks may outlast the load above (it failed so once, the load over
    # before the undo reached Envoy).

    def returned() -> bool:
        mesh.run(mesh.shots("us-east", 8, 1, label="after-undo"))
        return bool(mesh.fleet_of(drained).stats(drained)["received"] > received)

    wait_until(returned, timeout=20, message="traffic returns after --undo")


def test_drain_errors_name_what_is_wrong(tmp_path: Path, processes: list[Process]) -> None:
    mesh = start_mesh(
        tmp_path,
        processes,
        per_region={"us-east": 1, "eu-west": 1, "ap-southeast": 1},
        slots=4,
        speed=2.0,
    )
    port = mesh.heliostat.admin_port
    unknown = _drain(port, "--endpoint", "127.0.0.1:1")
    assert unknown.returncode == 1
    assert "has no endpoint '127.0.0.1:1'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    region = _drain(port, "--region", "mars")
    assert region.returncode == 1 and "has no region 'mars'" in region.stderr
    nobody = subprocess.run(
        [
            sys.executable,
            "-m",
            "heliostat",
            "drain",
            "--model",
            MODEL,
            "--region",
            "us-east",
            "--admin-address",
            f"{LOCALHOST}:1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert nobody.returncode == 1 and "cannot reach heliostat" in nobody.stderr
