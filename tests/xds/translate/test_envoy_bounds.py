"""Every policy value that lands in an Envoy field is bounded by that field's rules, and a
validated policy always translates into resources Envoy accepts.

The bounds are not restated here: they are read from the protoc-gen-validate options in the
installed descriptors (`pgv.py`), plus the range of each field's wire type and Envoy's own
range for durations. A tighter Envoy rule after an xds-protos upgrade fails this test.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliostat.balance import compute, static_views
from heliostat.policy import Policy, PolicyError, parse_policy
from heliostat.policy.durations import MAX_SECONDS
from heliostat.policy.fields import UINT32_MAX
from heliostat.signals import Signal, targets_from_policy
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import TranslationMemo, build_snapshot
from tests.xds.translate import pgv
from tests.xds.translate.bounds_policies import HUGE, bounds_policy, default_addresses

Cluster = cluster_pb2.Cluster
Outlier = outlier_detection_pb2.OutlierDetection
Thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds
RetryPolicy = route_components_pb2.RetryPolicy

BASE: dict[str, Any] = yaml.safe_load(
    """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: b}
spec:
  regions: {us-east: {rtt_ms: {eu-west: 80}}, eu-west: {}}
  models:
    - name: m
      endpoints:
        - {address: 127.0.0.1:9101, region: us-east}
        - {address: 127.0.0.1:9201, region: eu-west}
