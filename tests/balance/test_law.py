"""The control law on examples: states, health, weights, reasons, priorities, clusters."""

from __future__ import annotations

import dataclasses
import itertools
import json

from heliostat.balance import (
    Health,
    TrafficClass,
    Views,
    compute,
    describe,
    static_views,
    weights,
)
from tests.balance.helpers import (
    INTERVAL,
    MODEL,
    T0,
    Signals,
    addresses,
    cluster,
    endpoint,
    locality,
    policy_of,
    run,
    signal,
)


def _all(policy_addresses: list[str], now: float, **values: float) -> Signals:
    return {(MODEL, a): signal(a, at=now, **values) for a in policy_addresses}  # type: ignore[arg-type]


def test_without_signals_everything_is_static_neutral_and_healthy() -> None:
    policy = policy_of()
    views, state = compute(policy, {}, None, T0)
    for view in [*views.by_region.values(), views.neutral]:
        for c in view.clusters:
            for e in c.endpoints():
                assert e.weight == weights.NEUTRAL
                assert e.health is Health.HEALTHY
                assert e.reason["state"] == "static"
            assert all(loc.weight is not None and loc.weight >= 1 for loc in c.localities)
    assert describe(state)["models"][MODEL]["regions"]["eu-west"]["overflowing"] is False


def test_static_views_are_the_laws_answer_without_batch_clusters() -> None:
    policy = policy_of()
    views, _ = compute(policy, {}, None, T0)
    static = static_views(policy)
    for region in [*policy.spec.regions, None]:
        assert [c.name for c in static.for_region(region).clusters] == [MODEL]
        assert static.for_region(region).clusters[0] == cluster(views, region)


def test_two_clusters_per_model_share_localities_and_only_batch_may_drop() -> None:
    policy = policy_of(extra_model=True)
    views, _ = compute(policy, {}, None, T0)
    for view in [*views.by_region.values(), views.neutral]:
        assert [(c.name, c.model, c.traffic_class) for c in view.clusters] == [
            (MODEL, MODEL, TrafficClass.INTERACTIVE),
            (f"{MODEL}.batch", MODEL, TrafficClass.BATCH),
            ("other", "other", TrafficClass.INTERACTIVE),
            ("other.batch", "other", TrafficClass.BATCH),
        ]
        assert view.clusters[0].localities == view.clusters[1].localities
        assert view.clusters[0].drop_overload_percent == 0.0


def test_priorities_follow_rtt_with_regions_beyond_budget_last() -> None:
    views, _ = compute(policy_of(), {}, None, T0)
    # From eu-west: us-east 80 ms (in budget), ap-southeast 160 ms (beyond 150).
    assert [
        (loc.region, loc.priority, loc.weight) for loc in cluster(views, "eu-west").localities
    ] == [
        ("eu-west", 0, 1000),
        ("us-east", 1, 1000),
        ("ap-southeast", 2, 1000),
    ]
    neutral = cluster(views, None)
    assert {loc.priority for loc in neutral.localities} == {0}
    # Neutral localities weigh what their endpoints weigh: 2 x 50, 2 x 50, 1 x 50.
    assert [loc.weight for loc in neutral.localities] == [50, 100, 100]


def test_beyond_budget_never_leaves_far_regions_out() -> None:
    views, _ = compute(policy_of(beyond="never"), {}, None, T0)
    assert [loc.region for loc in cluster(views, "eu-west").localities] == ["eu-west", "us-east"]
    assert [loc.region for loc in cluster(views, "ap-southeast").localities] == ["ap-southeast"]
    assert len(cluster(views, None).localities) == 3  # the neutral view has no budget


def test_priorities_stay_dense_when_a_region_has_no_endpoints() -> None:
    policy = policy_of({"us-east": 2, "ap-southeast": 1})
    views, _ = compute(policy, {}, None, T0)
    assert [(loc.region, loc.priority) for loc in cluster(views, "eu-west").localities] == [
        ("us-east", 0),
        ("ap-southeast", 1),
    ]


def test_idle_endpoints_ramp_up_to_the_maximum_and_then_hold() -> None:
    policy = policy_of()
    everyone = addresses(policy)
    ticks = run(policy, lambda t, now: _all(everyone, now, waiting=0.0, kv=0.0), 12)
    history = [endpoint(v, everyone[0]).weight for v, _ in ticks]
    assert history[0] > weights.NEUTRAL
    assert history[-1] >= 90
    assert history[-3:] == [history[-1]] * 3
    reason = endpoint(ticks[-1][0], everyone[0]).reason
    assert reason == {
        "state": "healthy",
        "band": "free",
        "saturation": 0.0,
        "driver": "kv",
        "failures": 0,
    }


