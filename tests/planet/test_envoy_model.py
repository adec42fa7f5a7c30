"""The model of Envoy's balancing against Envoy's documented arithmetic.

The examples are Envoy's own (priority levels, the normalisation comment in its
`load_balancer_impl.cc`, locality-weighted availability); the per-request picks are checked
against the expected split by drawing many requests.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.planet.envoy import (
    NO_EXCLUSIONS,
    Balancer,
    Exclusions,
    HostEntry,
    LbConfig,
    LbKind,
    Locality,
)
from heliostat.policy import parse_policy

H, D, U, X = Health.HEALTHY, Health.DEGRADED, Health.UNHEALTHY, Health.DRAINING
POLICY = """\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {name: plain}
spec:
  regions: {a: {}}
  models:
    - name: m
      endpoints:
        - {address: 127.0.0.1:9101, region: a}
"""


def hosts(region: str, *health: Health, weight: int = 1) -> tuple[HostEntry, ...]:
    return tuple(HostEntry(f"{region}-{i}", region, weight, h) for i, h in enumerate(health))


def loads(
    balancer: Balancer, exclusions: Exclusions = NO_EXCLUSIONS
) -> list[tuple[int, int, bool]]:
    return [(h, d, p) for _, h, d, p in balancer.priority_loads(exclusions)]


@pytest.mark.parametrize(
    ("healthy", "p0"),
    [(10, 100), (8, 100), (7, 98), (5, 70), (2, 28), (0, 0)],
)
def test_priority_spillover_follows_the_overprovisioning_factor(healthy: int, p0: int) -> None:
    # Envoy's table: P=0 gets min(100, 1.4 x healthy%) and P=1 (all healthy) the rest.
    b = Balancer(
        [
            Locality("a", 0, 1000, hosts("a", *([H] * healthy + [U] * (10 - healthy)))),
            Locality("b", 1, 1000, hosts("b", *[H] * 10)),
        ]
    )
    assert [h for h, _, _ in loads(b)] == [p0, 100 - p0]


def test_draining_hosts_leave_the_denominator_unhealthy_ones_do_not() -> None:
    b = Balancer(
        [
            Locality("a", 0, 1000, hosts("a", H, H, U, X)),  # 140 * 2 / 3 = 93
            Locality("b", 1, 1000, hosts("b", H, H)),
        ]
    )
    assert [h for h, _, _ in loads(b)] == [93, 7]


def test_load_is_normalised_when_priorities_hold_less_than_everything() -> None:
    # Envoy's comment: health 10/20/10 and degraded 20/10/0 give 16/28/14 healthy load and
    # 28/14/0 degraded (the first healthy priority gets the 2% of rounding). Panic is off
    # here: these priorities are below heliostat's 25% threshold.
    b = Balancer(
        [
            Locality("a", 0, 1, hosts("a", H, D, D, *[U] * 11)),
            Locality("b", 1, 1, hosts("b", H, H, D, *[U] * 11)),
            Locality("c", 2, 1, hosts("c", H, *[U] * 13)),
        ],
        LbConfig(panic_threshold=0.0),
    )
    assert [(h, d) for h, d, _ in loads(b)] == [(16, 28), (28, 14), (14, 0)]


def test_panic_uses_all_hosts_of_a_priority_and_total_panic_follows_host_counts() -> None:
    lone = Balancer([Locality("a", 0, 1000, hosts("a", U, U, U, H))])  # 25%: not below
    assert loads(lone) == [(100, 0, False)]
    b = Balancer(
        [
            Locality("a", 0, 1000, hosts("a", U, U, U, U)),
            Locality("b", 1, 1000, hosts("b", U, U)),
        ]
    )
    assert loads(b) == [(67, 0, True), (33, 0, True)]
    split = b.split({})
    assert sum(v for k, v in split.items() if k.startswith("a")) == pytest.approx(0.67)


def test_a_locality_weighs_its_weight_times_its_availability() -> None:
    b = Balancer(
        [
            Locality("a", 0, 1000, hosts("a", H, H, U, U)),  # availability min(1, 1.4 * 0.5)
            Locality("b", 0, 1000, hosts("b", H, H)),
            Locality("c", 0, None, hosts("c", H)),  # no weight: no traffic
        ]
    )
    split = b.split({})
    a = sum(v for k, v in split.items() if k.startswith("a"))
    assert a == pytest.approx(0.7 / 1.7)
    assert all(not k.startswith("c") for k in split)


def test_retries_skip_tried_priorities_and_ejected_hosts_count_as_unhealthy() -> None:
    b = Balancer(
        [
            Locality("a", 0, 1000, hosts("a", H, H)),
            Locality("b", 1, 1000, hosts("b", H, H)),
        ]
    )
    assert [h for h, _, _ in loads(b, Exclusions(tried_priorities=frozenset({0})))] == [0, 100]
    ejected = Exclusions(ejected={"a-0": 1})
    assert [h for h, _, _ in loads(b, ejected)] == [70, 30]


def _draws(b: Balancer, active: dict[str, int], n: int, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    counts = Counter(b.pick(rng, active) for _ in range(n))
    return {k: v / n for k, v in counts.items() if k is not None}


def test_per_request_picks_agree_with_the_expected_split() -> None:
    b = Balancer(
        [
            Locality("a", 0, 700, hosts("a", H, H, U, weight=1)),
            Locality("b", 0, 300, hosts("b", H, H)),
            Locality("c", 1, 1000, hosts("c", H)),
        ]
    )
    expected = b.split({})
    drawn = _draws(b, {}, 40_000)
    for key, share in expected.items():
        assert drawn.get(key, 0.0) == pytest.approx(share, abs=0.01)


def test_unequal_weights_are_served_in_proportion_to_weight_over_active_plus_one() -> None:
    b = Balancer(
        [
            Locality(
                "a",
                0,
                1000,
                (
                    HostEntry("x", "a", 100, H),
                    HostEntry("y", "a", 100, H),
                    HostEntry("z", "a", 50, H),
                ),
            )
        ]
    )
    assert b.split({}) == pytest.approx({"x": 0.4, "y": 0.4, "z": 0.2})
    busy = b.split({"x": 3})  # 100/4 : 100 : 50
    assert busy == pytest.approx({"x": 25 / 175, "y": 100 / 175, "z": 50 / 175})
    drawn = _draws(b, {"x": 3}, 40_000)
    for key, share in busy.items():
        assert drawn[key] == pytest.approx(share, abs=0.01)


def test_two_choices_prefer_the_less_busy_and_split_evenly_when_equal() -> None:
    b = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H, H))])
    assert b.split({}) == pytest.approx(dict.fromkeys(("a-0", "a-1", "a-2", "a-3"), 0.25))
    # One host with far fewer requests in flight: (2n - 1) / n^2 of the picks, as the
    # exact choice of two gives when it is strictly the least busy.
    split = b.split({"a-0": 0, "a-1": 40, "a-2": 40, "a-3": 40})
    assert split["a-0"] == pytest.approx(7 / 16, abs=0.01)
    drawn = _draws(b, {"a-0": 0, "a-1": 40, "a-2": 40, "a-3": 40}, 40_000)
    assert drawn["a-0"] == pytest.approx(7 / 16, abs=0.01)


def test_a_full_scan_takes_the_least_busy_host_and_draws_among_ties() -> None:
    # heliostat's clusters scan every host (xds.translate.clusters): one host with a free
    # slot gets the request, where two random choices of four miss it 9 times in 16.
    full = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H, H))], LbConfig(full_scan=True))
    assert full.split({}) == pytest.approx(dict.fromkeys(("a-0", "a-1", "a-2", "a-3"), 0.25))
    busy = {"a-0": 4, "a-1": 3, "a-2": 4, "a-3": 5}
    assert _draws(full, busy, 2_000) == {"a-1": 1.0}
    # In expectation (the fluid engine's mean counts, spread as Poisson counts would be) it
    # still leans on the least busy host more than two random choices do.
    two = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H, H))])
    assert full.split(busy)["a-1"] > two.split(busy)["a-1"] + 0.05
    assert full.split({"a-0": 0, "a-1": 40, "a-2": 40, "a-3": 40})["a-0"] == pytest.approx(1.0)
    tied = _draws(full, {"a-0": 4, "a-1": 3, "a-2": 3, "a-3": 5}, 20_000)
    assert set(tied) == {"a-1", "a-2"}
    assert tied["a-1"] == pytest.approx(0.5, abs=0.02)
    # Groups of identical hosts at the same mean count share as their hosts: in proportion.
    grouped = Balancer(
        [
            Locality(
                "a",
                0,
                1000,
                (HostEntry("g1", "a", 1, H, count=2), HostEntry("g2", "a", 1, H, count=3)),
            )
        ],
        LbConfig(full_scan=True),
    )
    assert grouped.split({"g1": 2.0, "g2": 2.0}) == pytest.approx({"g1": 0.4, "g2": 0.6})
    assert grouped.split({"g1": 1.0, "g2": 3.0})["g1"] > 0.8
    # Unequal weights keep Envoy's weighted path, whatever the selection method.
    weighted = Balancer(
        [Locality("a", 0, 1000, (HostEntry("x", "a", 100, H), HostEntry("y", "a", 50, H)))],
        LbConfig(full_scan=True),
    )
    assert weighted.split({}) == pytest.approx({"x": 2 / 3, "y": 1 / 3})


def test_a_full_scan_sends_a_retry_back_to_the_least_busy_host_and_follows_the_model() -> None:
    # previous_hosts makes Envoy pick again (5 times), but a scan finds the same least busy
    # host each time and the try goes there: why heliostat scans only when outlier detection
    # ejects a replica failing fast before a request's last try (xds.translate.clusters).
    full = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H))], LbConfig(full_scan=True))
    busy = {"a-0": 0, "a-1": 2, "a-2": 3}
    retry = Exclusions(tried_hosts=frozenset({"a-0"}))
    rng = random.Random(5)
    assert {full.pick(rng, busy, retry) for _ in range(200)} == {"a-0"}
    two = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H))])
    # Two random choices find another host within 6 picks unless every pick drew a-0 in a
    # draw of two: (5/9)^6 = 2.9% of retries.
    back = sum(two.pick(rng, busy, retry) == "a-0" for _ in range(4000)) / 4000
    assert back == pytest.approx((5 / 9) ** 6, abs=0.01)
    # heliostat's clusters follow the model's outlier detection and retries; a static
    # Envoy (no model) draws two.
    endpoints = tuple(EndpointView(f"10.0.0.{i}:80", "a", None, 100, H) for i in range(3))
    view = ClusterView("m", "m", (LocalityView("a", 0, endpoints, 1000),))
    model = parse_policy(POLICY).spec.models[0]
    assert LbConfig.of(view, model).full_scan
    assert not LbConfig.of(view).full_scan
    off = model.outlier_detection.model_copy(
        update={"consecutive_5xx": 0, "consecutive_gateway_failure": 0}
    )
    assert not LbConfig.of(view, model.model_copy(update={"outlier_detection": off})).full_scan


def test_groups_of_identical_hosts_split_as_their_hosts_would() -> None:
    single = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H, H, H))])
    grouped = Balancer(
        [
            Locality(
                "a",
                0,
                1000,
                (HostEntry("g1", "a", 1, H, count=2), HostEntry("g2", "a", 1, H, count=3)),
            )
        ]
    )
    assert single.split({}) == pytest.approx(dict.fromkeys((f"a-{i}" for i in range(5)), 0.2))
    assert grouped.split({}) == pytest.approx({"g1": 0.4, "g2": 0.6})


def test_bounded_load_hashing_passes_an_overloaded_hosts_share_on() -> None:
    config = LbConfig(LbKind.RING_HASH, hash_balance_factor=150)
    b = Balancer([Locality("a", 0, 1000, hosts("a", H, H, H, H))], config)
    assert b.split({}, cluster_active=0) == pytest.approx(dict.fromkeys(b.split({}), 0.25))
    # 40 in flight: each host may hold ceil(ceil(41 * 1.5) * 0.25) = 16.
    over = b.split({"a-0": 30, "a-1": 5, "a-2": 3, "a-3": 2}, cluster_active=40)
    assert "a-0" not in over
    assert sum(over.values()) == pytest.approx(1.0)
    drawn = _draws_hash(b, {"a-0": 30, "a-1": 5, "a-2": 3, "a-3": 2}, 40)
    assert drawn.get("a-0", 0.0) == 0.0


def _draws_hash(b: Balancer, active: dict[str, int], cluster: int) -> dict[str, float]:
    rng = random.Random(5)
    counts = Counter(b.pick(rng, active, cluster_active=cluster) for _ in range(10_000))
    return {k: v / 10_000 for k, v in counts.items() if k is not None}
