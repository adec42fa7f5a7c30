"""The traffic policy, without sockets: its validation (every problem at its line) and its
translation into Envoy clusters, endpoints, listener filters and routes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.json_to_metadata.v3 import json_to_metadata_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2

from heliostat.balance import ClusterView, InFlight, RegionView, TrafficClass, static_views
from heliostat.planning.subsets import subset
from heliostat.planning.versions import TOTAL, version_shares, version_weights
from heliostat.policy import Policy, PolicyError, load_policy, parse_policy
from heliostat.policy.traffic import Affinity, RetryOn
from heliostat.wire import PREFIX_KEY_HEADER
from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.sotw import SotwStream
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl
from heliostat.xds.translate import TranslationMemo, build_snapshot
from heliostat.xds.translate.affinity import RING_SIZE
from heliostat.xds.translate.clusters import full_scan
from heliostat.xds.translate.prefix_key import SOURCE as LUA_SOURCE
from tests.xds.helpers import ack, delta_request, sotw_request

REPO = Path(__file__).resolve().parents[3]

# The line numbers of the validation cases below refer to this text; keep it stable.
POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: traffic}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}
    eu-west: {rtt_ms: {ap-southeast: 160}}
    ap-southeast: {}
  gateway: {port: 10000, address: 127.0.0.1}
  tenants:
    - {name: acme, header: x-tenant, value: acme, regions: [eu-west]}
  models:
    - name: llama-70b
      slo: {ttft_ms: 800, network_budget_ms: 150}
      affinity: {header: x-session-id, bounded_load: 1.5, prefix_chars: 2000}
      outlier_detection: {consecutive_5xx: 4, interval: 2s}
      circuit_breakers:
        interactive: {max_requests: 500}
        batch: {max_requests: 50, max_retries: 2}
      retries: {num_retries: 3}
      versions: {v1: 90, v2: 10}
      canary:
        - {region: ap-southeast, version: v2, weight: 50}
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east, version: v1}
        - {address: 127.0.0.1:9102, region: us-east, version: v2}
        - {address: 127.0.0.1:9201, region: eu-west, version: v1}
        - {address: 127.0.0.1:9202, region: eu-west, version: v2}
        - {address: 127.0.0.1:9301, region: ap-southeast, version: v1}
    - name: qwen-7b
      endpoints:
        - {address: 127.0.0.1:9111, region: us-east}
        - {address: 127.0.0.1:9311, region: ap-southeast}
"""

PLAIN = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: plain}
spec:
  regions: {us-east: {rtt_ms: {eu-west: 80}}, eu-west: {}}
  models:
    - name: m
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
        - {address: 127.0.0.1:9201, region: eu-west}
