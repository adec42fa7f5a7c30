"""A ring-hash cluster's ring has one size whatever the weights, and enough points per host."""

from __future__ import annotations

import dataclasses

from heliostat.balance import RegionView, static_views
from heliostat.balance.view import Balancing, LbPolicy
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.translate import TranslationMemo, build_snapshot
from heliostat.xds.translate.affinity import (
    ENVOY_MAX_RING_SIZE,
    MIN_POINTS_PER_HOST,
    RING_SIZE,
    ring_size,
)
from tests.xds.translate.test_traffic_policy import LLAMA, clusters
from tests.xds.translate.test_translation_reuse import GROUP, payloads, policy

HASHING = Balancing(LbPolicy.RING_HASH, 150, {"state": "hashing"})


def test_every_host_keeps_its_points_and_the_size_moves_only_when_the_hosts_double() -> None:
    assert ring_size(0) == ring_size(4) == ring_size(RING_SIZE // MIN_POINTS_PER_HOST) == RING_SIZE
    for hosts in (600, 1000, 5000, 10_000):
        size = ring_size(hosts)
        assert size >= MIN_POINTS_PER_HOST * hosts
        assert size < 2 * MIN_POINTS_PER_HOST * hosts  # the next power of two, no more
        assert size & (size - 1) == 0
    assert ring_size(600) == ring_size(1000) != ring_size(1100)
    assert ring_size(10_000_000) == ENVOY_MAX_RING_SIZE  # Envoy refuses a bigger one


def _hashing(view: RegionView, extra: int = 0) -> RegionView:
    """The view with llama hashing, and `extra` more endpoints in its first locality."""
    clusters = []
    for cluster in view.clusters:
        if cluster.model != LLAMA:
            clusters.append(cluster)
            continue
        first, *rest = cluster.localities
        template = first.endpoints[0]
        more = tuple(
            dataclasses.replace(template, address=f"127.0.1.{i // 200}:{9000 + i % 200}")
            for i in range(extra)
        )
        grown = dataclasses.replace(first, endpoints=(*first.endpoints, *more))
        clusters.append(dataclasses.replace(cluster, balancing=HASHING, localities=(grown, *rest)))
    return dataclasses.replace(view, clusters=tuple(clusters))


def _ring(snapshot: Snapshot) -> tuple[int, int]:
    ring = clusters(snapshot)[LLAMA].ring_hash_lb_config
    return ring.minimum_ring_size.value, ring.maximum_ring_size.value


def test_a_cluster_that_grows_past_the_ring_gets_a_bigger_one_even_from_the_memo() -> None:
    current = policy()
    view = static_views(current).for_region("us-east")
    memo = TranslationMemo()
    small = build_snapshot(current, _hashing(view), GROUP, memo)
    assert _ring(small) == (RING_SIZE, RING_SIZE)
    memo.new_round()
    grown = _hashing(view, extra=RING_SIZE // MIN_POINTS_PER_HOST)
    big = build_snapshot(current, grown, GROUP, memo)
    cluster = grown.cluster(LLAMA)
    assert cluster is not None
    hosts = len(cluster.endpoints())
    assert _ring(big) == (ring_size(hosts), ring_size(hosts))
    assert ring_size(hosts) > RING_SIZE
    assert payloads(big) == payloads(build_snapshot(current, grown, GROUP))  # as from scratch
