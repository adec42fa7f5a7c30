"""The LEDS form across translation rounds: made from what changed, equal to a build from
scratch.

A round compares each locality's endpoint tuple with the one its collection was made from
and makes members only where an endpoint's view changed; the node group's LbEndpoint map is
the last round's, copied and patched. The oracle below names, encodes and versions every
member from scratch, with no memo: whatever the endpoints do (weights move, endpoints come,
go, are listed twice or swap places), the memo must give the same resources.
"""

from __future__ import annotations

import copy
import hashlib

import pytest
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.xds.cache import changes as changes_module
from heliostat.xds.cache.changes import changes
from heliostat.xds.resources.snapshot import Resource, noted_changes
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import leds as leds_module
from heliostat.xds.translate.endpoints import lb_endpoint_bytes
from heliostat.xds.translate.leds import (
    LedsAssignment,
    collection,
    covering,
    endpoint_map,
    leds_assignment,
    leds_forms,
    segment,
)
from heliostat.xds.translate.memo import TranslationMemo

REGIONS = ("us-east", "eu-west")
Fleet = dict[str, list[EndpointView]]


def views_of(fleet: Fleet) -> list[ClusterView]:
    """Two clusters over the same tuples (as a model and its batch cluster), the second
    with the regions' priorities swapped: other collections, the same endpoint views."""
    tuples = {region: tuple(fleet[region]) for region in REGIONS}
    return [
        ClusterView(
            name,
            "m",
            tuple(
                LocalityView(region, (priority + shift) % 2, tuples[region], 1 + priority)
                for priority, region in enumerate(REGIONS)
            ),
        )
        for shift, name in enumerate(("m", "m-batch"))
    ]


def oracle_members(view: ClusterView) -> list[tuple[str, str, bytes]]:
    """Every member's (name, version, bytes), named and encoded from scratch."""
    members = []
    for locality in view.localities:
        seen: dict[str, int] = {}
        for endpoint in locality.endpoints:
            prefix = collection(view.name, locality.region, occurrence(view, locality))
            name = prefix + segment(f"{endpoint.host}_{endpoint.port}")
            count = seen.get(name, 0)
            seen[name] = count + 1
            if count:
                name = f"{name}-{count + 1}"
            payload = lb_endpoint_bytes(endpoint, TranslationMemo())
            members.append((name, hashlib.sha256(payload).hexdigest()[:16], payload))
    return members


def occurrence(view: ClusterView, locality: LocalityView) -> int:
    """Which of the view's localities of its region `locality` is (1 for the first)."""
    same = [other for other in view.localities if other.region == locality.region]
    return next(i for i, other in enumerate(same, 1) if other is locality)


def assert_as_from_scratch(view: ClusterView, form: LedsAssignment) -> None:
    members = oracle_members(view)
    assert [(r.name, r.version, r.packed.value) for r in form.endpoints] == members
    assert form.names == tuple(name for name, _, _ in members)
    for resource in form.endpoints:
        decoded = resource.message
        assert isinstance(decoded, endpoint_components_pb2.LbEndpoint)
        assert decoded.SerializeToString(deterministic=True) == resource.packed.value
    fresh = leds_assignment(view)  # a fresh memo
    assert form.assignment.packed.value == fresh.assignment.packed.value
    # The covering version: the assignment's own bytes' version, then each collection's
    # digest of its members' names and versions.
    own = hashlib.sha256(form.assignment.packed.value).hexdigest()[:16]
    digest = hashlib.sha256(own.encode())
    for locality in view.localities:
        if locality.endpoints:
            prefix = collection(view.name, locality.region, occurrence(view, locality))
            pieces = [f"\n{n}\0{v}".encode() for n, v, _ in members if n.startswith(prefix)]
            digest.update(hashlib.sha256(b"".join(pieces)).digest())
    assert form.assignment.version == digest.hexdigest()[:16]
    assert form.assignment.version == fresh.assignment.version
    base = Resource.of_payload(
        TypeUrl.ENDPOINT,
        view.name,
        form.assignment.packed.value,
        endpoint_pb2.ClusterLoadAssignment,
    )
    assert covering(base, list(form.endpoints)).version == form.assignment.version