"""

LLAMA, QWEN = "llama-70b", "qwen-7b"


def edit(old: str, new: str, text: str = POLICY) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return info.value.lines()


def snapshot_for(region: str | None, policy: Policy, view: RegionView | None = None) -> Snapshot:
    view = view or static_views(policy).for_region(region)
    return build_snapshot(policy, view, NodeGroup(Role.GATEWAY, region))


def clusters(snap: Snapshot) -> dict[str, cluster_pb2.Cluster]:
    return {n: r.message for n, r in snap.resources(TypeUrl.CLUSTER).items()}  # type: ignore[misc]


def assignment(snap: Snapshot, name: str) -> endpoint_pb2.ClusterLoadAssignment:
    message = snap.resources(TypeUrl.ENDPOINT)[name].message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    return message


def layout(snap: Snapshot, name: str) -> list[tuple[str, int, list[int]]]:
    """(region, priority, endpoint ports) per locality of a cluster."""
    return [
        (
            loc.locality.region,
            loc.priority,
            [e.endpoint.address.socket_address.port_value for e in loc.lb_endpoints],
        )
        for loc in assignment(snap, name).endpoints
    ]


def routes(snap: Snapshot) -> list[rc.Route]:
    (resource,) = snap.resources(TypeUrl.ROUTE).values()
    assert isinstance(resource.message, route_pb2.RouteConfiguration)
    (host,) = resource.message.virtual_hosts
    return list(host.routes)


def route(snap: Snapshot, name: str) -> rc.Route:
    return next(r for r in routes(snap) if r.name == name)


def manager(snap: Snapshot) -> hcm_pb2.HttpConnectionManager:
    (resource,) = snap.resources(TypeUrl.LISTENER).values()
    assert isinstance(resource.message, listener_pb2.Listener)
    result = hcm_pb2.HttpConnectionManager()
    assert resource.message.filter_chains[0].filters[0].typed_config.Unpack(result)
    return result


def with_batch_clusters(view: RegionView) -> RegionView:
    """The view as the control law makes it: each model also has `<model>.batch`."""
    extra = tuple(
        dataclasses.replace(c, name=c.name + ".batch", traffic_class=TrafficClass.BATCH)
        for c in view.clusters
    )
    return dataclasses.replace(view, clusters=view.clusters + extra)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY, "p.yaml")


# -- the policy ---------------------------------------------------------------------------------


def test_defaults_keep_what_the_clusters_had_before_the_traffic_policy() -> None:
    model = parse_policy(PLAIN).spec.models[0]
    assert model.affinity is None and model.versions == {} and model.canary == ()
    od = model.outlier_detection
    assert (od.consecutive_5xx, od.consecutive_gateway_failure) == (5, 2)
    assert od.enforcing_consecutive_gateway_failure == 100
    assert (od.interval, od.base_ejection_time, od.max_ejection_percent) == (1.0, 10.0, 100)
    assert od.success_rate is None and od.failure_percentage is None
    assert model.retries.num_retries == 2 and model.retries.per_try_timeout is None
    assert [c.value for c in model.retries.retry_on] == [
        "connect-failure",
        "refused-stream",
        "reset",
        "retriable-status-codes",
    ]
    assert model.retries.retriable_status_codes == (503,)


def test_the_full_example_and_the_repository_example_load(policy: Policy) -> None:
    assert policy.spec.tenants[0].regions == ("eu-west",)
    assert policy.spec.models[0].affinity is not None
    example = load_policy(REPO / "policies" / "traffic.yaml")
    assert example.spec.tenants and any(m.affinity for m in example.spec.models)
    assert any(m.versions for m in example.spec.models)


def _line_of(fragment: str, text: str) -> int:
    (index,) = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    return index


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        (
            "versions: {v1: 90, v2: 10}",
            "versions: {v1: 90, v2: 10, v3: 5}",
            "spec.models[0].versions.v3",
            "no endpoint of model 'llama-70b' has version 'v3'",
        ),
        (
            "{address: 127.0.0.1:9202, region: eu-west, version: v2}",
            "{address: 127.0.0.1:9202, region: eu-west, version: v9}",
            "spec.models[0].endpoints[3].version",
            "version 'v9' is not in the model's versions (v1, v2); it would get no traffic",
        ),
        (
            "{address: 127.0.0.1:9301, region: ap-southeast, version: v1}",
            "{address: 127.0.0.1:9301, region: ap-southeast}",
            "spec.models[0].endpoints[4]",
            "the model splits traffic by versions: give this endpoint a version",
        ),
        (
            "{region: ap-southeast, version: v2, weight: 50}",
            "{region: ap-southeest, version: v2, weight: 50}",
            "spec.models[0].canary[0].region",
            "unknown region 'ap-southeest' (did you mean 'ap-southeast'?)",
        ),
        (
            "{region: ap-southeast, version: v2, weight: 50}",
            "{region: ap-southeast, version: v3, weight: 50}",
            "spec.models[0].canary[0].version",
            "version 'v3' is not in the model's versions",
        ),
        (
            "{region: ap-southeast, version: v2, weight: 50}",
            "{region: ap-southeast, version: v2, weight: 60}\n"
            "        - {region: ap-southeast, version: v1, weight: 60}",
            "spec.models[0].canary[1].weight",
            "canary weights in 'ap-southeast' add up to 120% (over 100)",
        ),
        (
            "{region: ap-southeast, version: v2, weight: 50}",
            "{region: ap-southeast, version: v2, weight: 50}\n"
            "        - {region: ap-southeast, version: v1, weight: 30}",
            "spec.models[0].canary[1].weight",
            "canary weights in 'ap-southeast' cover every version but add up to 80%, not 100",
        ),
        (
            "{region: ap-southeast, version: v2, weight: 50}",
            "{region: ap-southeast, version: v2, weight: 50}\n"
            "        - {region: ap-southeast, version: v2, weight: 10}",
            "spec.models[0].canary[1].version",
            "a second canary for 'v2' in 'ap-southeast'",
        ),
        (
            "{name: acme, header: x-tenant, value: acme, regions: [eu-west]}",
            "{name: acme, header: x-tenant, value: acme, regions: [eu-wst]}",
            "spec.tenants[0].regions[0]",
            "unknown region 'eu-wst' (did you mean 'eu-west'?)",
        ),
        (
            "{name: acme, header: x-tenant, value: acme, regions: [eu-west]}",
            "{name: acme, header: x-model, value: acme, regions: [eu-west]}",
            "spec.tenants[0].header",
            "header 'x-model' is used by heliostat itself; choose another name",
        ),
        (
            "{name: acme, header: x-tenant, value: acme, regions: [eu-west]}",
            "{name: acme, header: x-session-id, value: acme, regions: [eu-west]}",
            "spec.tenants[0].header",
            "model 'llama-70b' hashes sessions on 'x-session-id'; a tenant needs its own header",
        ),
        (
            "{name: acme, header: x-tenant, value: acme, regions: [eu-west]}",
            "{name: acme, header: x-tenant, value: acme, regions: []}",
            "spec.tenants[0].regions",
            "a tenant needs at least one region",
        ),
        (
            "{name: acme, header: x-tenant, value: acme, regions: [eu-west]}",
            "{name: acme, header: X-Tenant, value: acme, regions: [eu-west]}",
            "spec.tenants[0].header",
            "invalid header name 'X-Tenant'",
        ),
        (
            "affinity: {header: x-session-id, bounded_load: 1.5, prefix_chars: 2000}",
            "affinity: {header: x-heliostat-session, bounded_load: 1.5}",
            "spec.models[0].affinity.header",
            "header 'x-heliostat-session' is used by heliostat itself",
        ),
        (
            "affinity: {header: x-session-id, bounded_load: 1.5, prefix_chars: 2000}",
            "affinity: {header: x-session-id, bounded_load: 0.5}",
            "spec.models[0].affinity.bounded_load",
            "input should be greater than or equal to 1",
        ),
        (
            "affinity: {header: x-session-id, bounded_load: 1.5, prefix_chars: 2000}",
            "affinity: {header: x-session-id, hash: consistent}",
            "spec.models[0].affinity.hash",
            "input should be 'ring_hash' or 'maglev'",
        ),
        (
            "affinity: {header: x-session-id, bounded_load: 1.5, prefix_chars: 2000}",
            "affinity: {header: x-session-id, prefix_char: 10}",
            "spec.models[0].affinity.prefix_char",
            "unknown key 'prefix_char' (did you mean 'prefix_chars'?)",
        ),
        (
            "batch: {max_requests: 50, max_retries: 2}",
            "batch: {max_retries: 2, retry_budget: {budget_percent: 10}}",
            "spec.models[0].circuit_breakers.batch.retry_budget",
            "give max_retries or retry_budget, not both",
        ),
        (
            "retries: {num_retries: 3}",
            "retries: {retriable_status_codes: []}",
            "spec.models[0].retries.retriable_status_codes",
            "retry_on has retriable-status-codes but no status code is listed",
        ),
        (
            "retries: {num_retries: 3}",
            "retries: {retry_on: [reset], retriable_status_codes: [503, 429]}",
            "spec.models[0].retries.retriable_status_codes",
            "these codes are ignored unless retry_on has retriable-status-codes",
        ),
        (
            "retries: {num_retries: 3}",
            "retries: {retry_on: [reset, reset]}",
            "spec.models[0].retries.retry_on[1]",
            "'reset' is listed twice",
        ),
        (
            "versions: {v1: 90, v2: 10}",
            "versions: {v1: 90, v2: 0}",
            "spec.models[0].versions.v2",
            "input should be greater than or equal to 1",
        ),
    ],
)
def test_each_traffic_problem_is_reported_at_its_line(
    old: str, new: str, path: str, message: str
) -> None:
    text = edit(old, new)
    lines = problems_of(text)
    matching = [line for line in lines if f": {path}: " in line and message in line]
    assert matching, lines
    (line,) = matching
    number = int(line.split(":")[1])
    assert 0 < number <= len(text.splitlines())
    # Located at the value to edit (the first line of a multi-line edit at most).
    assert number <= _line_of(new.splitlines()[-1].strip(), text)


def test_a_canary_without_versions_and_a_duplicate_tenant_are_reported() -> None:
    text = edit("      versions: {v1: 90, v2: 10}\n", "")
    text = edit(
        "    - {name: acme, header: x-tenant, value: acme, regions: [eu-west]}\n",
        "    - {name: acme, header: x-tenant, value: acme, regions: [eu-west]}\n"
        "    - {name: acme, header: x-tenant, value: acme, regions: [us-east]}\n",
        text,
    )
    lines = problems_of(text)
    assert any("spec.models[0].canary: a canary needs the model's versions" in x for x in lines)
    assert any("spec.tenants[1].name: duplicate tenant 'acme'" in x for x in lines)
    assert any("spec.tenants[1].value: spec.tenants[0] already matches" in x for x in lines)


# -- affinity ---------------------------------------------------------------------------------


def test_affinity_hashes_with_bounded_load_and_keeps_the_rest(policy: Policy) -> None:
    always = parse_policy(edit("prefix_chars: 2000}", "prefix_chars: 2000, mode: always}"))
    snap = snapshot_for("us-east", always)
    found = clusters(snap)
    for name, cluster in found.items():
        if name.startswith(LLAMA):
            assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
            hashing = cluster.common_lb_config.consistent_hashing_lb_config
            assert hashing.hash_balance_factor.value == 150
            why = cluster.metadata.filter_metadata["heliostat"]
            assert why.fields["lb"].string_value == "ring_hash"
            assert why.fields["why"].string_value == "affinity.mode is always"
            # A ring of one size whatever the weights: a light host coming or going does not
            # rescale every host's points (heliostat.xds.translate.affinity).
            ring = cluster.ring_hash_lb_config
            assert ring.minimum_ring_size.value == ring.maximum_ring_size.value == RING_SIZE
        else:
            assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
            assert not cluster.common_lb_config.HasField("consistent_hashing_lb_config")
            assert not cluster.HasField("metadata")
        # What the clusters had before stays: locality weights (in common_lb_config for a
        # hashing cluster, in the typed least-request policy otherwise: Envoy refuses both),
        # panic threshold, ejection.
        if cluster.HasField("load_balancing_policy"):
            assert not cluster.common_lb_config.HasField("locality_weighted_lb_config")
            typed = cluster.load_balancing_policy.policies[0].typed_extension_config
            config = least_request_pb2.LeastRequest()
            assert typed.typed_config.Unpack(config)
            assert config.locality_lb_config.HasField("locality_weighted_lb_config")
        else:
            assert cluster.lb_policy != cluster_pb2.Cluster.LEAST_REQUEST
            assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
        assert cluster.common_lb_config.healthy_panic_threshold.value == 25.0
        assert cluster.HasField("outlier_detection")
    maglev = parse_policy(
        edit(
            "bounded_load: 1.5, prefix_chars: 2000}",
            "bounded_load: 2.0, hash: maglev, mode: always}",
        )
    )
    cluster = clusters(snapshot_for("us-east", maglev))[LLAMA]
    assert cluster.lb_policy == cluster_pb2.Cluster.MAGLEV
    assert not cluster.HasField("ring_hash_lb_config")  # Maglev's table has a fixed size
    assert cluster.common_lb_config.consistent_hashing_lb_config.hash_balance_factor.value == 200
    default = parse_policy(edit("bounded_load: 1.5, prefix_chars: 2000}", "mode: always}"))
    cluster = clusters(snapshot_for("us-east", default))[LLAMA]
    factor = cluster.common_lb_config.consistent_hashing_lb_config.hash_balance_factor.value
    assert factor == round(Affinity().bounded_load * 100)  # the default


def test_auto_affinity_starts_hashing_on_trial_and_says_why(policy: Policy) -> None:
    """`mode: auto` (the default) starts hashing on trial, until the engines' prefix caches
    show whether prompts share prefixes (heliostat.balance.affinity); every cluster of the
    model says so in its metadata, and its routes hash whatever the cluster's policy (a
    least-request cluster ignores them), so a later switch changes the clusters only."""
    snap = snapshot_for("us-east", policy)
    for name, cluster in clusters(snap).items():
        if not name.startswith(LLAMA):
            continue
        assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
        hashing = cluster.common_lb_config.consistent_hashing_lb_config
        assert hashing.hash_balance_factor.value == 100  # the trial's: the tightest bound
        why = cluster.metadata.filter_metadata["heliostat"]
        assert why.fields["lb"].string_value == "ring_hash"
        assert why.fields["mode"].string_value == "auto"
        assert why.fields["why"].string_value.startswith("prefix affinity configured")
    headers = [h.header.header_name for h in route(snap, f"model:{LLAMA}").route.hash_policy]
    assert headers == ["x-session-id", PREFIX_KEY_HEADER]


def test_an_engine_without_prefix_cache_metrics_hashes_as_configured(policy: Policy) -> None:
    slo = "      slo: {ttft_ms: 800"
    tgi = parse_policy(edit(slo, "      engine: tgi\n" + slo))
    cluster = clusters(snapshot_for("us-east", tgi))[LLAMA]
    assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
    why = cluster.metadata.filter_metadata["heliostat"].fields["why"].string_value
    assert why == "tgi reports no prefix-cache hit rate: hashing as configured"


def test_routes_hash_the_session_then_the_prefix_key_set_by_lua(policy: Policy) -> None:
    snap = snapshot_for("us-east", policy)
    plain = route(snap, f"model:{LLAMA}")
    headers = [h.header.header_name for h in plain.route.hash_policy]
    assert headers == ["x-session-id", PREFIX_KEY_HEADER]
    lua = plain.metadata.filter_metadata["envoy.filters.http.lua"]
    assert lua.fields["prefix_chars"].number_value == 2000
    assert lua.fields["session_header"].string_value == "x-session-id"
    assert lua.fields["key_header"].string_value == PREFIX_KEY_HEADER
    qwen = route(snap, f"model:{QWEN}")
    assert not qwen.route.hash_policy and not qwen.metadata.filter_metadata
    filters = [f.name for f in manager(snap).http_filters]
    assert filters == [
        "envoy.filters.http.json_to_metadata",
        "envoy.filters.http.lua",
        "envoy.filters.http.router",
    ]
    config = lua_pb2.Lua()
    assert manager(snap).http_filters[1].typed_config.Unpack(config)
    assert "function envoy_on_request" in config.default_source_code.inline_string
    # Without prefix_chars anywhere, the listener carries no Lua at all.
    no_prefix = parse_policy(edit(", prefix_chars: 2000}", "}"))
    assert "envoy.filters.http.lua" not in [
        f.name for f in manager(snapshot_for("us-east", no_prefix)).http_filters
    ]


@pytest.mark.skipif(shutil.which("luajit") is None, reason="luajit is not installed")
def test_the_lua_prefix_key_is_the_same_for_a_shared_prefix_and_absent_with_a_session(
    tmp_path: Path,
) -> None:
    harness = tmp_path / "run.lua"
    harness.write_text(
        LUA_SOURCE
        + r"""
