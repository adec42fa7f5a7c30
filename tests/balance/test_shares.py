"""One overflow share on its way from target to Envoy: dead zone, smoothing, levels."""

from __future__ import annotations

import pytest

from heliostat.balance import shares, weights
from heliostat.balance.shares import Share, cap_total, follow, level, quantise

GAIN = weights.alpha(2.0, shares.TAU_S)


def _run(
    target: float, ticks: int, start: Share | None = None, max_share: float = 0.3
) -> list[Share | None]:
    out: list[Share | None] = []
    share = start
    for _ in range(ticks):
        share = follow(share, target, 0.3, GAIN, 2.0)
        out.append(share)
    return out


def test_levels_are_steps_at_or_below_the_value_and_the_cap_itself() -> None:
    assert level(0.0, 0.3) == 0.0
    assert level(0.049, 0.3) == 0.0
    assert level(0.12, 0.3) == pytest.approx(0.10)
    assert level(0.3, 0.3) == 0.3
    assert level(0.33, 0.33) == 0.33  # the cap is a level even off the grid
    assert level(0.32, 0.33) == pytest.approx(0.30)


def test_quantise_moves_up_a_level_when_reached_and_down_only_clearly_below() -> None:
    assert quantise(0.149, 0.10, 0.3) == 0.10
    assert quantise(0.15, 0.10, 0.3) == pytest.approx(0.15)
    assert quantise(0.085, 0.10, 0.3) == 0.10  # within the down hysteresis
    assert quantise(0.079, 0.10, 0.3) == pytest.approx(0.05)
    assert quantise(0.2, 0.25, 0.2) == 0.2  # max_share lowered by a new policy


def test_a_share_ramps_to_its_target_within_bounded_steps_and_settles_exactly() -> None:
    history = _run(0.3, 10)
    published = [s.published if s else 0.0 for s in history]
    smoothed = [s.smoothed if s else 0.0 for s in history]
    assert published[-1] == 0.3 and smoothed[-1] == 0.3
    steps = [b - a for a, b in zip([0.0, *smoothed], smoothed, strict=False)]
    assert max(steps) <= shares.UP_PER_S * 2.0 + 1e-9
    assert published == sorted(published)


def test_the_share_ends_when_the_target_goes_to_zero() -> None:
    start = Share(goal=0.3, smoothed=0.3, published=0.3)
    history = _run(0.0, 10, start)
    assert history[0] is not None
    assert 0.3 - history[0].smoothed == pytest.approx(GAIN * 0.3)  # an EWMA step down
    assert history[-1] is None


def test_small_target_moves_do_not_move_the_goal() -> None:
    start = Share(goal=0.2, smoothed=0.2, published=0.2)
    after = follow(start, 0.215, 0.3, GAIN, 2.0)
    assert after == start
    moved = follow(start, 0.25, 0.3, GAIN, 2.0)
    assert moved is not None and moved.goal == 0.25


def test_a_distressed_rescuer_is_not_waited_for() -> None:
    start = Share(goal=0.3, smoothed=0.3, published=0.3)
    calm = follow(start, 0.1, 0.3, GAIN, 2.0)
    rushed = follow(start, 0.1, 0.3, GAIN, 2.0, distressed=True)
    assert calm is not None and rushed is not None
    assert rushed.smoothed == pytest.approx(0.1)
    assert rushed.smoothed < calm.smoothed


def test_cap_total_falls_back_to_floors() -> None:
    published = {"a": 0.2, "b": 0.15}
    cap_total(published, {"a": 0.19, "b": 0.11}, 0.3)
    assert published == pytest.approx({"a": 0.15, "b": 0.10})
    kept = {"a": 0.1}
    cap_total(kept, {"a": 0.09}, 0.3)
    assert kept == {"a": 0.1}