def endpoint(address: str, region: str, weight: int) -> EndpointView:
    health = Health.HEALTHY if weight % 3 else Health.DEGRADED
    return EndpointView(address, region, None, weight, health, {"state": "healthy"})


steps = st.lists(
    st.tuples(
        st.sampled_from(["weight", "weights", "remove", "add", "twice", "replace", "swap"]),
        st.sampled_from(REGIONS),
        st.integers(0, 50),
    ),
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 12), steps)
def test_property_every_round_gives_what_a_build_from_scratch_gives(
    size: int, moves: list[tuple[str, str, int]]
) -> None:
    fleet: Fleet = {
        region: [endpoint(f"10.{r}.0.{i}:8000", region, 10 + i) for i in range(size)]
        for r, region in enumerate(REGIONS)
    }
    memo = TranslationMemo()
    last = None
    for step, region, n in [("weight", REGIONS[0], 0), *moves]:
        memo.new_round()
        endpoints = fleet[region]
        at = n % len(endpoints) if endpoints else 0
        if step == "weight" and endpoints:
            old = endpoints[at]
            endpoints[at] = endpoint(old.address, region, old.weight + n + 1)
        elif step == "weights":
            fleet[region] = [endpoint(e.address, region, e.weight + 1) for e in endpoints]
        elif step == "remove" and endpoints:
            del endpoints[at]
        elif step == "add":
            endpoints.insert(at, endpoint(f"10.9.{n}.1:80", region, n))
        elif step == "twice" and endpoints:  # one address listed twice: two hosts
            endpoints.insert(at, endpoint(endpoints[at].address, region, n + 2))
        elif step == "replace" and endpoints:  # another address in the same place
            endpoints[at] = endpoint(f"10.8.{n}.2:80", region, n)
        elif step == "swap" and len(endpoints) > 1:
            endpoints[0], endpoints[-1] = endpoints[-1], endpoints[0]
        forms = []
        for view in views_of(fleet):
            form = leds_assignment(view, memo)
            assert_as_from_scratch(view, form)
            forms.append(form)
        before = last
        last = endpoint_map(forms, last)
        everything = {r.name: r for form in forms for r in form.endpoints}
        assert dict(last[1]) == everything
        if before is not None:  # what the streams are told changed is what did
            noted = noted_changes(before[1], last[1])
            if last[1] is before[1]:
                assert changes_module._diff(before[1], last[1]) == (frozenset(), frozenset())
            else:
                assert noted == changes_module._diff(before[1], last[1])
                assert changes(before[1], last[1]) == noted


