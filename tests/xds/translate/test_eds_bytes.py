"""EDS assembled from cached wire-format parts is byte for byte what protobuf would serialize.

The oracle below builds each ClusterLoadAssignment as one message, the plain way, and
serializes it deterministically; the translator's bytes, version and decoded message must
match it for any view, also across memo rounds where some endpoints change and others hold.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.wire import ENDPOINT_REASON_KEY, METADATA_NAMESPACE
from heliostat.xds.resources.memo import RoundMemo
from heliostat.xds.resources.snapshot import Resource
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import endpoints as endpoints_module
from heliostat.xds.translate.endpoints import assignment_resource, reason_code
from heliostat.xds.translate.memo import TranslationMemo

_HEALTH = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.DEGRADED: health_check_pb2.DEGRADED,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
}


def oracle(view: ClusterView) -> endpoint_pb2.ClusterLoadAssignment:
    """The assignment as one message, built field by field with no caching."""
    shed = view.drop_overload_percent
    tenths = round(shed * 10)
    scale = 1000 + tenths if tenths > 0 else 1
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=view.name)
    for locality in view.localities:
        built = assignment.endpoints.add()
        built.locality.region = locality.region
        built.priority = locality.priority
        if locality.weight is not None:
            built.load_balancing_weight.value = locality.weight * scale
        if locality.reason:
            why = struct_pb2.Struct()
            why.update({k: v for k, v in locality.reason.items() if v is not None})
            built.metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(why)
        for e in locality.endpoints:
            explanation = struct_pb2.Struct()
            code = reason_code(e.reason)
            host, _, port = e.address.rpartition(":")
            endpoint = built.lb_endpoints.add(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(
                            address=host.strip("[]"), port_value=int(port)
                        )
                    )
                ),
                health_status=_HEALTH[e.health],
                load_balancing_weight=wrappers_pb2.UInt32Value(value=max(1, e.weight)),
            )
            if code != "ok":  # a plainly healthy endpoint carries no metadata
                explanation.update({ENDPOINT_REASON_KEY: code})
                endpoint.metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(explanation)
    if shed > 0:
        assignment.policy.drop_overloads.add(
            category="heliostat_refused",
            drop_percentage=percent_pb2.FractionalPercent(
                numerator=round(shed * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
            ),
        )
    return assignment


def assert_identical(view: ClusterView, memo: TranslationMemo | None = None) -> None:
    resource = assignment_resource(view, memo)
    expected = oracle(view)
    payload = expected.SerializeToString(deterministic=True)
    assert resource.packed.value == payload
    assert resource.packed.type_url == TypeUrl.ENDPOINT.value
    assert resource.name == view.name
    assert resource.version == hashlib.sha256(payload).hexdigest()[:16]
    assert resource.version == Resource.of(TypeUrl.ENDPOINT, view.name, expected).version
    assert resource.message.SerializeToString(deterministic=True) == payload


REGIONS = ["us-east", "eu-west", "ap-southeast", ""]
reasons = st.dictionaries(
    st.one_of(
        st.sampled_from(["why", "kv_usage", "queue", "stale", "region", "version", "", "é"]),
        st.text(max_size=6),
    ),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=20),
    ),
    max_size=4,
)
endpoints = st.builds(
    EndpointView,
    address=st.one_of(
        st.builds(lambda a, p: f"10.0.{a}.1:{p}", st.integers(0, 255), st.integers(0, 65535)),
        st.builds(lambda p: f"[::1]:{p}", st.integers(0, 65535)),
        st.builds(lambda p: f":{p}", st.integers(0, 65535)),
    ),
    region=st.sampled_from(REGIONS),
    version=st.one_of(st.none(), st.sampled_from(["", "v1", "v2"])),
    weight=st.one_of(st.integers(-5, 2**24), st.just(2**32 - 1)),
    health=st.sampled_from(list(Health)),
    reason=reasons,
)


@st.composite
def cluster_views(draw: st.DrawFn) -> list[ClusterView]:
    """Several clusters drawing on one pool of endpoint objects, as derived clusters do."""
    pool = draw(st.lists(endpoints, min_size=1, max_size=12))
    picks = st.lists(st.sampled_from(pool), max_size=8).map(tuple)
    localities = st.builds(
        LocalityView,
        region=st.sampled_from(REGIONS),
        priority=st.integers(0, 5),
        endpoints=picks,
        weight=st.one_of(st.none(), st.integers(0, 2**20)),
        reason=st.one_of(st.just({}), reasons),
    )
    names = draw(st.lists(st.sampled_from(["m", "m-batch", "m-v1", "m@t", ""]), unique=True))
    return [
        ClusterView(
            name=name,
            model="m",
            localities=tuple(draw(st.lists(localities, max_size=4))),
            drop_overload_percent=draw(
                st.one_of(st.just(0.0), st.floats(0.0001, 100.0, allow_nan=False))
            ),
        )
        for name in names
    ]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_views())
def test_assembled_bytes_equal_a_plain_serialization(views: list[ClusterView]) -> None:
    memo = TranslationMemo()
    for view in views:
        assert_identical(view, memo)
    for view in views:  # second time from the memos
        assert_identical(view, memo)
    memo.new_round()
    for view in views:  # and from the last round's
        assert_identical(view, memo)


def test_long_localities_need_multibyte_lengths() -> None:
    """Hundreds of endpoints make a locality longer than 16 KiB: a three-byte length."""
    fleet = tuple(
        EndpointView(f"10.1.{i // 250}.{i % 250}:8000", "us-east", "v1", 100 + i, Health.HEALTHY)
        for i in range(400)
    )
    view = ClusterView("big", "m", (LocalityView("us-east", 0, fleet, 3),), 2.5)
    assert len(assignment_resource(view).packed.value) > 16_384
    assert_identical(view)


def test_memo_rounds_follow_changed_endpoints() -> None:
    """Endpoints replaced tick by tick (as the control law does when one changes) are
    re-encoded; the rest come from the memos; every tick's bytes stay exact."""
    rng = random.Random(7)
    fleet = [
        EndpointView(f"10.2.0.{i}:80", REGIONS[i % 3], None, 50, Health.HEALTHY, {"n": i})
        for i in range(60)
    ]
    memo = TranslationMemo()
    for tick in range(6):
        memo.new_round()
        for i in rng.sample(range(len(fleet)), 6):
            old = fleet[i]
            fleet[i] = EndpointView(
                old.address, old.region, "v2", rng.randrange(1, 200), Health.DEGRADED, {"t": tick}
            )
        for region in REGIONS[:3]:
            localities = tuple(
                LocalityView(r, 0 if r == region else 1, tuple(e for e in fleet if e.region == r))
                for r in REGIONS[:3]
            )
            assert_identical(ClusterView("m", "m", localities, float(tick % 2) * 7.5), memo)
            assert_identical(ClusterView("m-batch", "m", localities[:1]), memo)


