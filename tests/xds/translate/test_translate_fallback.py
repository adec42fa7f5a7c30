"""The fallback model without sockets: its validation (each problem at its line) and its
translation (route metadata for the Lua filter, the served-model header, tenants)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from heliostat.admin.state import describe_views
from heliostat.balance import FallbackView, RegionView, static_views
from heliostat.policy import Policy, PolicyError, load_policy, parse_policy
from heliostat.wire import FALLBACK_FROM_HEADER, PREFIX_KEY_HEADER, SERVED_MODEL_HEADER
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import build_snapshot
from heliostat.xds.translate.prefix_key import SOURCE as LUA_SOURCE

# The line numbers below refer to this text; keep it stable.
POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: fallback}
spec:
  regions:
    us-east: {rtt_ms: {eu-west: 80, ap-southeast: 210}}
    eu-west: {rtt_ms: {ap-southeast: 160}}
    ap-southeast: {}
  tenants:
    - {name: acme, header: x-tenant, value: acme, regions: [eu-west]}
    - {name: zeta, header: x-tenant, value: zeta, regions: [ap-southeast]}
  models:
    - name: llama-70b
      affinity: {header: x-session-id, prefix_chars: 100}
      fallback: {model: llama-8b, max_share: 0.5}
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
        - {address: 127.0.0.1:9201, region: eu-west}
        - {address: 127.0.0.1:9301, region: ap-southeast}
    - name: llama-8b
      versions: {v1: 80, v2: 20}
      endpoints:
        - {address: 127.0.0.1:9111, region: us-east, version: v1}
        - {address: 127.0.0.1:9211, region: eu-west, version: v2}
    - name: qwen-7b
      endpoints:
        - {address: 127.0.0.1:9121, region: us-east}
"""


def edit(old: str, new: str, text: str = POLICY) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return info.value.lines()


# -- the policy ---------------------------------------------------------------------------------


def test_the_fallback_section_loads_with_its_default_share() -> None:
    policy = parse_policy(POLICY)
    llama = policy.model("llama-70b")
    assert llama is not None and llama.fallback is not None
    assert (llama.fallback.model, llama.fallback.max_share) == ("llama-8b", 0.5)
    default = parse_policy(edit("{model: llama-8b, max_share: 0.5}", "{model: llama-8b}"))
    found = default.model("llama-70b")
    assert found is not None and found.fallback is not None and found.fallback.max_share == 0.5
    assert parse_policy(edit("max_share: 0.5", "max_share: 1")).spec.models[0].fallback


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "message"),
    [
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8c, max_share: 0.5}",
            15,
            "spec.models[0].fallback.model",
            "unknown model 'llama-8c' (did you mean 'llama-8b'?); the fallback must be another "
            "model of this policy (llama-8b, qwen-7b)",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-70b}",
            15,
            "spec.models[0].fallback.model",
            "model 'llama-70b' cannot fall back to itself",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, max_share: 0}",
            15,
            "spec.models[0].fallback.max_share",
            "input should be greater than 0",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, max_share: 1.5}",
            15,
            "spec.models[0].fallback.max_share",
            "input should be less than or equal to 1",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, max_share: '0.5'}",
            15,
            "spec.models[0].fallback.max_share",
            "input should be a valid number",
        ),
        (
            "fallback: {model: llama-8b, max_share: 0.5}",
            "fallback: {model: llama-8b, share: 0.5}",
            15,
            "spec.models[0].fallback.share",
            "unknown key 'share' (did you mean 'max_share'?)",
        ),
        (
            "    - name: llama-8b\n",
            "    - name: llama-8b\n      fallback: {model: llama-70b}\n",
            15,
            "spec.models[0].fallback.model",
            "fallback cycle llama-70b -> llama-8b -> llama-70b",
        ),
    ],
)
def test_each_fallback_problem_is_reported_at_its_line(
    old: str, new: str, line: int, path: str, message: str
) -> None:
    lines = problems_of(edit(old, new))
    assert f"p.yaml:{line}: {path}: {message}" in "\n".join(lines), lines