def test_a_saturated_endpoint_hotter_than_its_peers_gets_a_quarter_and_stays_healthy() -> None:
    policy = policy_of()
    busy = addresses(policy, "us-east")[0]
    others = [a for a in addresses(policy) if a != busy]

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.2)
        result[(MODEL, busy)] = signal(busy, waiting=1.0, kv=0.85, at=now)
        return result

    history = [endpoint(v, busy) for v, _ in run(policy, signals, 4)]
    # Its peers are known from the second tick: then the cut, straight to a quarter.
    assert [e.weight for e in history] == [100, 25, 25, 25]
    e = history[-1]
    assert e.health is Health.HEALTHY  # never DEGRADED: see heliostat.balance.endpoints
    assert e.reason == {"state": "saturated", "saturation": 1.06, "driver": "kv", "failures": 0}


def test_a_region_saturated_everywhere_keeps_equal_weights() -> None:
    """Weights cannot make room where every replica is full: they stay equal, so Envoy keeps
    choosing by live in-flight counts (the regional law moves or sheds the excess)."""
    policy = policy_of()
    everyone = addresses(policy)
    ticks = run(policy, lambda t, now: _all(everyone, now, waiting=5.0, kv=0.9), 6)
    views, state = ticks[-1]
    assert {state.endpoints[(MODEL, a)].state for a in everyone} == {"saturated"}
    assert set(_weights_only(views).values()) == {weights.W_MAX}


def test_stale_or_never_scraped_endpoints_get_the_neutral_weight_and_a_flag() -> None:
    policy = policy_of()
    old, never, *others = addresses(policy)

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.0)
        result[(MODEL, old)] = signal(old, waiting=0.0, kv=0.0, at=now - 7.0)  # stale_after 6s
        return result

    views, _ = run(policy, signals, 3)[-1]
    for address, detail in ((old, "no scrape within 6s"), (never, "never scraped")):
        e = endpoint(views, address)
        assert (e.weight, e.health) == (weights.NEUTRAL, Health.HEALTHY)
        assert e.reason["state"] == "stale" and e.reason["stale"] is True
        assert e.reason["detail"] == detail


def test_failures_make_an_endpoint_unhealthy_and_one_good_scrape_brings_it_back() -> None:
    policy = policy_of()
    flaky, *others = addresses(policy)
    failures = [0, 1, 2, 3, 4, 0, 0, 0]

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.0)
        count = failures[tick]
        result[(MODEL, flaky)] = signal(
            flaky, waiting=0.0, kv=0.0, at=now - INTERVAL * count, failures=count
        )
        return result

    history = [endpoint(v, flaky) for v, _ in run(policy, signals, len(failures))]
    assert [e.health for e in history] == [Health.HEALTHY] * 3 + [Health.UNHEALTHY] * 2 + [
        Health.HEALTHY
    ] * 3
    assert history[3].reason == {"state": "unhealthy", "failures": 3, "error": "timeout"}
    assert history[4].reason is history[3].reason  # held while nothing changes
    assert history[3].weight == weights.FLOOR
    # Back from the floor at most doubling per tick: a slow start, not a stampede.
    assert [e.weight for e in history[5:]] == [2, 4, 8]


def test_drained_endpoints_are_draining_whatever_their_signal() -> None:
    policy = policy_of()
    gone, *_ = addresses(policy)
    signals = _all(addresses(policy), T0, waiting=0.0, kv=0.0)
    views, _ = compute(policy, signals, None, T0, drained=frozenset({(MODEL, gone)}))
    e = endpoint(views, gone)
    assert e.health is Health.DRAINING and e.reason["state"] == "draining"
    assert e.weight == weights.FLOOR


def test_weight_and_reason_are_held_while_signals_wobble_inside_the_dead_band() -> None:
    policy = policy_of()
    everyone = addresses(policy)
    wobble = [0.30, 0.31, 0.29, 0.32, 0.30]

    def signals(tick: int, now: float) -> Signals:
        kv = 0.8 * wobble[tick - 10] if tick >= 10 else 0.24
        return _all(everyone, now, waiting=0.0, kv=kv)

    ticks = run(policy, signals, 15)
    settled = ticks[9][0]
    for views, _ in ticks[10:]:
        assert views == settled
        assert endpoint(views, everyone[0]).reason is endpoint(settled, everyone[0]).reason


def test_hysteresis_keeps_an_endpoint_saturated_while_it_oscillates_near_the_threshold() -> None:
    policy = policy_of()
    edge, *others = addresses(policy)

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.2)
        kv = 0.8 * (1.05 if tick % 2 == 0 else 0.92)  # saturation 1.05, 0.92, 1.05, ...
        result[(MODEL, edge)] = signal(edge, waiting=0.0, kv=kv, at=now)
        return result

    ticks = run(policy, signals, 10)
    states = {endpoint(v, edge).reason["state"] for v, _ in ticks}
    assert states == {"saturated"}
    first = endpoint(ticks[0][0], edge)
    assert all(endpoint(v, edge) == first for v, _ in ticks)  # nothing to push after the first


