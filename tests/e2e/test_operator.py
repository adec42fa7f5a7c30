"""The operator surface against a running `heliostat serve` with a simulated fleet and real
Envoy gateways: `status`, `explain`, `diff --admin-address`, /metrics, recent events, the
live status page in a real headless Chromium, and the Grafana dashboard's queries.

One mesh serves the whole module (starting it is most of the cost). The page test needs
Debian's `chromium` and `chromedriver` (installed by .ci/run); it is skipped without them.
A screenshot of the page after a replica saturates is kept in tests/e2e/artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heliostat.lab.mesh import MODEL, Mesh, start_mesh
from heliostat.sim import loadgen
from tests.e2e.harness import LOCALHOST, Process, http_get, wait_until, write_policy

pytestmark = pytest.mark.envoy

ARTIFACTS = Path(__file__).parent / "artifacts"
DASHBOARD = Path(__file__).parents[2] / "manifests" / "grafana" / "heliostat.json"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running: list[Process] = []
    try:
        yield start_mesh(
            tmp_path_factory.mktemp("operator"),
            running,
            per_region={"us-east": 2, "eu-west": 1, "ap-southeast": 1},
            slots=2,
            speed=1.0,
        )
    finally:
        for process in reversed(running):
            process.stop()


def heliostat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heliostat", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def admin(mesh: Mesh) -> str:
    return f"{LOCALHOST}:{mesh.heliostat.admin_port}"


def all_in_sync(mesh: Mesh) -> bool:
    nodes = mesh.heliostat.state()["nodes"]
    return len(nodes) == 3 and all(n["in_sync"] for n in nodes)


def metrics(mesh: Mesh) -> str:
    return str(http_get(mesh.heliostat.url("/metrics"))[1])


def saturate(mesh: Mesh, address: str, requests: int = 10) -> threading.Thread:
    """Long streamed completions straight at one replica: its 2 slots fill and the rest
    queue, far past the queue threshold (2), for some seconds."""
    body = loadgen.completion_body(MODEL, prompt_tokens=32, max_tokens=150)
    shots = [
        loadgen.Shot(0.0, f"http://{address}/v1/completions", {}, body, "direct")
        for _ in range(requests)
    ]
    thread = threading.Thread(
        target=lambda: asyncio.run(loadgen.run(shots, timeout=60)), daemon=True
    )
    thread.start()
    return thread


def test_status_lists_every_envoy_in_sync(mesh: Mesh) -> None:
    wait_until(lambda: all_in_sync(mesh), timeout=20, message="every gateway in sync")
    table = heliostat("status", "--admin-address", admin(mesh))
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["NODE", "REGION", "ROLE", "XDS", "CONNECTED"]
    assert [r.split()[0] for r in rows] == ["gw-ap-southeast", "gw-eu-west", "gw-us-east"]
    for row in rows:
        assert row.count("SYNCED") == 4, row
    as_json = heliostat("status", "--admin-address", admin(mesh), "-o", "json")
    nodes = json.loads(as_json.stdout)
    served = {t: s["acked_version"] for t, s in nodes[0]["types"].items()}
    assert set(served) == {"CDS", "EDS", "LDS", "RDS"}
    # The versions shown are the ones the Envoy really holds: CDS is the same in every view.
    assert len({n["types"]["CDS"]["acked_version"] for n in nodes}) == 1
    unreachable = heliostat("status", "--admin-address", f"{LOCALHOST}:1")
    assert unreachable.returncode == 1
    assert "cannot reach heliostat at 127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_explain_joins_signals_weights_and_allocation(mesh: Mesh) -> None:
    wait_until(lambda: all_in_sync(mesh), timeout=20, message="every gateway in sync")
    eu = mesh.replicas["eu-west"][0]
    shown = heliostat(
        "explain", "--model", MODEL, "--region", "eu-west", "--admin-address", admin(mesh)
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"model {MODEL}, view of eu-west"
    row = next(line for line in lines if line.startswith(eu))
    assert re.search(r"\bHEALTHY\b", row) and "state=healthy" in row
    us_rows = [
        line for line in lines if line.split()[:1] and line.split()[0] in mesh.replicas["us-east"]
    ]
    assert len(us_rows) == 2 and all(r.split()[8] == "1" for r in us_rows)  # priority 1 from eu
    assert any(line.startswith("allocation (") for line in lines)
    one = json.loads(
        heliostat(
            "explain",
            "--model",
            MODEL,
            "--endpoint",
            eu,
            "-o",
            "json",
            "--admin-address",
            admin(mesh),
        ).stdout
    )
    (endpoint,) = one["endpoints"]
    assert endpoint["address"] == eu and endpoint["view"] == "eu-west"
    assert endpoint["waiting"] is not None and endpoint["weight"] > 0
    assert set(one["allocation"]) == {"us-east", "eu-west", "ap-southeast"}
    unknown = heliostat("explain", "--model", "nope", "--admin-address", admin(mesh))
    assert unknown.returncode == 1 and "unknown model 'nope'" in unknown.stderr


def test_diff_against_the_running_server(mesh: Mesh) -> None:
    text = mesh.policy_path.read_text()
    same = heliostat("diff", str(mesh.policy_path), "--admin-address", admin(mesh))
    assert (same.returncode, same.stdout) == (0, "no difference\n"), same.stderr
    document = json.loads(json.dumps(mesh.document))
    document["spec"]["models"][0]["slo"]["ttft_ms"] = 1200
    document["spec"]["models"][0]["endpoints"].pop()  # ap-southeast's only replica
    import yaml

    changed = heliostat(
        "diff", "-", "--admin-address", admin(mesh), "-o", "json", stdin=yaml.safe_dump(document)
    )
    assert changed.returncode == 1, changed.stderr
    result = json.loads(changed.stdout)
    gone = mesh.replicas["ap-southeast"][0]
    views = {v["view"]: v for v in result["views"]}
    # Every connected gateway's own group is compared (their listener ports are their own).
    for region, port in mesh.gateways.items():
        view = views[f"gateway/{region}/{port}"]
        endpoints = next(
            c for c in view["changes"] if c["name"] == MODEL and c["kind"] == "endpoints"
        )
        assert f"- {gone}" in endpoints["details"]
        assert any(c["kind"] == "routes" for c in view["changes"])
    # Nothing was applied.
    assert mesh.policy_path.read_text() == text
    assert gone in {e["address"] for e in mesh.heliostat.state()["signals"]["models"][MODEL]}
    bad = heliostat("diff", "-", "--admin-address", admin(mesh), stdin="spec: {}\n")
    assert bad.returncode == 2 and "<stdin>:1: apiVersion: missing required key" in bad.stderr


def test_metrics_and_events_follow_a_saturating_replica(mesh: Mesh) -> None:
    address = mesh.replicas["us-east"][0]
    text = metrics(mesh)
    labels = f'endpoint="{address}",model="{MODEL}",region="us-east"'
    assert f"heliostat_endpoint_weight{{{labels}}} 100.0" in text
    assert f'heliostat_endpoint_health{{{labels},state="HEALTHY"}} 1.0' in text
    assert re.search(r'heliostat_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0', text)
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert 'heliostat_policy_reloads_total{result="rejected"} 0.0' in text
    seen = json.loads(http_get(mesh.heliostat.url("/debug/events"))[1])["events"]
    after = max((e["seq"] for e in seen), default=0)
    load = saturate(mesh, address)

    def saturated_event() -> dict[str, Any] | None:
        events = json.loads(http_get(mesh.heliostat.url(f"/debug/events?after={after}"))[1])
        return next(
            (
                e
                for e in events["events"]
                if e["event"] == "endpoint_state_changed"
                and e["endpoint"] == address
                and e["after"] == "saturated"
            ),
            None,
        )

    event = wait_until(saturated_event, timeout=20, message="a saturated event")
    assert event["model"] == MODEL and event["region"] == "us-east"
    weight = re.search(
        rf"heliostat_endpoint_weight\{{{re.escape(labels)}\}} ([\d.]+)", metrics(mesh)
    )
    saturation = re.search(
        rf"heliostat_endpoint_saturation\{{{re.escape(labels)}\}} ([\d.]+)", metrics(mesh)
    )
    assert weight and saturation
    assert float(saturation.group(1)) > 0.5
    load.join(timeout=60)


def _browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("needs Debian's chromium and chromium-driver (see .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def test_status_page_in_chromium_shows_a_replica_saturate(mesh: Mesh) -> None:
    from selenium.webdriver.common.by import By

    address = mesh.replicas["us-east"][1]
    browser = _browser()
    try:
        browser.get(mesh.heliostat.url("/"))

        def state_cell() -> str:
            row = browser.find_element(By.CSS_SELECTOR, f'tr[data-endpoint="{address}"]')
            return str(row.find_elements(By.TAG_NAME, "td")[-1].text)

        wait_until(lambda: state_cell() == "healthy", timeout=20, message="the replica healthy")
        assert browser.title == "heliostat"
        nodes = browser.find_element(By.ID, "nodes").text
        for region in mesh.gateways:
            assert f"gw-{region}" in nodes
        assert nodes.count("in sync") == 3
        before = browser.find_element(By.ID, "models").text
        load = saturate(mesh, address)
        wait_until(lambda: state_cell() == "saturated", timeout=20, message="saturated on the page")
        after = browser.find_element(By.ID, "models").text
        assert after != before
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-endpoint="{address}"]').text
        queue = int(row.split()[1])
        assert queue >= 3, row  # the replica's queue, as scraped, is on the page
        events = wait_until(
            lambda: (
                "endpoint_state_changed" in browser.find_element(By.ID, "events").text
                and browser.find_element(By.ID, "events").text
            ),
            timeout=10,
            message="the event on the page",
        )
        assert address in events
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "status-page-saturated.png"))
        load.join(timeout=60)
    finally:
        browser.quit()


METRIC = re.compile(r"\b((?:heliostat|process|envoy)_[a-z0-9_]+)\b")
LABELS = re.compile(r"\{[^}]*\}|\b(?:by|without)\s*\([^)]*\)")


def names(exposition: str) -> set[str]:
    """Metric names with at least one sample in Prometheus text."""
    return {
        line.split("{")[0].split(" ")[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def queried_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: label matchers and grouping clauses removed."""
    return set(METRIC.findall(LABELS.sub(" ", expr)))