"""
)


# -- policy fields and the Envoy fields they land in --------------------------------------------


@dataclass(frozen=True)
class Lands:
    """A policy setting (path under the model, or under the spec) and its Envoy field.

    `to_policy` turns a value of the Envoy field into the policy value that translates to it
    (heliostat multiplies bounded_load by 100, stdev_factor by 1000, ttft_ms is half the
    per-try timeout in ms)."""

    path: tuple[str, ...]
    field: FieldDescriptor
    to_policy: Callable[[float], float] = float
    integer: bool = True
    spec_level: bool = False

    @property
    def duration(self) -> bool:
        return self.field.message_type is not None and (
            self.field.message_type.full_name == "google.protobuf.Duration"
        )


def _lands() -> list[Lands]:
    f = pgv.field_of
    entries = [
        Lands(("connect_timeout",), f(Cluster, "connect_timeout")),
        Lands(("outlier_detection", "interval"), f(Outlier, "interval")),
        Lands(("outlier_detection", "base_ejection_time"), f(Outlier, "base_ejection_time")),
        Lands(("retries", "per_try_timeout"), f(RetryPolicy, "per_try_timeout")),
        Lands(("slo", "ttft_ms"), f(RetryPolicy, "per_try_timeout"), lambda s: s * 500, False),
        Lands(("outlier_detection", "consecutive_5xx"), f(Outlier, "consecutive_5xx")),
        Lands(
            ("outlier_detection", "consecutive_gateway_failure"),
            f(Outlier, "consecutive_gateway_failure"),
        ),
        Lands(
            ("outlier_detection", "enforcing_consecutive_gateway_failure"),
            f(Outlier, "enforcing_consecutive_gateway_failure"),
        ),
        Lands(("outlier_detection", "max_ejection_percent"), f(Outlier, "max_ejection_percent")),
        Lands(
            ("outlier_detection", "success_rate", "minimum_hosts"),
            f(Outlier, "success_rate_minimum_hosts"),
        ),
        Lands(
            ("outlier_detection", "success_rate", "request_volume"),
            f(Outlier, "success_rate_request_volume"),
        ),
        Lands(
            ("outlier_detection", "success_rate", "stdev_factor"),
            f(Outlier, "success_rate_stdev_factor"),
            lambda v: v / 1000,
            False,
        ),
        Lands(
            ("outlier_detection", "failure_percentage", "threshold"),
            f(Outlier, "failure_percentage_threshold"),
            integer=False,
        ),
        Lands(
            ("outlier_detection", "failure_percentage", "minimum_hosts"),
            f(Outlier, "failure_percentage_minimum_hosts"),
        ),
        Lands(
            ("outlier_detection", "failure_percentage", "request_volume"),
            f(Outlier, "failure_percentage_request_volume"),
        ),
        Lands(
            ("circuit_breakers", "interactive", "retry_budget", "budget_percent"),
            f(percent_pb2.Percent, "value"),
            integer=False,
        ),
        Lands(
            ("circuit_breakers", "interactive", "retry_budget", "min_retry_concurrency"),
            f(Thresholds.RetryBudget, "min_retry_concurrency"),
        ),
        Lands(("retries", "num_retries"), f(RetryPolicy, "num_retries")),
        Lands(
            ("affinity", "bounded_load"),
            f(Cluster.CommonLbConfig.ConsistentHashingLbConfig, "hash_balance_factor"),
            lambda v: v / 100,
            False,
        ),
        Lands(("gateway", "port"), f(address_pb2.SocketAddress, "port_value"), spec_level=True),
    ]
    for breaker in ("interactive", "batch"):
        for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            entries.append(Lands(("circuit_breakers", breaker, name), f(Thresholds, name)))
    return entries


LANDS = _lands()


def _document_with(entry: Lands, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    target = document["spec"] if entry.spec_level else document["spec"]["models"][0]
    for part in entry.path[:-1]:
        target = target.setdefault(part, {})
    target[entry.path[-1]] = value
    return document


def _written(entry: Lands, envoy_value: float) -> Any:
    """How the policy spells the value that translates to `envoy_value`."""
    if entry.duration:
        value = entry.to_policy(envoy_value)
        if entry.path[-1] == "ttft_ms":
            return value
        return f"{envoy_value:.0f}s" if envoy_value >= 0 else f"-{abs(envoy_value):.0f}s"
    value = entry.to_policy(envoy_value)
    return int(value) if entry.integer and float(value).is_integer() else float(value)


def _beyond(bounds: dict[str, float], step: float) -> list[float]:
    """The first Envoy values outside `bounds`, on each side."""
    values = []
    for name, edge in bounds.items():
        if name == "gt" or name == "lt":
            values.append(edge)
        elif name == "gte":
            values.append(edge - step)
        elif name == "lte":
            values.append(edge + step)
    return [v for v in values if math.isfinite(v)]


@pytest.mark.parametrize("entry", LANDS, ids=lambda e: ".".join(e.path))
def test_the_policy_refuses_what_envoys_field_would_refuse(entry: Lands) -> None:
    if entry.duration:
        bounds = pgv.duration_bounds(entry.field)
        step = 1.0
    else:
        bounds = pgv.numeric_bounds(entry.field)
        step = 1.0 if pgv.TYPE_RANGES.get(_wire(entry.field)) else 1e-6
    outside = _beyond(bounds, step)
    assert outside, f"{entry.field.full_name} has no bounds at all"
    for envoy_value in outside:
        document = _document_with(entry, _written(entry, envoy_value))
        with pytest.raises(PolicyError) as info:
            parse_policy(yaml.safe_dump(document), "b.yaml")
        where = ".".join(entry.path)
        assert any(where in line for line in info.value.lines()), (
            f"{where} = {_written(entry, envoy_value)!r} (Envoy {envoy_value} outside "
            f"{bounds}) refused for another reason: {info.value.lines()}"
        )


def _wire(field: FieldDescriptor) -> int:
    if field.message_type is not None and "value" in field.message_type.fields_by_name:
        return int(field.message_type.fields_by_name["value"].type)
    return int(field.type)


def test_the_envoy_rules_are_read_from_the_descriptors() -> None:
    """A check on the reader itself: the rules the issue quotes are there."""
    assert pgv.duration_bounds(pgv.field_of(Cluster, "connect_timeout")) == {
        "gt": 0.0,
        "lte": float(MAX_SECONDS),
    }
    assert pgv.numeric_bounds(pgv.field_of(Outlier, "max_ejection_percent")) == {
        "lte": 100,
        "gte": 0,
    }
    hash_balance = pgv.field_of(
        Cluster.CommonLbConfig.ConsistentHashingLbConfig, "hash_balance_factor"
    )
    assert pgv.numeric_bounds(hash_balance) == {"gte": 100, "lte": UINT32_MAX}


# -- translation at the bounds ------------------------------------------------------------------


def _snapshots(policy: Policy, views: Any) -> list[tuple[str, Snapshot]]:
    """Every kind of group's snapshot, sharing one memo as the publisher's groups do."""
    built = []
    memo = TranslationMemo()
    for region in [*policy.spec.regions, None, "mars"]:
        for role in Role:
            for port in (None, 1, 65535):
                group = NodeGroup(role, region, port)
                built.append(
                    (group.key, build_snapshot(policy, views.for_region(region), group, memo))
                )
    return built


def _violations(snapshots: list[tuple[str, Snapshot]]) -> list[str]:
    found = []
    for key, snapshot in snapshots:
        for type_url in TypeUrl:
            for name, resource in snapshot.resources(type_url).items():
                found += pgv.violations(resource.message, f"{key} {type_url.short} {name}")
    return found


def _signals(policy: Policy, now: float, extreme: bool) -> dict[tuple[str, str], Signal]:
    signals = {}
    for model in policy.spec.models:
        for index, endpoint in enumerate(model.endpoints):
            fail = extreme and index % 3 == 2
            signals[model.name, endpoint.address] = Signal(
                model=model.name,
                address=endpoint.address,
                engine=model.engine.value,
                waiting=HUGE if extreme else 0.0,
                running=HUGE if extreme else 0.0,
                kv_usage=1.0 if extreme else 0.0,
                prefix_hit_rate=1.0,
                max_num_seqs=UINT32_MAX if extreme else 1,
                scraped_at=now,
                error="timeout" if fail else None,
                consecutive_failures=10**6 if fail else 0,
            )
    return signals


@pytest.mark.parametrize("high", [False, True], ids=["lowest", "highest"])
def test_snapshots_of_a_policy_at_its_bounds_pass_envoys_rules(high: bool) -> None:
    policy = parse_policy(yaml.safe_dump(bounds_policy(high, default_addresses())), "b.yaml")
    assert _violations(_snapshots(policy, static_views(policy))) == []


@pytest.mark.parametrize("high", [False, True], ids=["lowest", "highest"])
def test_the_scrape_targets_of_a_policy_at_its_bounds_are_accepted(high: bool) -> None:
    """serve builds its scrape targets from the policy at start and on every reload; a
    validated policy must never make that raise."""
    policy = parse_policy(yaml.safe_dump(bounds_policy(high, default_addresses())), "b.yaml")
    targets = targets_from_policy(policy)
    assert len(targets) == sum(len(m.endpoints) for m in policy.spec.models)


@pytest.mark.parametrize("high", [False, True], ids=["lowest", "highest"])
@pytest.mark.parametrize("extreme", [False, True], ids=["idle", "saturated"])
def test_the_control_law_at_the_bounds_translates_into_valid_resources(
    high: bool, extreme: bool
) -> None:
    policy = parse_policy(yaml.safe_dump(bounds_policy(high, default_addresses())), "b.yaml")
    state = None
    now = 1_700_000_000.0
    for tick in range(6):
        now += 1.0 if tick < 5 else 10.0**9  # and then a very long gap
        views, state = compute(policy, _signals(policy, now, extreme), state, now)
    assert _violations(_snapshots(policy, views)) == []


def _value(low: float, high: float, integer: bool) -> st.SearchStrategy[float]:
    edges = st.sampled_from([low, high])
    middle = (
        st.integers(int(low), int(high))
        if integer
        else st.floats(low, high, allow_nan=False, allow_infinity=False)
    )
    return st.one_of(edges, middle)


@st.composite
def _policies(draw: st.DrawFn) -> dict[str, Any]:
    """The highest policy with each bounded field redrawn between its bounds."""
    document = bounds_policy(True, default_addresses())
    low = bounds_policy(False, default_addresses())
    model, low_model = document["spec"]["models"][0], low["spec"]["models"][0]

    def walk(section: dict[str, Any], low_section: dict[str, Any]) -> None:
        for key, value in section.items():
            other = low_section.get(key)
            if isinstance(value, dict) and isinstance(other, dict):
                walk(value, other)
            elif isinstance(value, bool) or isinstance(other, bool):
                continue
            elif isinstance(value, int) and isinstance(other, int) and value != other:
                section[key] = draw(_value(other, value, True))
            elif isinstance(value, float) and isinstance(other, float) and value != other:
                section[key] = draw(_value(other, value, False))
            elif isinstance(value, str) and value.endswith("s") and value != other:
                seconds = draw(_value(0.001, float(MAX_SECONDS), False))
                section[key] = f"{seconds:.3f}s"

    for section in ("outlier_detection", "circuit_breakers", "affinity", "slo"):
        walk(model[section], low_model[section])
    model["connect_timeout"] = f"{draw(_value(0.001, float(MAX_SECONDS), False)):.3f}s"
    return document


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policies())
def test_any_policy_within_the_bounds_translates_into_valid_resources(
    document: dict[str, Any],
) -> None:
    try:
        policy = parse_policy(yaml.safe_dump(document), "b.yaml")
    except PolicyError as exc:  # a draw that breaks a cross-field rule (stale_after, ...)
        pytest.fail(f"drawn within the bounds but refused: {exc.lines()[:3]}")
    targets_from_policy(policy)
    views = static_views(policy)
    group = NodeGroup(Role.GATEWAY, "eu-west")
    snapshot = build_snapshot(policy, views.for_region("eu-west"), group)
    assert _violations([(group.key, snapshot)]) == []


def test_the_rule_checker_finds_what_envoy_would_reject() -> None:
    """The checker is only worth its silence if it speaks up: a cluster with a zero connect
    timeout, a wrapper over its rule, and a duration beyond Envoy's range, inside an Any."""
    from envoy.config.core.v3 import config_source_pb2
    from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

    cluster = Cluster(name="c", connect_timeout=duration_pb2.Duration(seconds=0))
    cluster.outlier_detection.max_ejection_percent.CopyFrom(wrappers_pb2.UInt32Value(value=101))
    found = pgv.violations(cluster)
    assert any("connect_timeout" in v and "rule gt" in v for v in found), found
    assert any("max_ejection_percent" in v and "<= 100" in v for v in found), found
    assert pgv.violations(Cluster(name="", connect_timeout=duration_pb2.Duration(nanos=1)))

    source = config_source_pb2.ConfigSource(
        initial_fetch_timeout=duration_pb2.Duration(seconds=MAX_SECONDS + 1)
    )
    packed = any_pb2.Any()
    packed.Pack(source)
    holder = Cluster(name="c", connect_timeout=duration_pb2.Duration(seconds=1))
    holder.typed_extension_protocol_options["x"].CopyFrom(packed)
    found = pgv.violations(holder)
    assert any("initial_fetch_timeout" in v and "outside what Envoy accepts" in v for v in found)