def _counting_members(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    real = leds_module._new_member

    def counted(name: str, *args: object) -> Resource:
        made.append(name)
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(leds_module, "_new_member", counted)
    return made


def test_a_round_makes_members_only_for_the_endpoints_that_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One endpoint's new weight makes one member per collection it is in (two clusters
    here), nothing else; the map moves by those members; a round where nothing moved hands
    back the very same forms and makes nothing."""
    fleet: Fleet = {
        region: [endpoint(f"10.{r}.0.{i}:8000", region, 10 + i) for i in range(40)]
        for r, region in enumerate(REGIONS)
    }
    memo = TranslationMemo()
    forms = [leds_assignment(view, memo) for view in views_of(fleet)]
    last = endpoint_map(forms, None)
    made = _counting_members(monkeypatch)
    memo.new_round()
    old = fleet["eu-west"][17]
    fleet["eu-west"][17] = endpoint(old.address, "eu-west", 99)
    views = views_of(fleet)
    moved = [leds_assignment(view, memo) for view in views]
    assert sorted(made) == sorted(
        collection(view.name, view.localities[1].region) + "10.1.0.17_8000" for view in views
    )
    kept = dict(last[1])
    now = endpoint_map(moved, last)
    assert now[1] is not last[1] and dict(last[1]) == kept  # the last map never changes
    changed = {name for name, r in now[1].items() if last[1][name] is not r}
    assert changed == set(made)
    # the streams are told exactly those, without comparing every member
    assert noted_changes(last[1], now[1]) == (frozenset(made), frozenset())
    for form, view in zip(moved, views, strict=True):
        assert_as_from_scratch(view, form)
        # the locality that did not move is the very same collection
        assert form.collections[0] is forms[views.index(view)].collections[0]
    made.clear()
    memo.new_round()
    again = [leds_assignment(view, memo) for view in views]
    assert made == []
    assert all(a is b for a, b in zip(again, moved, strict=True))
    assert endpoint_map(again, now) is now  # nothing moved: the very same map


def test_localities_with_the_same_endpoints_share_one_collection_by_content(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clusters whose localities hold the same endpoints (equal content, whether or not the
    same objects) name one collection, after the least of them; a locality that differs
    keeps its own; one endpoint's new weight is then one member, for every cluster."""
    fleet: Fleet = {
        region: [endpoint(f"10.{r}.0.{i}:8000", region, 10 + i) for i in range(30)]
        for r, region in enumerate(REGIONS)
    }
    model, batch = views_of(fleet)
    copies = ClusterView(  # the same content in other objects: shared all the same
        "m-copy",
        "m",
        tuple(
            LocalityView(loc.region, loc.priority, tuple(map(copy.copy, loc.endpoints)), 1)
            for loc in model.localities
        ),
    )
    other = list(fleet["us-east"])
    other[3] = endpoint(other[3].address, "us-east", 77)
    differs = ClusterView(  # eu-west as everyone, us-east with one weight of its own
        "a-other",
        "m",
        (
            LocalityView("eu-west", 0, tuple(fleet["eu-west"]), 1),
            LocalityView("us-east", 1, tuple(other), 1),
        ),
    )
    views = [model, batch, copies, differs]
    memo = TranslationMemo()
    forms = leds_forms(views, memo)
    prefixes = [sorted(c.prefix for c in form.collections) for form in forms]
    shared = sorted([collection("a-other", "eu-west"), collection("m", "us-east")])
    assert prefixes[:3] == [shared] * 3
    assert prefixes[3] == [collection("a-other", "eu-west"), collection("a-other", "us-east")]
    assert {id(c) for c in forms[0].collections} == {id(c) for c in forms[2].collections}
    # The same names and versions from scratch (a fresh memo): names follow content only.
    fresh = leds_forms(views)
    assert [f.assignment.version for f in fresh] == [f.assignment.version for f in forms]
    assert [f.names for f in fresh] == [f.names for f in forms]
    made = _counting_members(monkeypatch)
    memo.new_round()
    old = fleet["us-east"][5]
    fleet["us-east"][5] = endpoint(old.address, "us-east", 55)
    model, batch = views_of(fleet)
    moved = leds_forms([model, batch, differs], memo)  # (m-copy gone: no name was its)
    assert made == [collection("m", "us-east") + "10.0.0.5_8000"]
    assert {id(c) for c in moved[0].collections} == {id(c) for c in moved[1].collections}
    fresh = leds_forms([model, batch, differs])  # from scratch: the same members
    assert [f.names for f in moved] == [f.names for f in fresh]
    assert [f.assignment.version for f in moved] == [f.assignment.version for f in fresh]


def test_a_cluster_never_names_one_collection_for_two_of_its_localities() -> None:
    endpoints = tuple(endpoint(f"10.0.0.{i}:8000", "us-east", 10) for i in range(3))
    view = ClusterView(
        "m",
        "m",
        (LocalityView("us-east", 0, endpoints, 1), LocalityView("us-east", 1, endpoints, 1)),
    )
    (form,) = leds_forms([view])
    assert [c.prefix for c in form.collections] == [
        collection("m", "us-east", 1),
        collection("m", "us-east", 2),
    ]
    assert_as_from_scratch(view, form)


def test_node_groups_with_the_same_collections_share_one_endpoint_map() -> None:
    fleet: Fleet = {
        region: [endpoint(f"10.{r}.0.{i}:8000", region, 10 + i) for i in range(5)]
        for r, region in enumerate(REGIONS)
    }
    memo = TranslationMemo()
    views = views_of(fleet)
    first = endpoint_map(leds_forms(views, memo), None, memo)
    second = endpoint_map(leds_forms(list(reversed(views)), memo), None, memo)
    assert second is first
    memo.new_round()
    fleet["eu-west"][1] = endpoint(fleet["eu-west"][1].address, "eu-west", 3)
    views = views_of(fleet)
    moved = endpoint_map(leds_forms(views, memo), first, memo)
    assert endpoint_map(leds_forms(views, memo), first, memo) is moved
    assert moved is not first
