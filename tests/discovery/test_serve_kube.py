"""`heliostat serve --policy-resource` against a local API server: the CRD path end to end.

A real `heliostat serve` process follows an InferencePolicy and EndpointSlices through the
`kubernetes` client: discovered replicas are served, terminating ones drain, an invalid
resource gets `Accepted=False` and the last good policy stays served.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heliostat.lab.processes import Heliostat, Process, http_get, wait_until, write_policy
from tests.discovery.apiserver import FakeApiServer
from tests.discovery.shapes import POLICIES, SLICES, endpoint, endpoint_slice

POLICY: dict[str, Any] = {
    "apiVersion": "heliostat.dev/v1alpha1",
    "kind": "InferencePolicy",
    "metadata": {"name": "global", "namespace": "heliostat"},
    "spec": {
        "regions": {"us-east": {"rtt_ms": {"eu-west": 80}}, "eu-west": {}},
        "gateway": {"port": 10000, "address": "127.0.0.1"},
        "models": [
            {
                "name": "llama-70b",
                "signals": {"interval": "1s", "timeout": "200ms", "stale_after": "3s"},
                "kubernetes": {"namespace": "inference", "port": "http"},
            }
        ],
    },
}


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def serve(api: FakeApiServer, tmp_path: Path) -> Iterator[Heliostat]:
    heliostat = Heliostat(
        None,
        tmp_path,
        extra_args=["--policy-resource", "heliostat/global", "--kube-server", api.url],
    )
    try:
        yield heliostat
    finally:
        heliostat.stop()


def served(heliostat: Heliostat) -> dict[str, str]:
    """address -> health, in the first region's view of the model."""
    regions = heliostat.state()["views"]["regions"]
    found: dict[str, str] = {}
    for view in regions.values():
        for entry in view.get("llama-70b", {}).get("endpoints", []):
            found[entry["address"]] = entry["health"]
    return found


def accepted(api: FakeApiServer) -> dict[str, Any]:
    status = api.get(POLICIES, "global").get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Accepted"), {})


def test_resource_and_slices_drive_what_is_served(api: FakeApiServer, serve: Heliostat) -> None:
    api.put(POLICIES, POLICY)
    api.put(SLICES, endpoint_slice("us", [endpoint("10.0.0.1"), endpoint("10.0.0.2")]))
    serve.start()
    wait_until(lambda: set(served(serve)) == {"10.0.0.1:8000", "10.0.0.2:8000"}, timeout=15)
    condition = wait_until(lambda: accepted(api).get("status") == "True" and accepted(api))
    assert condition["reason"] == "Valid" and condition["observedGeneration"] == 1
    assert serve.state()["policy"]["path"] == "heliostat/global"

    # A replica joins in another region; one starts terminating: it drains.
    api.put(SLICES, endpoint_slice("eu", [endpoint("10.1.0.1")], region="eu-west"))
    api.put(
        SLICES,
        endpoint_slice(
            "us",
            [
                endpoint("10.0.0.1"),
                endpoint("10.0.0.2", ready=False, serving=True, terminating=True),
            ],
        ),
    )
    wait_until(lambda: served(serve).get("10.0.0.2:8000") == "DRAINING", timeout=15)
    assert "10.1.0.1:8000" in served(serve)
    assert serve.state()["control"]["drained"] == ["llama-70b/10.0.0.2:8000"]

    # An invalid generation: refused with its problems, and the last good policy is served.
    broken = copy.deepcopy(POLICY)
    broken["spec"]["models"][0]["kubernetes"]["region"] = "mars"
    api.put(POLICIES, broken)
    condition = wait_until(lambda: accepted(api).get("status") == "False" and accepted(api))
    assert condition["reason"] == "Invalid"
    assert condition["observedGeneration"] == 2
    assert "spec.models[0].kubernetes.region: unknown region 'mars'" in condition["message"]
    assert set(served(serve)) == {"10.0.0.1:8000", "10.0.0.2:8000", "10.1.0.1:8000"}
    assert serve.state()["policy"]["rejections"] == 1
    assert serve.metric("heliostat_policy_reloads_total", result="rejected") == 1

    # Fixed: accepted again, and the new spec (a second model's static endpoint) is served.
    fixed = copy.deepcopy(POLICY)
    fixed["spec"]["models"].append(
        {"name": "mistral", "endpoints": [{"address": "10.2.0.1:8000", "region": "eu-west"}]}
    )
    api.put(POLICIES, fixed)
    wait_until(lambda: accepted(api).get("observedGeneration") == 3, timeout=15)
    assert accepted(api)["status"] == "True"
    wait_until(lambda: "mistral" in serve.state()["policy"]["models"])
    assert serve.metric("heliostat_policy_reloads_total", result="applied") == 1

    # The API server goes away: everything known stays served; it comes back: watches resume.
    api.stop()
    wait_until(lambda: any(w["failures"] for w in serve.state()["discovery"]["watches"]))
    assert set(served(serve)) == {"10.0.0.1:8000", "10.0.0.2:8000", "10.1.0.1:8000"}
    api.put(
        SLICES, endpoint_slice("eu", [endpoint("10.1.0.1"), endpoint("10.1.0.2")], region="eu-west")
    )
    api.start()
    wait_until(lambda: "10.1.0.2:8000" in served(serve), timeout=15)
    assert serve.running


def test_an_invalid_first_resource_is_one_line_and_exit_1(
    api: FakeApiServer, tmp_path: Path
) -> None:
    import subprocess
    import sys

    broken = copy.deepcopy(POLICY)
    broken["spec"]["models"][0]["engine"] = "llamacpp"
    api.put(POLICIES, broken)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "heliostat",
            "serve",
            "--policy-resource",
            "heliostat/global",
            "--kube-server",
            api.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("heliostat serve: InferencePolicy heliostat/global is not valid")
    assert "spec.models[0].engine" in done.stderr
    assert "Traceback" not in done.stderr
    assert accepted(api)["status"] == "False"


def test_not_ready_until_the_first_list_of_endpoint_slices(
    api: FakeApiServer, tmp_path: Path
) -> None:
    """A replica that published before listing would send Envoys a model with no endpoints."""
    policy = tmp_path / "policy.yaml"
    write_policy(policy, {**POLICY, "metadata": {"name": "file"}})
    api.put(SLICES, endpoint_slice("us", [endpoint("10.0.0.1")]))
    api.stop()  # unreachable at start-up
    heliostat = Heliostat(policy, tmp_path, extra_args=["--kube-server", api.url])
    try:
        Process.start(heliostat)  # not Heliostat.start: that waits for /readyz
        _, body = wait_until(
            lambda: (r := http_get(heliostat.url("/readyz")))[0] == 503 and r, timeout=20
        )
        assert "discovery" in body
        time.sleep(1.0)
        assert http_get(heliostat.url("/readyz"))[0] == 503
        api.start()
        wait_until(lambda: http_get(heliostat.url("/readyz"))[0] == 200, timeout=20)
        assert set(served(heliostat)) == {"10.0.0.1:8000"}
    finally:
        heliostat.stop()