def test_every_metric_the_grafana_dashboard_queries_exists(mesh: Mesh) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in queried_metrics(target["expr"])
    }
    assert any(n.startswith("heliostat_") for n in queried)
    assert any(n.startswith("envoy_") for n in queried)
    # A little traffic, so Envoy's request counters exist.
    report = mesh.run(mesh.shots("us-east", 5, 1.0))
    assert report.ok

    def missing() -> list[str]:
        served = names(metrics(mesh))
        status, envoy_text = mesh.envoys["us-east"].admin("/stats/prometheus")
        assert status == 200
        return sorted(queried - served - names(envoy_text))

    # Gateways' load reports arrive every 0.5 s: give them a moment before concluding.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not missing(), timeout=10, message="every queried metric")
    absent = missing()
    assert not absent, f"the dashboard queries metrics nobody serves: {absent}"


def test_csds_health_and_reflection_on_the_xds_port(mesh: Mesh) -> None:
    import grpc
    from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
    from envoy.type.matcher.v3 import node_pb2, string_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    wait_until(lambda: all_in_sync(mesh), timeout=20, message="every gateway in sync")
    with grpc.insecure_channel(f"{LOCALHOST}:{mesh.heliostat.xds_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        ads = "envoy.service.discovery.v3.AggregatedDiscoveryService"
        assert health.Check(health_pb2.HealthCheckRequest(service=ads)).status == serving
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {
            ads,
            "envoy.service.status.v3.ClientStatusDiscoveryService",
            "envoy.service.load_stats.v3.LoadReportingService",
            "grpc.health.v1.Health",
        } <= services

        status = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        everyone = status.FetchClientStatus(csds_pb2.ClientStatusRequest())
        assert sorted(c.node.id for c in everyone.config) == [
            "gw-ap-southeast",
            "gw-eu-west",
            "gw-us-east",
        ]
        state = {n["node_id"]: n for n in mesh.heliostat.state()["nodes"]}
        for config in everyone.config:
            types = {x.type_url.rsplit(".", 1)[-1] for x in config.generic_xds_configs}
            assert types == {"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"}
            assert all(x.config_status == csds_pb2.SYNCED for x in config.generic_xds_configs)
            assert all(x.xds_config.value for x in config.generic_xds_configs)
            cds = next(x for x in config.generic_xds_configs if x.type_url.endswith("Cluster"))
            assert cds.version_info == state[config.node.id]["types"]["CDS"]["acked_version"]
            assert config.node.locality.region == config.node.id.removeprefix("gw-")
        eu = csds_pb2.ClientStatusRequest(
            node_matchers=[node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(prefix="gw-eu"))],
            exclude_resource_contents=True,
        )
        one = status.FetchClientStatus(eu)
        assert [c.node.id for c in one.config] == ["gw-eu-west"]
        assert not any(x.HasField("xds_config") for x in one.config[0].generic_xds_configs)
        answers = list(status.StreamClientStatus(iter([eu, csds_pb2.ClientStatusRequest()])))
        assert [len(a.config) for a in answers] == [1, 3]


