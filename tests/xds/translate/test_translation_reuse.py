"""Translation rounds reuse what held and rebuild what changed, with the same bytes as a
build from scratch: the memo saves work, never changes the output."""

from __future__ import annotations

import dataclasses

from heliostat.balance import ClusterView, EndpointView, LocalityView, RegionView, static_views
from heliostat.balance.view import Balancing, LbPolicy
from heliostat.planning.subsets import region_subset, subset, version_subset
from heliostat.policy import Policy, parse_policy
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl
from heliostat.xds.translate import TranslationMemo, build_snapshot
from tests.xds.translate.test_traffic_policy import LLAMA, POLICY

GROUP = NodeGroup(Role.GATEWAY, "us-east")


def policy() -> Policy:
    return parse_policy(POLICY, "p.yaml")


def payloads(snapshot: Snapshot) -> dict[tuple[TypeUrl, str], bytes]:
    return {
        (t, name): r.packed.value for t in PUSH_ORDER for name, r in snapshot.resources(t).items()
    }


def reweighted(view: RegionView, address: str, weight: int) -> RegionView:
    """The view with one endpoint's weight changed in every cluster (a new view object for
    it, as the law makes; every other endpoint the very same object)."""
    changed: dict[int, EndpointView] = {}

    def swap(endpoint: EndpointView) -> EndpointView:
        if endpoint.address != address:
            return endpoint
        return changed.setdefault(id(endpoint), dataclasses.replace(endpoint, weight=weight))

    clusters = tuple(
        dataclasses.replace(
            c,
            localities=tuple(
                dataclasses.replace(loc, endpoints=tuple(map(swap, loc.endpoints)))
                for loc in c.localities
            ),
        )
        for c in view.clusters
    )
    return dataclasses.replace(view, clusters=clusters)


def test_a_weight_change_rebuilds_its_assignments_and_reuses_the_rest() -> None:
    current = policy()
    view = static_views(current).for_region("us-east")
    memo = TranslationMemo()
    first = build_snapshot(current, view, GROUP, memo)
    memo.new_round()
    moved = reweighted(view, "127.0.0.1:9201", 7)
    second = build_snapshot(current, moved, GROUP, memo)
    assert payloads(second) == payloads(build_snapshot(current, moved, GROUP))  # from scratch
    for kind in (TypeUrl.CLUSTER, TypeUrl.LISTENER, TypeUrl.ROUTE):
        for name, resource in second.resources(kind).items():
            assert resource is first.resources(kind)[name], (kind, name)  # not rebuilt
    endpoints = second.resources(TypeUrl.ENDPOINT)
    changed = {n for n, r in endpoints.items() if r is not first.resources(TypeUrl.ENDPOINT)[n]}
    # Every cluster holding 9201 (the model's, its batch one, v1's, the tenant's), no other.
    assert changed == {n for n in endpoints if n.startswith(LLAMA) and not n.endswith("@v2")}


def test_a_new_balancing_choice_or_policy_rebuilds_the_clusters_and_routes() -> None:
    current = policy()
    view = static_views(current).for_region("us-east")
    memo = TranslationMemo()
    first = build_snapshot(current, view, GROUP, memo)
    hashing = Balancing(LbPolicy.RING_HASH, 150, {"state": "hashing"})
    chosen = dataclasses.replace(
        view,
        clusters=tuple(
            dataclasses.replace(c, balancing=hashing) if c.model == LLAMA else c
            for c in view.clusters
        ),
    )
    memo.new_round()
    second = build_snapshot(current, chosen, GROUP, memo)
    assert payloads(second) == payloads(build_snapshot(current, chosen, GROUP))
    assert second.resources(TypeUrl.CLUSTER)[LLAMA] is not first.resources(TypeUrl.CLUSTER)[LLAMA]
    qwen = "qwen-7b"
    assert second.resources(TypeUrl.CLUSTER)[qwen] is first.resources(TypeUrl.CLUSTER)[qwen]
    edited = parse_policy(POLICY.replace("num_retries: 3", "num_retries: 2"), "p.yaml")
    memo.new_round()
    third = build_snapshot(edited, static_views(edited).for_region("us-east"), GROUP, memo)
    fresh = build_snapshot(edited, static_views(edited).for_region("us-east"), GROUP)
    assert payloads(third) == payloads(fresh)
    assert (
        payloads(third)[TypeUrl.ROUTE, "heliostat_models"]
        != payloads(first)[TypeUrl.ROUTE, "heliostat_models"]
    )


def test_derived_clusters_keep_what_they_keep_whole_as_the_same_locality() -> None:
    views = static_views(policy()).for_region("us-east")
    source = views.cluster(LLAMA)
    assert source is not None
    for derived, keep in (
        (version_subset(source, "v1"), lambda e: e.version == "v1"),
        (region_subset(source, "acme", frozenset({"eu-west", "us-east"})), None),
    ):
        if keep is not None:  # the C filter keeps exactly what the predicate keeps
            assert derived.localities == subset(source, derived.name, keep).localities
    tenant = region_subset(source, "acme", frozenset({"eu-west"}))
    (kept,) = tenant.localities
    original = next(loc for loc in source.localities if loc.region == "eu-west")
    assert kept.endpoints == original.endpoints and kept.priority == 0
    whole = region_subset(source, "all", frozenset({"us-east", "eu-west", "ap-southeast"}))
    assert all(a is b for a, b in zip(whole.localities, source.localities, strict=True))
    lone = ClusterView("m", "m", (LocalityView("x", 3, source.endpoints()),))
    assert version_subset(lone, "v9").localities == ()


def test_views_sharing_endpoint_tuples_filter_each_once() -> None:
    views = static_views(policy())
    picks = TranslationMemo().picks
    derived = []
    for region in ("us-east", "eu-west", None):
        source = views.for_region(region).cluster(LLAMA)
        assert source is not None
        derived.append((source, version_subset(source, "v2", picks)))
    filtered = len(picks)
    assert filtered == len({id(loc.endpoints) for s, _ in derived for loc in s.localities})
    for source, mine in derived:  # the same subsets as without the memo
        assert mine.localities == version_subset(source, "v2").localities
    assert len(picks) == filtered