local function key(body, session)
  local h = {["x-session-id"] = session, ["x-heliostat-prefix-key"] = "client-sent"}
  local meta = {prefix_chars = 12, session_header = "x-session-id",
                key_header = "x-heliostat-prefix-key"}
  local handle = {}
  function handle:metadata() return {get = function(_, k) return meta[k] end} end
  function handle:headers()
    return {get = function(_, k) return h[k] end, remove = function(_, k) h[k] = nil end,
            replace = function(_, k, v) h[k] = v end}
  end
  function handle:body()
    return {length = function() return #body end,
            getBytes = function(_, i, n) return string.sub(body, i + 1, i + n) end}
  end
  envoy_on_request(handle)
  return tostring(h["x-heliostat-prefix-key"])
end
print(key('{"prompt": "You are kind. Question one"}'))
print(key('{"model": "m", "prompt": "You are kind. Question two", "stream": true}'))
print(key('{"messages": [{"role": "system", "content": "You are kind."}, ' ..
          '{"role": "user", "content": [{"type": "text", "text": "hi \\u00e9"}]}]}'))
print(key('{"prompt": "Something else entirely"}'))
print(key('{"prompt": "You are kind. Question one"}', "session-1"))
print(key('not json'))
"""
    )
    out = subprocess.run(
        ["luajit", str(harness)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    same, also_same, chat, other, with_session, broken = out
    assert same == also_same and len(same) == 16
    assert chat == same  # the first 12 characters are the system prompt's, in either format
    assert other != same
    assert with_session == "nil" and broken == "nil"  # and a client-sent key is removed


# -- outlier detection ----------------------------------------------------------------------------


def test_outlier_detection_defaults_and_options() -> None:
    default = clusters(snapshot_for("us-east", parse_policy(PLAIN)))["m"].outlier_detection
    assert default.consecutive_5xx.value == 5 and default.enforcing_consecutive_5xx.value == 100
    assert default.consecutive_gateway_failure.value == 2
    assert default.enforcing_consecutive_gateway_failure.value == 100  # Envoy's default is 0
    assert default.interval.ToMilliseconds() == 1000
    assert default.base_ejection_time.ToMilliseconds() == 10_000
    assert default.max_ejection_percent.value == 100
    assert default.enforcing_success_rate.value == 0  # Envoy's default is 100
    assert default.enforcing_failure_percentage.value == 0

    custom = parse_policy(
        PLAIN.replace(
            "    - name: m\n",
            "    - name: m\n"
            "      outlier_detection:\n"
            "        consecutive_gateway_failure: 0\n"
            "        success_rate: {minimum_hosts: 3, request_volume: 20, stdev_factor: 1.5}\n"
            "        failure_percentage: {threshold: 70}\n"
            "        max_ejection_percent: 50\n",
        )
    )
    od = clusters(snapshot_for("us-east", custom))["m"].outlier_detection
    assert od.enforcing_consecutive_gateway_failure.value == 0
    assert od.enforcing_success_rate.value == 100
    assert od.success_rate_minimum_hosts.value == 3
    assert od.success_rate_request_volume.value == 20
    assert od.success_rate_stdev_factor.value == 1500
    assert od.enforcing_failure_percentage.value == 100
    assert od.failure_percentage_threshold.value == 70
    assert od.failure_percentage_minimum_hosts.value == 5
    assert od.max_ejection_percent.value == 50


def _selection(cluster: cluster_pb2.Cluster) -> int:
    (policy,) = cluster.load_balancing_policy.policies
    config = least_request_pb2.LeastRequest()
    assert policy.typed_extension_config.typed_config.Unpack(config)
    return config.selection_method


def test_least_request_scans_every_host_only_while_a_fast_failing_replica_is_ejected_in_time() -> (
    None
):
    # A replica that fails fast holds the fewest requests in flight: a full scan sends it
    # every try of a request. Only when outlier detection ejects it before the last try
    # (a consecutive threshold <= num_retries, enforced, counting every retried failure)
    # does the cluster scan; otherwise two random choices.
    model = parse_policy(PLAIN).spec.models[0]

    def scans(hosts: int = 3, **changes: Any) -> bool:
        od = model.outlier_detection.model_copy(
            update={
                k: v for k, v in changes.items() if k in type(model.outlier_detection).model_fields
            }
        )
        retries = model.retries.model_copy(
            update={k: v for k, v in changes.items() if k in type(model.retries).model_fields}
        )
        changed = model.model_copy(update={"outlier_detection": od, "retries": retries})
        return full_scan(changed, hosts)

    assert scans()  # the defaults: 2 gateway failures in a row eject, 2 retries
    assert not scans(consecutive_5xx=0, consecutive_gateway_failure=0)  # detection off
    assert not scans(num_retries=1)  # ejected only after the request's last try
    assert scans(num_retries=1, consecutive_5xx=1)
    assert not scans(num_retries=0)
    assert not scans(enforcing_consecutive_gateway_failure=50)  # may not eject (5xx: 5 > 2)
    # A retried 500 is no gateway failure: only consecutive_5xx (5) counts it.
    assert not scans(retriable_status_codes=(500, 503))
    assert not scans(retry_on=(RetryOn.FIVE_XX,))
    assert scans(retry_on=(RetryOn.FIVE_XX,), consecutive_5xx=2)
    assert scans(retry_on=(RetryOn.GATEWAY_ERROR, RetryOn.CONNECT_FAILURE))
    # Outlier detection counts no 4xx: a replica refusing fast with 429 is never ejected.
    assert not scans(retriable_status_codes=(429, 503), consecutive_5xx=1)
    assert not scans(retry_on=(RetryOn.RETRIABLE_4XX, RetryOn.RESET))
    # The cluster must be allowed to eject one host.
    assert not scans(hosts=3, max_ejection_percent=10)
    assert scans(hosts=10, max_ejection_percent=10)

    # Translated: the default model's clusters scan; with outlier detection off they draw two.
    default = clusters(snapshot_for("us-east", parse_policy(PLAIN)))["m"]
    assert _selection(default) == least_request_pb2.LeastRequest.FULL_SCAN
    off = parse_policy(
        PLAIN.replace(
            "    - name: m\n",
            "    - name: m\n"
            "      outlier_detection: {consecutive_5xx: 0, consecutive_gateway_failure: 0}\n",
        )
    )
    drawn = clusters(snapshot_for("us-east", off))["m"]
    assert _selection(drawn) == least_request_pb2.LeastRequest.N_CHOICES


# -- circuit breakers and priority classes ------------------------------------------------------


def test_breakers_by_class_on_every_cluster_of_the_model(policy: Policy) -> None:
    view = with_batch_clusters(static_views(policy).for_region("us-east"))
    snap = snapshot_for("us-east", policy, view)
    llama = {n: c for n, c in clusters(snap).items() if n.startswith(LLAMA)}
    assert {f"{LLAMA}", f"{LLAMA}.batch", f"{LLAMA}@v1", f"{LLAMA}.batch~acme@v2"} <= set(llama)
    for cluster in llama.values():
        by_priority = {t.priority: t for t in cluster.circuit_breakers.thresholds}
        interactive, batch = by_priority[base_pb2.HIGH], by_priority[base_pb2.DEFAULT]
        assert interactive.max_requests.value == 500
        assert interactive.retry_budget.budget_percent.value == 20.0  # the default budget
        assert interactive.retry_budget.min_retry_concurrency.value == 10
        assert not interactive.HasField("max_retries")
        assert batch.max_requests.value == 50 and batch.max_retries.value == 2
        assert not batch.HasField("retry_budget")
        assert not batch.HasField("max_connections")  # unset: Envoy's default


def test_a_refusing_view_caps_what_is_in_flight_below_the_operators_breakers(
    policy: Policy,
) -> None:
    """While the law refuses it caps each cluster's requests in flight
    (`ClusterView.max_requests`, `balance.refusal.in_flight`): at both priorities, never
    above the operator's own threshold; a cluster built for the uncapped view is not reused
    for the capped one (the translation memo keys on the cap)."""
    view = with_batch_clusters(static_views(policy).for_region("us-east"))
    capped = dataclasses.replace(
        view,
        clusters=tuple(
            dataclasses.replace(c, max_requests=60 if c.name.endswith(".batch") else 12)
            for c in view.clusters
        ),
    )
    memo = TranslationMemo()
    group = NodeGroup(Role.GATEWAY, "us-east")
    before = clusters(build_snapshot(policy, view, group, memo=memo))
    after = clusters(build_snapshot(policy, capped, group, memo=memo))
    for name, cluster in after.items():
        if name not in (LLAMA, f"{LLAMA}.batch"):
            continue
        by_priority = {t.priority: t for t in cluster.circuit_breakers.thresholds}
        interactive, batch = by_priority[base_pb2.HIGH], by_priority[base_pb2.DEFAULT]
        if name == LLAMA:
            assert interactive.max_requests.value == 12 and batch.max_requests.value == 12
        else:  # the operator's batch breaker (50) is below the cap: it stays
            assert interactive.max_requests.value == 60 and batch.max_requests.value == 50
        assert batch.max_retries.value == 2  # the rest of the operator's thresholds stay
        untouched = {t.priority: t for t in before[name].circuit_breakers.thresholds}
        assert untouched[base_pb2.HIGH].max_requests.value == 500


def test_the_clusters_derived_from_a_capped_one_split_its_cap() -> None:
    """Every Envoy cluster has its own circuit breaker: the version clusters a gateway
    routes to split the law's cap (`planning.caps`), each version its own slots and the
    tolerated backlog by its traffic share, rather than each holding the whole cap on its
    part of the replicas; never above the operator's own breaker, the batch clusters and
    those of a tenant pinned away from the region uncapped."""
    policy = parse_policy(
        edit("interactive: {max_requests: 500}", "interactive: {max_requests: 5}"), "p.yaml"
    )
    view = with_batch_clusters(static_views(policy).for_region("us-east"))
    # us-east: 4 slots of v1 and 4 of v2, one gateway, a cap of 12 (a backlog of 4);
    # versions 90/10: v1 4 + 3.6, v2 4 + 0.4, rounded to add up to 12.
    info = InFlight(1, (("v1", 4), ("v2", 4)))
    capped = dataclasses.replace(
        view,
        clusters=tuple(
            c
            if c.name.endswith(".batch") or c.model != LLAMA
            else dataclasses.replace(c, max_requests=12, in_flight=info)
            for c in view.clusters
        ),
    )
    built = clusters(build_snapshot(policy, capped, NodeGroup(Role.GATEWAY, "us-east")))

    def thresholds(name: str) -> tuple[int, int]:
        by_priority = {t.priority: t for t in built[name].circuit_breakers.thresholds}
        high, default = by_priority[base_pb2.HIGH], by_priority[base_pb2.DEFAULT]
        return high.max_requests.value, default.max_requests.value

    # The operator's interactive breaker (5) is below v1's 8; its batch one (50) is not.
    assert thresholds(f"{LLAMA}@v1") == (5, 8)
    assert thresholds(f"{LLAMA}@v2") == (4, 4)
    routed = route(snapshot_for("us-east", policy, capped), f"model:{LLAMA}")
    names = [c.name for c in routed.route.weighted_clusters.clusters]
    assert names == [f"{LLAMA}@v1", f"{LLAMA}@v2"]
    assert sum(thresholds(n)[1] for n in names) == 12  # the region's cap, not 12 each
    # acme is pinned to eu-west: its clusters hold none of us-east's slots.
    for name in (f"{LLAMA}~acme@v1", f"{LLAMA}~acme@v2", f"{LLAMA}.batch@v1"):
        assert thresholds(name) == (5, 50), name


def test_batch_routes_use_the_batch_cluster_when_the_view_has_one() -> None:
    plain = parse_policy(PLAIN)
    before = snapshot_for("us-east", plain)  # static views: no batch cluster yet
    after = snapshot_for(
        "us-east", plain, with_batch_clusters(static_views(plain).for_region("us-east"))
    )
    for snap, batch_cluster in ((before, "m"), (after, "m.batch")):
        batch, interactive = route(snap, "model:m:batch"), route(snap, "model:m")
        assert batch.route.cluster == batch_cluster and batch.route.priority == base_pb2.DEFAULT
        assert interactive.route.cluster == "m" and interactive.route.priority == base_pb2.HIGH
        priority = [h for h in batch.match.headers if h.name == "x-priority"]
        assert [h.string_match.exact for h in priority] == ["batch"]
        names = [r.name for r in routes(snap)]
        assert names.index("model:m:batch") < names.index("model:m")  # more specific first


# -- retries ------------------------------------------------------------------------------------


def test_retry_policy_and_the_per_try_timeout_of_streams_only(policy: Policy) -> None:
    snap = snapshot_for("us-east", policy)
    unary, stream = route(snap, f"model:{QWEN}"), route(snap, f"model:{QWEN}:stream")
    for r in (unary, stream):
        retry = r.route.retry_policy
        assert retry.retry_on == "connect-failure,refused-stream,reset,retriable-status-codes"
        assert list(retry.retriable_status_codes) == [503]
        assert retry.num_retries.value == 2
        assert retry.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
        assert retry.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert not unary.route.retry_policy.HasField("per_try_timeout")
    # 2 x the default ttft_ms of 1000 ms.
    assert stream.route.retry_policy.per_try_timeout.ToMilliseconds() == 2000
    assert route(snap, f"model:{LLAMA}:stream").route.retry_policy.num_retries.value == 3
    llama_stream = route(snap, f"model:{LLAMA}:stream").route.retry_policy
    assert llama_stream.per_try_timeout.ToMilliseconds() == 1600  # 2 x 800 ms
    streamed = [m for m in stream.match.dynamic_metadata if m.path[0].key == "stream"]
    assert streamed and streamed[0].value.bool_match is True
    names = [r.name for r in routes(snap)]
    assert names.index(f"model:{QWEN}:stream") < names.index(f"model:{QWEN}")

    off = parse_policy(edit("retries: {num_retries: 3}", "retries: {per_try_timeout: 0s}"))
    names = [r.name for r in routes(snapshot_for("us-east", off))]
    assert f"model:{LLAMA}" in names and f"model:{LLAMA}:stream" not in names


# -- versions and canaries ------------------------------------------------------------------------


def test_version_clusters_keep_the_views_localities_with_one_versions_endpoints(
    policy: Policy,
) -> None:
    snap = snapshot_for("us-east", policy)
    assert layout(snap, LLAMA) == [
        ("us-east", 0, [9101, 9102]),
        ("eu-west", 1, [9201, 9202]),
        ("ap-southeast", 2, [9301]),
    ]
    assert layout(snap, f"{LLAMA}@v1") == [
        ("us-east", 0, [9101]),
        ("eu-west", 1, [9201]),
        ("ap-southeast", 2, [9301]),
    ]
    # No v2 in ap-southeast: the priorities stay dense.
    assert layout(snap, f"{LLAMA}@v2") == [("us-east", 0, [9102]), ("eu-west", 1, [9202])]
    ap = snapshot_for("ap-southeast", policy)
    assert layout(ap, f"{LLAMA}@v2") == [("eu-west", 0, [9202]), ("us-east", 1, [9102])]


def test_subset_keeps_locality_weights_and_drop_percentage() -> None:
    view = ClusterView(
        name="m",
        model="m",
        localities=static_views(parse_policy(PLAIN)).for_region("us-east").clusters[0].localities,
        drop_overload_percent=12.0,
        traffic_class=TrafficClass.BATCH,
    )
    weighted = dataclasses.replace(
        view, localities=tuple(dataclasses.replace(loc, weight=7) for loc in view.localities)
    )
    only_eu = subset(weighted, "m~x", lambda e: e.region == "eu-west")
    assert [(loc.region, loc.priority, loc.weight) for loc in only_eu.localities] == [
        ("eu-west", 0, 7)
    ]
    assert only_eu.drop_overload_percent == 12.0
    assert only_eu.traffic_class is TrafficClass.BATCH and only_eu.name == "m~x"


def test_routes_split_by_region_weights_and_pick_by_session_hash(policy: Policy) -> None:
    expected = {"us-east": [9000, 1000], "ap-southeast": [5000, 5000], None: [9000, 1000]}
    for region, weights in expected.items():
        action = route(snapshot_for(region, policy), f"model:{LLAMA}").route
        split = action.weighted_clusters
        assert [(c.name, c.weight.value) for c in split.clusters] == [
            (f"{LLAMA}@v1", weights[0]),
            (f"{LLAMA}@v2", weights[1]),
        ]
        assert split.use_hash_policy.value is True
        assert action.hash_policy[0].header.header_name == "x-session-id"
    # Versions without affinity still hash the default session header (version pinning only).
    text = edit(
        "      affinity: {header: x-session-id, bounded_load: 1.5, prefix_chars: 2000}\n", ""
    )
    action = route(snapshot_for("us-east", parse_policy(text)), f"model:{LLAMA}").route
    assert [h.header.header_name for h in action.hash_policy] == ["x-session-id"]
    assert clusters(snapshot_for("us-east", parse_policy(text)))[f"{LLAMA}@v1"].lb_policy == (
        cluster_pb2.Cluster.LEAST_REQUEST
    )


def test_version_weights_add_up_and_canaries_take_their_share_first() -> None:
    text = edit("versions: {v1: 90, v2: 10}", "versions: {v1: 1, v2: 1, v3: 1}")
    text = edit(
        "{address: 127.0.0.1:9301, region: ap-southeast, version: v1}",
        "{address: 127.0.0.1:9301, region: ap-southeast, version: v3}",
        text,
    )
    model = parse_policy(text).spec.models[0]
    assert version_weights(model, "us-east") == {"v1": 3334, "v2": 3333, "v3": 3333}
    assert sum(version_weights(model, "eu-west").values()) == TOTAL
    # ap-southeast: v2 is the canary at 50%; v1 and v3 share the other half.
    assert version_shares(model, "ap-southeast") == {"v1": 0.25, "v2": 0.5, "v3": 0.25}
    assert version_weights(model, "ap-southeast") == {"v1": 2500, "v2": 5000, "v3": 2500}


def test_a_canary_at_100_percent_leaves_the_other_versions_out(policy: Policy) -> None:
    full = parse_policy(edit("version: v2, weight: 50}", "version: v2, weight: 100}"))
    action = route(snapshot_for("ap-southeast", full), f"model:{LLAMA}").route
    assert action.cluster == f"{LLAMA}@v2"


# -- tenant pinning -------------------------------------------------------------------------------


def test_tenant_clusters_hold_only_the_pinned_regions_from_every_view(policy: Policy) -> None:
    for region in ("us-east", "eu-west", "ap-southeast", None):
        snap = snapshot_for(region, policy)
        assert layout(snap, f"{LLAMA}~acme@v1") == [("eu-west", 0, [9201])]
        assert layout(snap, f"{LLAMA}~acme@v2") == [("eu-west", 0, [9202])]
        # qwen-7b has no endpoint in eu-west: the tenant's cluster is empty (503, never moved).
        assert layout(snap, f"{QWEN}~acme") == []
        assert f"{LLAMA}~acme" not in clusters(snap)  # versioned: only per-version clusters


def test_tenant_routes_come_first_and_failures_become_a_json_503(policy: Policy) -> None:
    snap = snapshot_for("us-east", policy)
    names = [r.name for r in routes(snap)]
    tenant = route(snap, f"tenant:acme:model:{QWEN}")
    assert names.index(f"tenant:acme:model:{QWEN}") < names.index(f"model:{QWEN}")
    assert names.index(f"tenant:acme:model:{QWEN}:body") < names.index(f"model:{QWEN}:body")
    matchers = {h.name: h.string_match.exact for h in tenant.match.headers}
    assert matchers == {"x-model": QWEN, "x-tenant": "acme"}
    assert tenant.route.cluster == f"{QWEN}~acme"
    batch = route(snap, f"tenant:acme:model:{LLAMA}:batch:stream")
    assert [c.name for c in batch.route.weighted_clusters.clusters] == [
        f"{LLAMA}~acme@v1",
        f"{LLAMA}~acme@v2",
    ]
    refused, overflow, mapper = manager(snap).local_reply_config.mappers  # refusals first
    assert list(refused.filter.response_flag_filter.flags) == ["DO", "UDO"]
    assert refused.status_code.value == 429
    # A circuit breaker's overflow keeps Envoy's 503 and gains the same retry-after.
    assert list(overflow.filter.response_flag_filter.flags) == ["UO"]
    assert not overflow.HasField("status_code")
    assert [h.header.key for h in overflow.headers_to_add] == ["retry-after"]
    assert overflow.headers_to_add[0].header.value == refused.headers_to_add[0].header.value
    header, flags = mapper.filter.and_filter.filters
    assert header.header_filter.header.name == "x-tenant"
    assert header.header_filter.header.string_match.exact == "acme"
    assert set(flags.response_flag_filter.flags) == {"UH", "UF", "UC", "URX", "UT"}
    assert mapper.status_code.value == 503
    assert mapper.body_format_override.content_type == "application/json"
    body = json.loads(mapper.body_format_override.text_format_source.inline_string)
    assert body["error"]["type"] == "tenant_region_pinned"
    assert body["error"]["regions"] == ["eu-west"]
    plain = manager(snapshot_for("us-east", parse_policy(PLAIN))).local_reply_config
    # only the refusals: the law's 429 and the circuit breakers' 503 (status kept)
    assert [m.status_code.value for m in plain.mappers] == [429, 0]


# -- model from the JSON body ---------------------------------------------------------------------


def test_body_model_routes_follow_the_header_routes_and_precede_the_404s() -> None:
    snap = snapshot_for("us-east", parse_policy(PLAIN))
    (first, *_rest) = manager(snap).http_filters
    assert first.name == "envoy.filters.http.json_to_metadata"
    config = json_to_metadata_pb2.JsonToMetadata()
    assert first.typed_config.Unpack(config)
    rules = {r.selectors[0].key: r.on_present for r in config.request_rules.rules}
    assert rules["model"].metadata_namespace == "heliostat" and rules["model"].key == "model"
    assert rules["stream"].key == "stream"
    assert list(config.request_rules.allow_content_types) == ["application/json"]

    names = [r.name for r in routes(snap)]
    assert names == [
        "openai:models",
        "model:m:batch:stream",
        "model:m:batch",
        "model:m:stream",
        "model:m",
        "model:m:body:batch:stream",
        "model:m:body:batch",
        "model:m:body:stream",
        "model:m:body",
        "openai:invalid-body",
        "unknown-model",
        "unknown-body-model",
        "missing-model",
    ]
    body = route(snap, "model:m:body")
    (absent,) = body.match.headers
    assert absent.name == "x-model" and absent.present_match and absent.invert_match
    (model,) = body.match.dynamic_metadata
    assert model.filter == "heliostat" and [p.key for p in model.path] == ["model"]
    assert model.value.string_match.exact == "m"
    unknown = route(snap, "unknown-body-model")
    assert unknown.direct_response.status == 404
    assert unknown.match.dynamic_metadata[0].value.present_match


# -- xDS: an updated cluster gets its endpoints again ---------------------------------------------


def _cluster_only_change() -> tuple[Snapshot, Snapshot]:
    before = parse_policy(PLAIN)
    after = parse_policy(
        PLAIN.replace("    - name: m\n", "    - name: m\n      connect_timeout: 3s\n")
    )
    # With the LEDS form: SotW streams must not see it, delta streams must resend it.
    group = NodeGroup(Role.GATEWAY, "us-east")
    a, b = (
        build_snapshot(p, static_views(p).for_region("us-east"), group, leds=True)
        for p in (before, after)
    )
    assert a.resources(TypeUrl.ENDPOINT)["m"].version == b.resources(TypeUrl.ENDPOINT)["m"].version
    assert a.resources(TypeUrl.CLUSTER)["m"].version != b.resources(TypeUrl.CLUSTER)["m"].version
    return a, b


def test_sotw_resends_endpoints_after_updating_a_cluster() -> None:
    before, after = _cluster_only_change()
    stream = SotwStream("gw")
    stream.on_snapshot(before)
    for type_url in PUSH_ORDER:
        names = ["m"] if type_url is TypeUrl.ENDPOINT else None
        if type_url is TypeUrl.ROUTE:
            names = ["heliostat_models"]
        (response,) = stream.on_request(sotw_request(type_url, names)).responses
        assert stream.on_request(ack(response, names)).responses == []
    responses = stream.on_snapshot(after).responses
    # Envoy keeps an updated cluster warming until it gets its ClusterLoadAssignment.
    assert [TypeUrl(r.type_url) for r in responses] == [TypeUrl.CLUSTER, TypeUrl.ENDPOINT]
    # An equal snapshot afterwards sends nothing.
    for response in responses:
        names = ["m"] if TypeUrl(response.type_url) is TypeUrl.ENDPOINT else None
        stream.on_request(ack(response, names))
    assert stream.on_snapshot(after).responses == []


def test_delta_resends_endpoints_after_updating_a_cluster() -> None:
    before, after = _cluster_only_change()
    stream = DeltaStream("gw")
    stream.on_snapshot(before)
    (assignment,) = before.for_delta().resources(TypeUrl.ENDPOINT).values()
    assert isinstance(assignment.message, endpoint_pb2.ClusterLoadAssignment)
    globs = [
        e.leds_cluster_locality_config.leds_collection_name for e in assignment.message.endpoints
    ]
    assert globs and all(g.startswith("xdstp://") and g.endswith("/*") for g in globs)
    subscriptions = {
        TypeUrl.ENDPOINT: ["m"],
        TypeUrl.LB_ENDPOINT: globs,
        TypeUrl.ROUTE: ["heliostat_models"],
    }
    for type_url in PUSH_ORDER:
        (response,) = stream.on_request(
            delta_request(type_url, subscriptions.get(type_url, []))
        ).responses
        stream.on_request(delta_request(type_url, nonce=response.nonce))
    responses = stream.on_snapshot(after).responses
    # The updated cluster's new LEDS subscriptions fill only from what is sent next.
    assert [TypeUrl(r.type_url) for r in responses] == [
        TypeUrl.CLUSTER,
        TypeUrl.ENDPOINT,
        TypeUrl.LB_ENDPOINT,
    ]
    assert [r.name for r in responses[1].resources] == ["m"]
    assert {r.name for r in responses[2].resources} == set(after.members["m"])
    for response in responses:
        stream.on_request(delta_request(TypeUrl(response.type_url), nonce=response.nonce))
    assert stream.on_snapshot(after).responses == []