def test_a_cycle_through_three_models_is_reported_once_and_a_chain_is_fine() -> None:
    chain = edit(
        "    - name: llama-8b\n", "    - name: llama-8b\n      fallback: {model: qwen-7b}\n"
    )
    assert parse_policy(chain).model("llama-8b") is not None  # a -> b -> c: no cycle
    cycle = edit(
        "    - name: qwen-7b\n", "    - name: qwen-7b\n      fallback: {model: llama-70b}\n", chain
    )
    lines = problems_of(cycle)
    assert len(lines) == 1, lines
    assert "llama-70b -> llama-8b -> qwen-7b -> llama-70b" in lines[0]


# -- translation ----------------------------------------------------------------------------------

LLAMA, SMALL, QWEN = "llama-70b", "llama-8b", "qwen-7b"
LUA = "envoy.filters.http.lua"


def view_with(
    policy: Policy, region: str | None, share: float, tenants: Mapping[str, float] | None = None
) -> RegionView:
    """The static view of `region` with the control law's fallback shares set."""
    view = static_views(policy).for_region(region)
    reason = {"state": "exhausted", "share": share, "pressure": 1.5, "detail": "saturated"}
    fallbacks = [FallbackView(LLAMA, SMALL, share, None, reason)]
    fallbacks += [FallbackView(LLAMA, SMALL, s, t, reason) for t, s in (tenants or {}).items()]
    return dataclasses.replace(view, fallbacks=tuple(fallbacks))


def routes_of(policy: Policy, view: RegionView) -> dict[str, rc.Route]:
    snap = build_snapshot(policy, view, NodeGroup(Role.GATEWAY, view.region))
    (resource,) = snap.resources(TypeUrl.ROUTE).values()
    assert isinstance(resource.message, route_pb2.RouteConfiguration)
    (host,) = resource.message.virtual_hosts
    return {r.name: r for r in host.routes}


def fallback_of(route: rc.Route) -> dict[str, object] | None:
    lua = route.metadata.filter_metadata.get(LUA)
    if lua is None or "fallback" not in lua.fields:
        return None
    return dict(json_format.MessageToDict(lua.fields["fallback"].struct_value))


def test_the_models_routes_carry_the_views_share_for_the_lua_program() -> None:
    policy = parse_policy(POLICY)
    found = routes_of(policy, view_with(policy, "us-east", 0.25))
    llama = [r for name, r in found.items() if name.startswith(f"model:{LLAMA}")]
    assert len(llama) == 8  # header and body routes x batch/interactive x stream or not
    for route in llama:
        settings = fallback_of(route)
        assert settings == {
            "model": SMALL,
            "from": LLAMA,
            "share": 0.25,
            "session_header": "x-session-id",
            "model_header": "x-model",
            "from_header": FALLBACK_FROM_HEADER,
        }
        # The prefix key settings stay beside it, for requests that are not moved.
        lua = route.metadata.filter_metadata[LUA]
        assert lua.fields["prefix_chars"].number_value == 100
        why = route.metadata.filter_metadata["heliostat"].fields["fallback"].struct_value
        assert why.fields["share"].number_value == 0.25
        assert why.fields["reason"].struct_value.fields["state"].string_value == "exhausted"
    # The fallback's and the other models' routes move nothing.
    assert all(fallback_of(r) is None for n, r in found.items() if SMALL in n or QWEN in n)


