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


def test_full_weight_while_there_is_room_less_only_when_hotter_than_peers() -> None:
    target = weights.target
    assert target(is_saturated=False, is_near=False, hashing=False) == weights.W_MAX
    assert target(is_saturated=False, is_near=True, hashing=False) == weights.W_MAX // 2
    assert target(is_saturated=True, is_near=True, hashing=False) == weights.W_MAX // 4
    # Saturated like its peers: weights cannot make room, they stay equal.
    assert target(is_saturated=True, is_near=False, hashing=False) == weights.W_MAX
    # With hashing a weight is a ring share: only a saturated, hotter replica moves keys.
    assert target(is_saturated=False, is_near=True, hashing=True) == weights.W_MAX
    assert target(is_saturated=True, is_near=True, hashing=True) == weights.W_MAX // 2
    # Hotter than its peers by a known ratio: that share of its weight, in sqrt(2) steps, at
    # least one step down, at most to the cuts above.
    assert target(is_saturated=False, is_near=True, hashing=False, relative=0.9) == 71
    assert target(is_saturated=False, is_near=True, hashing=False, relative=0.1) == 50
    assert target(is_saturated=True, is_near=True, hashing=False, relative=0.5) == 50
    assert target(is_saturated=True, is_near=True, hashing=False, relative=0.1) == 25
    assert target(is_saturated=True, is_near=True, hashing=True, relative=0.9) == 71
    assert target(is_saturated=False, is_near=True, hashing=True, relative=0.1) == weights.W_MAX
    # A replica with a third of its peers' capacity gets a third of their weight.
    assert target(is_saturated=False, is_near=False, hashing=False, capacity=1 / 3) == 33
    assert target(is_saturated=True, is_near=True, hashing=False, capacity=0.02) == 1


def test_the_near_band_is_for_a_replica_hotter_than_its_peers_with_hysteresis() -> None:
    assert not weights.near(0.89, 0.3, False)
    assert weights.near(0.9, 0.3, False)
    assert weights.near(0.71, 0.3, True)
    assert not weights.near(0.7, 0.3, True)
    # Alike replicas, however busy, stay at the full weight; so does a replica alone.
    assert not weights.near(0.95, 0.8, False)
    assert not weights.near(0.95, None, False)
    assert not weights.near(0.95, 0.86, True)  # within NEAR_MARGIN / 2: back to free


def test_raises_ramp_at_most_x2_and_cuts_halve_unless_to_the_floor() -> None:
    start = weights.NO_MOVES
    assert weights.move(1, 100, T0, start)[0] == 2
    assert weights.move(40, 100, T0, start)[0] == 80
    assert weights.move(80, 100, T0, start)[0] == 100
    assert weights.move(100, 10, T0, start)[0] == 50  # at most halved per tick
    assert weights.move(100, weights.FLOOR, T0, start)[0] == weights.FLOOR  # saturation
    assert weights.move(50, 50, T0, start) == (50, start)


def test_a_turn_waits_for_the_reversal_budget_and_a_ramp_does_not() -> None:
    t = T0
    weight, moves = weights.move(100, 50, t, weights.Moves(direction=1))  # cut after a raise
    assert (weight, moves.reversals) == (50, (t,))
    # Turning back up needs MIN_REVERSAL_GAP_S since the last turn.
    assert weights.move(50, 100, t + 5, moves) == (50, moves)
    weight, moves = weights.move(50, 100, t + weights.MIN_REVERSAL_GAP_S, moves)
    assert weight == 100 and len(moves.reversals) == 2
    # A third turn within REVERSAL_WINDOW_S of the first is held, even to the floor...
    at = t + weights.REVERSAL_WINDOW_S - 1
    assert weights.move(100, 50, at, moves) == (100, moves)
    assert weights.move(100, weights.FLOOR, at, moves) == (100, moves)
    # ...and goes ahead once the first turn is a window old.
    assert weights.move(100, 50, t + weights.REVERSAL_WINDOW_S, moves)[0] == 50
    # Moves in the same direction as the last one are never held.
    ramp = weights.Moves(direction=1, reversals=(at, at))
    assert weights.move(8, 100, at + 0.5, ramp)[0] == 16
    # The first cut of a calm weight is free: overload is met at once.
    assert weights.move(100, weights.FLOOR, at, weights.Moves(direction=1))[0] == weights.FLOOR