def test_leaving_saturation_needs_a_real_drop_and_a_clear_recovery_turns_at_once() -> None:
    """Out of saturation but still hotter than its peers (the near band), the way back up is
    a turn on soft evidence: it waits for the reversal gap. Once the level is out of both
    bands the recovery is clear, and the weight ramps back at once, x2 per tick."""
    policy = policy_of()
    edge = addresses(policy, "us-east")[0]
    others = [a for a in addresses(policy) if a != edge]
    saturation = [1.1, 1.1, 1.1, 0.9, 0.86, 0.78, 0.78, 0.78, 0.3, 0.3, 0.3, 0.3]

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.2)
        result[(MODEL, edge)] = signal(edge, waiting=0.0, kv=0.8 * saturation[tick], at=now)
        return result

    history = [endpoint(v, edge) for v, _ in run(policy, signals, len(saturation))]
    states = [e.reason["state"] for e in history]
    assert states[:7] == ["saturated"] * 7  # 0.9, 0.86, 0.78 keep the average above 0.85
    assert "saturated" not in states[7:]
    weights_seen = [e.weight for e in history]
    assert weights_seen[1:8] == [25] * 7  # cut at once; held while only soft evidence
    assert history[7].reason["band"] == "near" and history[7].reason["goal"] == 50
    assert weights.MIN_REVERSAL_GAP_S > 14.0  # tick 8 is 14 s after the cut: within the gap
    assert weights_seen[8:] == [50, 100, 100, 100]  # clear: ramps up, x2 per tick


def test_identical_inputs_give_identical_outputs() -> None:
    policy = policy_of()
    signals = _all(addresses(policy), T0, waiting=3.0, kv=0.5)
    first = compute(policy, signals, None, T0)
    second = compute(policy, signals, None, T0)
    assert first == second
    again = compute(policy, signals, first[1], T0 + INTERVAL)
    assert again == compute(policy, signals, second[1], T0 + INTERVAL)


def test_a_tick_at_the_same_time_changes_no_weight() -> None:
    policy = policy_of()
    signals = _all(addresses(policy), T0, waiting=0.0, kv=0.0)
    views, state = compute(policy, signals, None, T0)
    again, _ = compute(policy, signals, state, T0)
    assert again == views


def test_describe_is_json() -> None:
    policy = policy_of()
    signals = _all(addresses(policy), T0, waiting=8.0, kv=0.9)
    _, state = compute(policy, signals, None, T0)
    for tick in (1, 2):  # refusals start once the planet has been full for 3 s
        later = _all(addresses(policy), T0 + tick * INTERVAL, waiting=8.0, kv=0.9)
        _, state = compute(policy, later, state, T0 + tick * INTERVAL)
    decoded = json.loads(json.dumps(describe(state)))
    eu = decoded["models"][MODEL]["regions"]["eu-west"]
    assert eu["capacity"] == 2 and eu["pressure"] == 2.0
    assert eu["endpoints"] == {"saturated": 2}
    # Every region at twice its thresholds: the planet is full, half of it is refused.
    assert eu["refusal"]["active"] is True and eu["refusal"]["interactive"] == 0.5
    assert decoded["models"][MODEL]["neutral"]["refusal"]["interactive"] == 0.5


def test_removed_endpoints_leave_no_state_behind() -> None:
    policy = policy_of()
    signals = _all(addresses(policy), T0, waiting=0.0, kv=0.0)
    _, state = compute(policy, signals, None, T0)
    smaller = policy_of({"us-east": 1})
    views, state = compute(smaller, signals, state, T0 + INTERVAL)
    assert set(state.endpoints) == {(MODEL, a) for a in addresses(smaller)}
    assert [loc.region for loc in cluster(views, "eu-west").localities] == ["us-east"]


def _weights_only(views: Views) -> dict[str, int]:
    return {e.address: e.weight for e in cluster(views, None).endpoints()}


def test_locality_weight_of_the_neutral_view_follows_endpoint_weights() -> None:
    policy = policy_of()
    everyone = addresses(policy)
    views, _ = run(policy, lambda t, now: _all(everyone, now, waiting=0.0, kv=0.0), 8)[-1]
    neutral = cluster(views, None)
    for loc in neutral.localities:
        assert loc.weight == sum(e.weight for e in loc.endpoints)
    assert locality(neutral, "us-east").weight == sum(
        w for a, w in _weights_only(views).items() if a in addresses(policy, "us-east")
    )
    assert dataclasses.asdict(neutral)  # plain data all the way down