def test_without_a_share_no_route_moves_but_the_listener_keeps_its_lua() -> None:
    policy = parse_policy(POLICY)
    view = static_views(policy).for_region("us-east")
    assert [(f.model, f.share) for f in view.fallbacks] == [(LLAMA, 0.0)] + [(LLAMA, 0.0)] * 2
    found = routes_of(policy, view)
    assert all(fallback_of(r) is None for r in found.values())
    # No prefix key and no fallback anywhere: no Lua at all; a fallback alone: the Lua is there.
    plain = edit("      affinity: {header: x-session-id, prefix_chars: 100}\n", "")
    for text, expected in (
        (plain, True),
        (edit("      fallback: {model: llama-8b, max_share: 0.5}\n", "", plain), False),
    ):
        snap = build_snapshot(
            parse_policy(text),
            static_views(parse_policy(text)).for_region("us-east"),
            NodeGroup(Role.GATEWAY, "us-east"),
        )
        (resource,) = snap.resources(TypeUrl.LISTENER).values()
        assert isinstance(resource.message, listener_pb2.Listener)
        manager = hcm_pb2.HttpConnectionManager()
        assert resource.message.filter_chains[0].filters[0].typed_config.Unpack(manager)
        assert (LUA in [f.name for f in manager.http_filters]) is expected


def test_every_model_route_names_the_model_that_serves() -> None:
    policy = parse_policy(POLICY)
    found = routes_of(policy, view_with(policy, "eu-west", 0.5, {"acme": 0.2}))
    for name, route in found.items():
        served = [
            (h.header.key, h.header.value)
            for h in route.response_headers_to_add
            if h.header.key == SERVED_MODEL_HEADER
        ]
        if route.HasField("direct_response"):  # the 404s name no model
            assert served == [], name
            continue
        model = next(m for m in (LLAMA, SMALL, QWEN) if f"model:{m}" in name)
        assert served == [(SERVED_MODEL_HEADER, model)], name
        (option,) = [
            h for h in route.response_headers_to_add if h.header.key == SERVED_MODEL_HEADER
        ]
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_a_tenants_fallback_needs_the_fallback_model_inside_its_regions() -> None:
    policy = parse_policy(POLICY)
    # acme is pinned to eu-west, where llama-8b has a replica; zeta to ap-southeast, where
    # it has none: zeta's requests are never moved, whatever the share says.
    found = routes_of(policy, view_with(policy, "us-east", 0.0, {"acme": 0.3, "zeta": 0.4}))
    for name, route in found.items():
        if not name.startswith("tenant:") or f"model:{LLAMA}" not in name:
            continue
        settings = fallback_of(route)
        if name.startswith("tenant:acme:"):
            assert settings is not None and settings["share"] == 0.3, name
        else:
            assert settings is None, name
    assert all(fallback_of(r) is None for n, r in found.items() if n.startswith("model:"))
    # The moved requests meet the fallback's own tenant routes, pinned to acme's regions.
    acme = found[f"tenant:acme:model:{SMALL}"]
    assert acme.route.HasField("weighted_clusters")
    names = [c.name for c in acme.route.weighted_clusters.clusters]
    assert names == [f"{SMALL}~acme@v1", f"{SMALL}~acme@v2"]


def test_a_fallback_with_a_prefix_key_gets_its_own_settings_in_the_metadata() -> None:
    text = edit(
        "    - name: llama-8b\n",
        "    - name: llama-8b\n      affinity: {header: x-user, prefix_chars: 50}\n",
    )
    policy = parse_policy(text)
    settings = fallback_of(routes_of(policy, view_with(policy, "us-east", 0.1))[f"model:{LLAMA}"])
    assert settings is not None
    assert settings["prefix_chars"] == 50
    assert settings["prefix_session_header"] == "x-user"
    assert settings["key_header"] == PREFIX_KEY_HEADER
    assert settings["session_header"] == "x-session-id"  # the sticky decision: the caller's


# -- the Lua program (run by luajit with a stand-in for Envoy's handle) -------------------------