def test_a_clear_sample_takes_back_a_hard_lift_and_nothing_else() -> None:
    gain = weights.alpha(0.5)
    lifted = weights.settle(weights.Level(0.1), 3.0, gain)
    assert lifted.value == weights.ENTER_SATURATED and lifted.unlifted is not None
    # A busy sample keeps the lift (the replica may still be overloaded)...
    busy = weights.settle(lifted, 0.8, gain)
    assert busy.value > weights.LEAVE_SATURATED and busy.unlifted is not None
    # ...a clear one returns the level to the average of the samples themselves.
    cleared = weights.settle(busy, 0.0, gain)
    assert cleared.unlifted is None
    assert cleared.value == pytest.approx(busy.unlifted * (1 - gain))
    assert cleared.value <= weights.CLEAR
    # A level its own samples raised is an average like any other: a clear sample is one
    # more sample, not a reset.
    own = weights.settle(weights.Level(1.4), 0.0, gain)
    assert own == weights.Level(pytest.approx(1.4 * (1 - gain)))
    # The first sample starts the level, lifted or not.
    assert weights.settle(None, 3.0, gain) == weights.Level(3.0)


def test_a_forced_cut_and_a_clear_recovery_do_not_wait_for_the_gap() -> None:
    t = T0
    hard = weights.Evidence(saturated=True)
    clear = weights.Evidence(clear=True)
    weight, moves = weights.move(100, 25, t, weights.Moves(direction=1), hard)
    assert weight == 25 and moves.forced and moves.reversals == (t,)
    # Clearly free again one tick later: the turn back up goes ahead (ramping x2).
    weight, moves = weights.move(25, 100, t + 0.5, moves, clear)
    assert weight == 50 and len(moves.reversals) == 2 and not moves.forced
    # A soft recovery (out of saturation, not clearly free) still waits for the gap.
    _, soft_cut = weights.move(100, 25, t, weights.Moves(direction=1), hard)
    assert weights.move(25, 100, t + 0.5, soft_cut) == (25, soft_cut)
    # So does a clear raise after a cut that was not forced (a tier, the near band).
    _, near_cut = weights.move(100, 50, t, weights.Moves(direction=1))
    assert weights.move(50, 100, t + 0.5, near_cut, clear) == (50, near_cut)
    # A saturated replica's cut right after a raise goes ahead, at once to its goal...
    assert weights.move(100, 25, t + 1, weights.Moves(1, (t,)), hard)[0] == 25
    # ...but the budget itself holds whatever the evidence: no third turn in the window.
    assert weights.move(50, 12, t + 1, moves, hard) == (50, moves)


def test_recovery_is_clear_only_out_of_both_bands() -> None:
    assert weights.recovered(0.7, is_saturated=False, is_near=False)
    assert not weights.recovered(0.75, is_saturated=False, is_near=False)
    assert not weights.recovered(0.6, is_saturated=False, is_near=True)
    assert not weights.recovered(0.6, is_saturated=True, is_near=False)


def test_the_load_settles_a_capacity_tier_the_counts_cannot() -> None:
    """Two 30-second estimates of replicas of speeds 1 and 3 (ratio 1/3) are never firmer
    than about 15%: at 2.5 standard errors 1/3 reads as 0.46, and the replica held at tier
    2 (weight 50) stayed there. Running hotter than its peers (`lean` +1), its estimate
    beyond the hysteresis and its one-error bound past the midpoint, it steps down one
    tier; the load leaning the other way, or an estimate within the hysteresis (alike
    replicas' noise), moves nothing."""
    third = 1.0 / 3.0
    assert weights.capacity_tier(third, 2, 0.16) == 2
    assert weights.capacity_tier(third, 2, 0.16, lean=1) == 3
    assert weights.capacity_tier(third, 2, 0.16, lean=-1) == 2
    assert weights.capacity_tier(third, 1, 0.3, lean=1) == 2  # one step at a time
    assert weights.capacity_tier(0.8, 0, 0.15, lean=1) == 0  # within the hysteresis
    assert weights.capacity_tier(0.72, 0, 0.2, lean=1) == 0  # beyond, but not likely so
    # Cooler than busy peers, held a tier too low: one step up.
    assert weights.capacity_tier(0.6, 3, 0.16) == 3
    assert weights.capacity_tier(0.6, 3, 0.16, lean=-1) == 2
    assert weights.capacity_tier(0.6, 3, 0.16, lean=1) == 3
