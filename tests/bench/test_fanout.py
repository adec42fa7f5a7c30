"""fanout.json at tiny size, and the benchmark's ADS clients against heliostat's own streams."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from bench import fanout
from bench.ads_clients import Client, DeltaSession, SotwSession
from bench.scale_policy import fleet_policy
from heliostat.balance import static_views
from heliostat.lab.processes import LabError
from heliostat.policy import Policy
from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.sotw import SotwStream
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import build_snapshot


def test_tiny_run_every_client_acks_every_change(tmp_path: Path) -> None:
    result = fanout.run("tiny", tmp_path)
    json.dumps(result)
    plan = fanout.PLANS["tiny"]
    cases = result["cases"]
    assert [(c["clients"], c["mode"]) for c in cases] == [
        (n, m) for n in plan.clients for m in fanout.MODES
    ]
    for case in cases:
        assert case["acked"] == case["clients"] * plan.changes
        # ten clients, five per process: both processes' clients were counted
        assert case["client_processes"] == 2
        assert (
            0 < case["ack_min_ms"] <= case["ack_p50_ms"] <= case["ack_p99_ms"] <= case["ack_max_ms"]
        )
        assert case["ack_max_ms"] < 30_000
        assert case["bytes_per_push"] > 0
        assert case["responses_per_push"] >= 1
        assert case["rss_mb"] > 0 and case["rss_idle_mb"] > 0
        assert case["ticks"] >= 1 and case["tick_mean_ms"] > 0
    by_mode = {c["mode"]: c for c in cases}
    # Delta sends only the assignments the drain changed; SotW sends every one subscribed to.
    assert by_mode["delta-eds"]["bytes_per_push"] < by_mode["sotw"]["bytes_per_push"]
    # With LEDS (serve's default), changes seconds apart find the assignments still
    # pending (they settle after 30 s of still endpoints, heliostat.xds.grpc.settle): the
    # drained endpoint's resources (one per cluster) alone, one response. Settled before
    # each change, the touched assignments go twice as well, with no endpoint in them
    # (heliostat.xds.protocol.held): three responses. At tiny's 10 endpoints per region
    # that is about what whole assignments cost (LEDS pays from a few dozen endpoints per
    # cluster; the bytes target is a quick or full run's row, 300 endpoints), so it is
    # held to SotW's bytes here.
    assert by_mode["delta"]["responses_per_push"] == 1
    assert by_mode["delta-settled"]["responses_per_push"] == 3
    assert by_mode["delta"]["bytes_per_push"] < by_mode["delta-settled"]["bytes_per_push"]
    assert by_mode["delta-settled"]["bytes_per_push"] < by_mode["sotw"]["bytes_per_push"]
    assert "sotw" in fanout.summary(result)


# -- the client sessions, without sockets --------------------------------------------------


def snapshot(region: str = "eu-west", *, leds: bool = False) -> Snapshot:
    policy = Policy.model_validate(fleet_policy(30, 3))
    return build_snapshot(
        policy,
        static_views(policy).for_region(region),
        NodeGroup(Role.GATEWAY, region),
        leds=leds,
    )


PLAIN_TYPES = [TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE]


def converse(
    opening: list[bytes],
    on_request: Callable[[bytes], list[Any]],
    on_response: Callable[[bytes], tuple[str, list[bytes]]],
) -> list[str]:
    """Pass requests to the server stream and responses back until both sides are quiet;
    returns the type of every response the client saw."""
    pending = list(opening)
    seen = []
    for _ in range(100):
        if not pending:
            return seen
        responses = on_request(pending.pop(0))
        for response in responses:
            type_url, requests = on_response(response.SerializeToString())
            seen.append(type_url)
            pending += requests
    raise AssertionError("the conversation never settled")


def test_sotw_session_subscribes_like_envoy_and_acks_everything() -> None:
    snap = snapshot()
    stream = SotwStream("gw-1")
    stream.on_snapshot(snap)
    session = SotwSession(Client("gw-1", "eu-west"))
    seen = converse(
        session.opening(),
        lambda raw: stream.on_request(discovery_pb2.DiscoveryRequest.FromString(raw)).responses,
        session.on_response,
    )
    assert sorted(seen) == sorted(t.value for t in PLAIN_TYPES)
    assert session.names[TypeUrl.ENDPOINT.value] == set(snap.resources(TypeUrl.ENDPOINT))
    for status in stream.status().values():
        assert status.acked_version == status.sent_version != ""


@pytest.mark.parametrize("leds", [False, True], ids=["eds", "leds"])
def test_delta_session_subscribes_like_envoy_and_acks_everything(leds: bool) -> None:
    snap = snapshot(leds=leds)
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snap)
    session = DeltaSession(Client("gw-1", "eu-west"))
    seen = converse(
        session.opening(),
        lambda raw: (
            stream.on_request(discovery_pb2.DeltaDiscoveryRequest.FromString(raw)).responses
        ),
        session.on_response,
    )
    types = PLAIN_TYPES + ([TypeUrl.LB_ENDPOINT] if leds else [])
    assert set(seen) == {t.value for t in types}
    assert session.subscribed[TypeUrl.ENDPOINT.value] == set(snap.resources(TypeUrl.ENDPOINT))
    endpoints = snap.for_delta().resources(TypeUrl.LB_ENDPOINT)
    collections = {name.rpartition("/")[0] + "/*" for name in endpoints}
    assert session.subscribed[TypeUrl.LB_ENDPOINT.value] == collections
    assert session.client.needs_leds is leds
    for status in stream.status().values():
        assert status.acked_version == status.sent_version != ""


def test_answers_of_several_client_processes_merge_into_one() -> None:
    """Counts add up, the latest response wins, missing nodes and report rows are joined."""
    status = fanout.merge(
        [
            {
                "event": "status",
                "ready": 3,
                "failed": 0,
                "errors": [],
                "responses": 9,
                "last_response_at": 5.0,
            },
            {
                "event": "status",
                "ready": 2,
                "failed": 1,
                "errors": ["UNAVAILABLE: x"],
                "responses": 4,
                "last_response_at": 7.5,
            },
        ]
    )
    assert status == {
        "event": "status",
        "ready": 5,
        "failed": 1,
        "errors": ["UNAVAILABLE: x"],
        "responses": 13,
        "last_response_at": 7.5,
    }
    acked = fanout.merge(
        [
            {"event": "acked", "acked": 3, "missing": []},
            {"event": "acked", "acked": 1, "missing": ["bench-gw-1-0", "bench-gw-1-1"]},
        ]
    )
    assert acked == {"event": "acked", "acked": 4, "missing": ["bench-gw-1-0", "bench-gw-1-1"]}
    rows = fanout.merge(
        [
            {"event": "report", "clients": [["a", "us-east", 1.0, 10, 1]]},
            {"event": "report", "clients": [["b", "eu-west", None, 0, 0]]},
        ]
    )
    assert [row[0] for row in rows["clients"]] == ["a", "b"]
    with pytest.raises(LabError, match="disagree"):
        fanout.merge([{"event": "status"}, {"event": "acked"}])


def test_target_rows_come_from_the_thousand_stream_cases() -> None:
    case = {"ack_p99_ms": 250.0, "bytes_per_push": 51_903, "rss_peak_mb": 180.0}
    cases = [
        {"clients": 1000, "mode": "delta", **case},
        {"clients": 100, "mode": "sotw", **case, "ack_p99_ms": 10.0},
    ]
    rows = {r["measure"]: r["met"] for r in fanout.target_rows(cases)}
    assert rows == {
        "one change to 1,000 delta streams, ACK p99": True,
        "bytes per stream for one endpoint's change": False,
        "serve's peak memory, 1,000 delta streams": True,
    }