HARNESS = r"""
local function request(meta, h, body)
  local state = {cleared = false, body = body, headers = h}
  local handle = {}
  function handle:metadata() return {get = function(_, k) return meta[k] end} end
  function handle:headers()
    return {get = function(_, k) return h[k] end, remove = function(_, k) h[k] = nil end,
            replace = function(_, k, v) h[k] = v end}
  end
  function handle:clearRouteCache() state.cleared = true end
  function handle:body()
    if state.body == nil then return nil end
    return {length = function() return #state.body end,
            getBytes = function(_, i, n) return string.sub(state.body, i + 1, i + n) end,
            setBytes = function(_, s) state.body = s end}
  end
  envoy_on_request(handle)
  return state
end

local function fallback(share)
  return {fallback = {model = "small", from = "big", share = share,
                      session_header = "x-session-id", model_header = "x-model",
                      from_header = "x-heliostat-fallback-from"}}
end

local function show(state)
  print(string.format("%s|%s|%s|%s", tostring(state.cleared), tostring(state.headers["x-model"]),
        tostring(state.headers["x-heliostat-fallback-from"]), tostring(state.body)))
end

-- 1. a share of 1 moves everything: header, route cache, body model
show(request(fallback(1.0), {["x-model"] = "big", ["x-request-id"] = "r1"},
             '{"model": "big", "prompt": "hi", "stream": true}'))
-- 2. routed by the body's model alone: the header is added
show(request(fallback(1.0), {["x-request-id"] = "r2"}, '{"prompt": "hi", "model":"big"}'))
-- 3. a share of 0 moves nothing
show(request(fallback(0.0), {["x-model"] = "big", ["x-request-id"] = "r3"}, '{"model": "big"}'))
-- 4. a body without a model, and one that is not JSON, are left as they are
show(request(fallback(1.0), {["x-model"] = "big"}, '{"prompt": "no model"}'))
show(request(fallback(1.0), {["x-model"] = "big"}, 'not json'))

-- 5. sessions: the same session always decides the same; about `share` of them move, and
-- those moved at 20% are still moved at 40%
local moved20, moved40, kept, flips = 0, 0, true, 0
for i = 1, 2000 do
  local sid = "session-" .. i
  local a = request(fallback(0.2), {["x-model"] = "big", ["x-session-id"] = sid}, '{}').cleared
  local b = request(fallback(0.2), {["x-model"] = "big", ["x-session-id"] = sid}, '{}').cleared
  local c = request(fallback(0.4), {["x-model"] = "big", ["x-session-id"] = sid}, '{}').cleared
  if a ~= b then flips = flips + 1 end
  if a then moved20 = moved20 + 1 end
  if c then moved40 = moved40 + 1 end
  if a and not c then kept = false end
end
print(string.format("sessions|%d|%d|%d|%s", flips, moved20, moved40, tostring(kept)))

-- 6. no session: by request id, about `share` of them
local by_id = 0
for i = 1, 2000 do
  local rid = string.format("%08x-4f2a-4b7e-9c1d-%012x", i * 7919, i * 104729)
  if request(fallback(0.3), {["x-model"] = "big", ["x-request-id"] = rid}, '{}').cleared then
    by_id = by_id + 1
  end
end
print(string.format("requests|%d", by_id))

-- 7. the fallback hashes on a prefix key: the moved request gets the fallback's key
local meta = fallback(1.0)
meta.fallback.prefix_chars = 5
meta.fallback.prefix_session_header = "x-user"
meta.fallback.key_header = "x-heliostat-prefix-key"
meta.prefix_chars = 1000
meta.session_header = "x-session-id"
meta.key_header = "x-heliostat-prefix-key"
local s = request(meta, {["x-model"] = "big", ["x-request-id"] = "r7", ["x-session-id"] = "s"},
                  '{"model": "big", "prompt": "hello world"}')
local t = request(meta, {["x-model"] = "big", ["x-request-id"] = "r8"},
                  '{"model": "big", "prompt": "hello there"}')
print(string.format("prefix|%s|%s|%s", tostring(s.headers["x-heliostat-prefix-key"]),
      tostring(t.headers["x-heliostat-prefix-key"]), s.body))
"""


