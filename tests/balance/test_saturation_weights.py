"""The per-endpoint pieces of the control law: saturation terms and the weight curve."""

from __future__ import annotations

import math

import pytest

from heliostat.balance import compute, weights
from heliostat.balance.saturation import Growth, measure, queue_growth
from heliostat.policy import Thresholds
from tests.balance.helpers import MODEL, T0, addresses, policy_of, signal

THRESHOLDS = Thresholds()  # queue 4, kv 0.8, running 1.0


def test_saturation_is_the_largest_term_and_names_its_driver() -> None:
    load = measure(signal("a:1", waiting=2.0, kv=0.3), None, THRESHOLDS)
    assert load is not None
    assert (load.saturation, load.driver) == (0.5, "queue")
    load = measure(signal("a:1", waiting=1.0, kv=0.72), None, THRESHOLDS)
    assert load is not None
    assert load.driver == "kv" and load.saturation == pytest.approx(0.9)


def test_running_term_uses_the_slots_hint_before_max_num_seqs_and_is_skipped_without() -> None:
    busy = signal("a:1", waiting=0.0, kv=0.1, running=12.0, max_num_seqs=32)
    by_engine = measure(busy, None, THRESHOLDS)
    by_hint = measure(busy, 16, THRESHOLDS)
    assert by_engine is not None and by_hint is not None
    assert by_engine.saturation == pytest.approx(12 / 32) and by_engine.driver == "running"
    assert by_hint.saturation == pytest.approx(12 / 16)
    unknown = measure(signal("a:1", waiting=0.0, kv=0.1, running=12.0), None, THRESHOLDS)
    assert unknown is not None and unknown.driver == "kv"


def test_running_threshold_is_a_share_of_slots() -> None:
    load = measure(
        signal("a:1", kv=None, waiting=None, running=8.0),
        16,
        Thresholds.model_validate({"running": 0.5}),
    )
    assert load is not None and load.saturation == pytest.approx(1.0)


def test_no_terms_means_no_load_and_bad_readings_are_not_trusted() -> None:
    assert measure(signal("a:1", waiting=None, kv=None), None, THRESHOLDS) is None
    load = measure(signal("a:1", waiting=math.nan, kv=-0.5), None, THRESHOLDS)
    assert load is not None and load.saturation == 0.0 and load.driver == "kv"
    assert measure(signal("a:1", waiting=math.inf, kv=None), None, THRESHOLDS) is None


def test_pressure_counts_queue_growth_and_keeps_growing_past_full_kv() -> None:
    steady = measure(signal("a:1", waiting=8.0, kv=0.8), None, THRESHOLDS)
    growing = measure(signal("a:1", waiting=8.0, kv=0.8), None, THRESHOLDS, growth=4.0)
    assert steady is not None and growing is not None
    assert steady.pressure == pytest.approx(2.0)
    assert growing.pressure == pytest.approx(3.0)
    assert growing.saturation == steady.saturation  # growth is demand, not saturation
    seats = measure(signal("a:1", waiting=16.0, kv=1.0, running=16.0), 16, THRESHOLDS)
    assert seats is not None and seats.pressure == pytest.approx(4.0)
    assert seats.pressure >= seats.saturation


def test_queue_growth_counts_only_a_rise_over_two_samples() -> None:
    none = Growth(0.0, 0.0)
    first = queue_growth(6.0, 2.0, none)
    assert first == Growth(4.0, 0.0)  # one rise is a blip
    second = queue_growth(9.0, 6.0, first)
    assert second == Growth(3.0, 3.0)  # two in a row: a trend, the smaller rise counts
    assert queue_growth(1.0, 9.0, second) == Growth(0.0, 0.0)  # it fell
    assert queue_growth(6.0, None, none) == none
    assert queue_growth(None, 6.0, second) == none


def test_a_tick_that_sees_the_same_sample_keeps_its_growth() -> None:
    policy = policy_of()
    address = addresses(policy)[0]
    key = (MODEL, address)
    state = None
    for tick, waiting in enumerate([4.0, 8.0, 12.0]):
        now = T0 + tick * 2.0
        _, state = compute(policy, {key: signal(address, waiting=waiting, at=now)}, state, now)
    assert state is not None
    grown = state.endpoints[key].growth
    assert grown == Growth(4.0, 4.0)
    # Two more ticks before the next scrape: the same sample, the same growth.
    for extra in (0.5, 1.0):
        now = T0 + 4.0 + extra
        same = signal(address, waiting=12.0, at=T0 + 4.0)
        _, state = compute(policy, {key: same}, state, now)
        assert state.endpoints[key].growth == grown