def test_round_memo_get_many_keeps_two_rounds() -> None:
    """Bulk lookups see this round and the last (promoting what they find), not older ones."""
    table: RoundMemo[str, int] = RoundMemo()
    table.put("a", 1)
    table.rotate()
    table.put("b", 2)
    assert table.get_many(["a", "b", "c"]) == [1, 2, None]
    table.rotate()  # "a" was promoted into the last round, so it is still there
    assert table.get_many(["a", "b"]) == [1, 2]
    table.rotate()
    table.rotate()
    assert table.get_many(["a", "b"]) == [None, None]


def test_two_memos_share_nothing() -> None:
    """Each publisher's memo is its own: a round started in one leaves the other's parts
    alone, and each serves the same bytes for the same view."""
    fleet = tuple(
        EndpointView(f"10.3.0.{i}:80", "us-east", None, 10 + i, Health.HEALTHY) for i in range(5)
    )
    view = ClusterView("m", "m", (LocalityView("us-east", 0, fleet),))
    first, second = TranslationMemo(), TranslationMemo()
    built = assignment_resource(view, first)
    assert len(second) == 0
    assert assignment_resource(view, first) is built  # reused from its own memo
    second.new_round()
    second.new_round()
    assert assignment_resource(view, first) is built  # untouched by the other's rounds
    assert assignment_resource(view, second).packed.value == built.packed.value
    first.new_round()
    first.new_round()
    first.new_round()
    assert len(first) == 0  # two rounds without use: forgotten


def _counting_entries(monkeypatch: pytest.MonkeyPatch) -> list[EndpointView]:
    """Record every endpoint view that translation encodes (or looks up by content)."""
    encoded: list[EndpointView] = []
    real = endpoints_module._entry

    def counted(view: EndpointView, memo: TranslationMemo) -> tuple[EndpointView, bytes]:
        encoded.append(view)
        return real(view, memo)

    monkeypatch.setattr(endpoints_module, "_entry", counted)
    return encoded


def test_a_round_encodes_only_the_endpoints_whose_view_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new locality tuple with a few new views is compared with the slot's last one: only
    those are encoded, and the bytes stay exact, also when endpoints come and go."""
    fleet = [
        EndpointView(f"10.4.0.{i}:80", "us-east", None, 40 + i, Health.HEALTHY, {"n": i})
        for i in range(50)
    ]

    def cluster() -> ClusterView:
        return ClusterView("m", "m", (LocalityView("us-east", 0, tuple(fleet), 7),))

    memo = TranslationMemo()
    assert_identical(cluster(), memo)
    encoded = _counting_entries(monkeypatch)
    for tick, moved in enumerate(([3, 17, 41], [], [0, 49])):
        memo.new_round()
        for i in moved:
            old = fleet[i]
            fleet[i] = EndpointView(old.address, old.region, None, 7 + tick, Health.DEGRADED)
        encoded.clear()
        assert_identical(cluster(), memo)
        assert encoded == [fleet[i] for i in moved]
    memo.new_round()
    del fleet[10]  # endpoints go: the rest are found by identity, none encoded
    encoded.clear()
    assert_identical(cluster(), memo)
    assert encoded == []
    memo.new_round()
    fleet.insert(20, EndpointView("10.4.1.1:80", "us-east", None, 5, Health.HEALTHY))
    assert_identical(cluster(), memo)
    assert encoded == [fleet[20]]  # only the newcomer
    for gone, at in ((5, 30), (40, 2)):  # one goes and one comes: the same length, shifted
        memo.new_round()
        del fleet[gone]
        fleet.insert(at, EndpointView(f"10.4.2.{at}:80", "us-east", None, 9, Health.HEALTHY))
        encoded.clear()
        assert_identical(cluster(), memo)
        assert encoded == [fleet[at]]