@pytest.mark.skipif(shutil.which("luajit") is None, reason="luajit is not installed")
def test_the_lua_program_moves_a_sticky_share_and_rewrites_the_body_model(tmp_path: Path) -> None:
    harness = tmp_path / "run.lua"
    harness.write_text(LUA_SOURCE + HARNESS)
    out = subprocess.run(
        ["luajit", str(harness)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    moved, by_body, unmoved, no_model, not_json, sessions, requests, prefix = out
    assert moved == ('true|small|big|{"model": "small", "prompt": "hi", "stream": true}')
    assert by_body == 'true|small|big|{"prompt": "hi", "model":"small"}'
    assert unmoved == 'false|big|nil|{"model": "big"}'
    assert no_model == 'true|small|big|{"prompt": "no model"}'
    assert not_json == "true|small|big|not json"
    _, flips, at20, at40, kept = sessions.split("|")
    assert int(flips) == 0 and kept == "true"
    assert abs(int(at20) / 2000 - 0.2) < 0.04 and abs(int(at40) / 2000 - 0.4) < 0.04
    assert abs(int(requests.split("|")[1]) / 2000 - 0.3) < 0.04
    _, with_session, without, body = prefix.split("|")
    # The fallback's session header is x-user, absent here: both get the fallback's key, on
    # its first 5 characters ("hello"), so they are equal.
    assert with_session == without and len(with_session) == 16
    assert body == '{"model": "small", "prompt": "hello world"}'


# -- /debug/state -----------------------------------------------------------------------------


def test_debug_state_shows_the_fallback_and_the_derived_clusters_of_every_view() -> None:
    policy = parse_policy(POLICY)
    views = static_views(policy)
    views = dataclasses.replace(
        views,
        by_region={
            **views.by_region,
            "eu-west": view_with(policy, "eu-west", 0.35, {"acme": 0.1, "zeta": 0.0}),
        },
    )
    state = describe_views(views, policy)
    eu = state["regions"]["eu-west"]
    assert eu[LLAMA]["fallback"] == {
        "model": SMALL,
        "share": 0.35,
        "reason": {"state": "exhausted", "share": 0.35, "pressure": 1.5, "detail": "saturated"},
    }
    assert {t: f["share"] for t, f in eu[LLAMA]["tenant_fallbacks"].items()} == {
        "acme": 0.1,
        "zeta": 0.0,
    }
    assert "fallback" not in eu[SMALL] and "fallback" not in eu[QWEN]
    # Version and tenant clusters, as Envoy holds them, with what they come from.
    assert eu[f"{SMALL}@v2"] | {"endpoints": [], "localities": []} == {
        "model": SMALL,
        "traffic_class": "interactive",
        "drop_overload_percent": 0.0,
        "drop_reason": None,
        "localities": [],
        "endpoints": [],
        "derived_from": SMALL,
        "kind": "version",
        "tenant": None,
        "version": "v2",
    }
    assert [e["address"] for e in eu[f"{SMALL}@v2"]["endpoints"]] == ["127.0.0.1:9211"]
    acme = eu[f"{LLAMA}~acme"]
    assert (acme["kind"], acme["tenant"], acme["derived_from"]) == ("tenant", "acme", LLAMA)
    assert {e["region"] for e in acme["endpoints"]} == {"eu-west"}
    both = eu[f"{SMALL}~acme@v2"]
    assert (both["kind"], both["tenant"], both["version"]) == ("tenant+version", "acme", "v2")
    # Without the policy (or with another one), only the control law's own clusters.
    assert set(describe_views(views)["regions"]["eu-west"]) == {LLAMA, SMALL, QWEN}
    assert f"{QWEN}~zeta" in state["neutral"]


def test_the_repository_example_has_a_fallback() -> None:
    example = load_policy(Path(__file__).resolve().parents[3] / "policies" / "traffic.yaml")
    llama = example.model(LLAMA)
    assert llama is not None and llama.fallback is not None
    assert example.model(llama.fallback.model) is not None