def test_a_burst_in_one_scrape_does_not_send_an_endpoint_to_the_floor() -> None:
    """4 of 4 slots busy for one scrape is a burst, not saturation: the level is an average."""
    policy = policy_of(slots=4)
    bursty, *others = addresses(policy)
    running = [1.0] * 6 + [4.0] + [1.0] * 3

    def signals(tick: int, now: float) -> Signals:
        result = {(MODEL, a): signal(a, waiting=0.0, kv=0.1, running=1.0, at=now) for a in others}
        result[(MODEL, bursty)] = signal(bursty, waiting=0.0, kv=0.1, running=running[tick], at=now)
        return result

    history = [endpoint(v, bursty) for v, _ in run(policy, signals, len(running))]
    assert {e.reason["state"] for e in history} == {"healthy"}
    assert min(e.weight for e in history[6:]) >= history[5].weight / 2


def test_unmistakable_overload_saturates_at_once() -> None:
    """A queue at twice its threshold in a single scrape: saturated now, not in a few ticks."""
    policy = policy_of()
    drowning = addresses(policy, "us-east")[0]
    others = [a for a in addresses(policy) if a != drowning]

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.1)
        waiting = 0.0 if tick < 6 else 8.0  # thresholds.queue is 4
        result[(MODEL, drowning)] = signal(drowning, waiting=waiting, kv=0.1, at=now)
        return result

    history = [endpoint(v, drowning) for v, _ in run(policy, signals, 8)]
    assert history[5].reason["state"] == "healthy" and history[5].weight == weights.W_MAX
    assert history[6].reason["state"] == "saturated" and history[6].weight == weights.W_MAX // 4
    assert history[6].health is Health.HEALTHY


def test_stationary_noise_is_not_republished() -> None:
    """A 4-slot replica at ~30% load reads 0-4 running from scrape to scrape. Its weight
    follows the trend, not every scrape, so EDS stays quiet."""
    policy = policy_of(slots=4)
    noisy, *others = addresses(policy)
    busy = [1, 0, 2, 1, 3, 1, 0, 1, 2, 4, 1, 0, 1, 2, 1, 3, 0, 1, 2, 1] * 4  # mean 1.35

    def signals(tick: int, now: float) -> Signals:
        result = {(MODEL, a): signal(a, waiting=0.0, kv=0.1, running=1.0, at=now) for a in others}
        result[(MODEL, noisy)] = signal(noisy, waiting=0.0, kv=0.1, running=busy[tick], at=now)
        return result

    for interval in (0.5, 2.0):  # at 2 s ticks the EWMA alone would republish most ticks
        ticks = run(policy, signals, len(busy), interval=interval)
        published = [endpoint(v, noisy).weight for v, _ in ticks[20:]]
        changes = sum(a != b for a, b in itertools.pairwise(published))
        assert changes <= 2, published
        assert {endpoint(v, noisy).reason["state"] for v, _ in ticks} == {"healthy"}


def test_a_burst_that_drained_is_cut_at_once_and_restored_at_the_next_scrape() -> None:
    """One scrape at three times the queue threshold (a burst), the next one idle, scraped
    every 0.5 s (one sample is a tenth of the average): the replica is cut at once and its
    weight starts back up at the next tick, not a reversal gap later (the lift that one hard
    sample gave is taken back by one clear sample)."""
    policy = policy_of()
    edge = addresses(policy, "us-east")[0]
    others = [a for a in addresses(policy) if a != edge]
    waiting = [0.0] * 6 + [12.0] + [0.0] * 4

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.2)
        result[(MODEL, edge)] = signal(edge, waiting=waiting[tick], kv=0.2, at=now)
        return result

    history = [endpoint(v, edge) for v, _ in run(policy, signals, len(waiting), interval=0.5)]
    published = [e.weight for e in history]
    assert published[5] == weights.W_MAX
    assert published[6] < weights.W_MAX and history[6].reason["state"] == "saturated"
    assert published[7] > published[6] and history[7].reason["state"] == "healthy"
    assert published[-1] == weights.W_MAX


def test_a_replica_that_stays_busy_after_a_hard_sample_stays_cut() -> None:
    """A hard sample then samples still past the clear line: the lift holds, the replica
    stays saturated and cut (no turn on a recovery that is not one)."""
    policy = policy_of()
    edge = addresses(policy, "us-east")[0]
    others = [a for a in addresses(policy) if a != edge]
    kv = [0.2] * 4 + [0.8 * 2.5] + [0.8 * 0.9] * 4

    def signals(tick: int, now: float) -> Signals:
        result = _all(others, now, waiting=0.0, kv=0.2)
        result[(MODEL, edge)] = signal(edge, waiting=0.0, kv=kv[tick], at=now)
        return result

    history = [endpoint(v, edge) for v, _ in run(policy, signals, len(kv), interval=0.5)]
    assert [e.reason["state"] for e in history[4:]] == ["saturated"] * 5
    assert {e.weight for e in history[4:]} == {weights.W_MAX // 4}