def test_target_weight_falls_from_max_to_floor() -> None:
    assert weights.target(0.0) == weights.W_MAX
    assert weights.target(1.0) == weights.target(3.0) == weights.FLOOR
    assert weights.target(0.3) == weights.target(0.49) == weights.W_MAX  # "free"
    assert weights.target(0.6) == 60
    assert weights.target(0.99) == 10
    samples = [weights.target(s / 100) for s in range(-10, 130)]
    assert samples == sorted(samples, reverse=True)


def test_publish_holds_inside_the_dead_band_and_is_rate_limited() -> None:
    assert weights.publish(50, 54.9) == 50  # within 10%
    assert weights.publish(50, 55.5) == 56
    assert weights.publish(5, 5.9) == 5  # within 1
    assert weights.publish(5, 6.2) == 6
    assert weights.publish(10, 90.0) == 20  # at most doubled
    assert weights.publish(80, 3.0) == 40  # at most halved
    assert weights.publish(1, 50.0) == 2
    assert weights.publish(3, 1.0) == 2


def test_saturated_state_has_hysteresis() -> None:
    assert not weights.saturated(0.99, False)
    assert weights.saturated(1.0, False)
    assert weights.saturated(0.9, True)
    assert not weights.saturated(0.85, True)


def test_smoothing_gain_depends_on_elapsed_time_not_on_tick_count() -> None:
    one_big = weights.smooth(50.0, 100.0, weights.alpha(2.0))
    four_small = 50.0
    for _ in range(4):
        four_small = weights.smooth(four_small, 100.0, weights.alpha(0.5))
    assert four_small == pytest.approx(one_big)
    assert weights.alpha(0.0) == 0.0


def test_ties_go_to_kv_then_queue_then_running() -> None:
    load = measure(signal("a:1", waiting=2.0, kv=0.4, running=8.0), 16, THRESHOLDS)
    assert load is not None and load.driver == "kv"


def test_the_first_sample_starts_the_level_and_a_hard_sample_lifts_it() -> None:
    assert weights.smooth(None, 0.4, 0.1) == 0.4
    assert weights.smooth(0.2, 0.4, 0.5) == pytest.approx(0.3)
    # Twice the thresholds in one scrape: at least at the threshold, whatever the average.
    assert weights.smooth(0.2, weights.HARD_SATURATION, 0.1) == weights.ENTER_SATURATED
    assert weights.smooth(1.5, 3.0, 0.1) == pytest.approx(1.65)


def test_the_noise_band_holds_weights_against_what_noise_explains_and_no_more() -> None:
    assert weights.noise_band(0.0, 0.1) == 0.0  # a steady signal: the plain dead band
    band = weights.noise_band(0.2, weights.alpha(0.5))
    assert 5.0 < band < weights.NOISE_CAP
    assert weights.publish(70, 80.0) == 80
    assert weights.publish(70, 80.0, noise=band) == 70
    assert weights.noise_band(5.0, 0.5) == weights.NOISE_CAP  # a real step is not noise
    assert weights.publish(2, 50.0, noise=weights.NOISE_CAP) == 4


def test_a_move_across_the_dead_band_is_published_only_when_it_lasts() -> None:
    # One tick outside the band (noise) holds; the second tick in the same direction publishes.
    assert weights.confirm(70, 62, 62.0, 0.0, 0) == (70, -1)
    assert weights.confirm(70, 62, 62.0, 0.0, -1) == (62, 0)
    # A reversal starts counting again.
    assert weights.confirm(70, 78, 78.0, 0.0, -1) == (70, 1)
    # Large moves and rate-limited ramps need no confirmation.
    assert weights.confirm(70, 40, 40.0, 0.0, 0) == (40, 0)
    assert weights.confirm(4, 8, 60.0, 0.0, 0) == (8, 0)
    # Inside the band there is nothing to confirm.
    assert weights.confirm(70, 70, 66.0, 0.0, -1) == (70, 0)


def test_a_step_weight_is_held_while_the_level_stays_near_its_step() -> None:
    # 0.52 is in the 60 step, but a replica published at 100 keeps it within the hysteresis.
    assert weights.held_target(0.52, 100) == 100
    assert weights.held_target(0.56, 100) == 60
    # Coming down: 0.48 is "free", but a replica at 60 stays there until 0.45.
    assert weights.held_target(0.48, 60) == 60
    assert weights.held_target(0.44, 60) == 100
    # A weight that is not a step (a ramp under way) does not hold anything.
    assert weights.held_target(0.3, 8) == 100