def test_convergence_is_measured(mesh: Mesh) -> None:
    def count() -> float:
        found = re.search(r"^heliostat_convergence_seconds_count ([\d.e+]+)$", metrics(mesh), re.M)
        return float(found.group(1)) if found else 0.0

    # The replicas' first scrapes changed every view at start-up: pushes that converged.
    wait_until(lambda: count() > 0, timeout=20, message="a converged push")
    text = metrics(mesh)
    total = float(
        re.search(r"^heliostat_convergence_seconds_sum ([\d.e+-]+)$", text, re.M).group(1)
    )  # type: ignore[union-attr]
    assert 0 < total / count() < 5.0


def test_a_rejected_reload_is_counted_and_logged_as_an_event(mesh: Mesh) -> None:
    def rejected() -> float:
        found = re.search(
            r'^heliostat_policy_reloads_total\{result="rejected"\} ([\d.]+)$', metrics(mesh), re.M
        )
        assert found is not None
        return float(found.group(1))

    good = mesh.policy_path.read_text()
    before = rejected()
    try:
        # Atomic, as config managers write: a truncate-then-write read half-way is an empty
        # file, rejected on its own (a two-worker run caught that instead of the typo).
        write_policy(mesh.policy_path, good.replace("region: eu-west", "region: eu-wst", 1))
        wait_until(lambda: rejected() == before + 1, timeout=15, message="a rejected reload")
    finally:
        write_policy(mesh.policy_path, good)
    lines = [json.loads(line) for line in mesh.heliostat.log().splitlines() if line.startswith("{")]
    problem = next(line for line in lines if line["event"] == "policy_rejected")
    assert "unknown region 'eu-wst'" in problem["problem"] and problem["level"] == "error"
