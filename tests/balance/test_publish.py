"""How a planned fraction reaches Envoy: feed-forward, thousandths, a band, no quick reversal."""

from __future__ import annotations

import itertools
import random

from heliostat.balance.publish import (
    LARGE_MOVE,
    RELEASE_HOLD_S,
    RELEASE_TICKS,
    REVERSAL_HOLD_S,
    SHARE_BAND,
    hold,
    quantise,
)
from heliostat.balance.state import Held


def _run(targets: list[float], dt: float = 0.5) -> list[float]:
    held: Held | None = None
    out = []
    for tick, target in enumerate(targets):
        held = hold(held, target, tick * dt, band=SHARE_BAND)
        out.append(held.published)
    return out


def test_thousandths_within_zero_and_one() -> None:
    assert quantise(0.12345) == 0.123
    assert quantise(-0.2) == 0.0 and quantise(1.7) == 1.0


def test_a_new_target_is_published_at_once_not_ramped() -> None:
    assert _run([0.0, 0.43]) == [0.0, 0.43]


def test_moves_inside_the_band_are_held_and_keep_their_reason() -> None:
    first = hold(None, 0.3, 0.0, band=SHARE_BAND, reason=lambda v: f"at {v}")
    second = hold(first, 0.31, 0.5, band=SHARE_BAND, reason=lambda v: f"at {v}")
    assert second.published == 0.3 and second.reason == "at 0.3"
    assert second.target == 0.31


def test_a_turn_back_waits_unless_it_is_large_and_zero_waits_less() -> None:
    up = hold(hold(None, 0.2, 0.0, band=SHARE_BAND), 0.3, 1.0, band=SHARE_BAND)
    back = hold(up, 0.22, 2.0, band=SHARE_BAND)
    assert back.published == 0.3  # reversal within REVERSAL_HOLD_S: held
    later = hold(back, 0.15, 1.0 + REVERSAL_HOLD_S + 0.1, band=SHARE_BAND)
    assert later.published == 0.15  # once the hold is over (and beyond the noisy band)
    big = hold(up, 0.01, 2.0, band=SHARE_BAND)  # 29 points: beyond twice the band
    assert big.published == 0.01  # a real change goes through at once
    assert LARGE_MOVE < 0.3 - 0.01
    home = hold(up, 0.0, 1.0 + RELEASE_HOLD_S + 0.1, band=SHARE_BAND)
    assert home.published == 0.0


def test_noisy_targets_around_a_constant_level_turn_round_at_most_twice_a_minute() -> None:
    rng = random.Random(3)
    targets = [max(0.0, rng.gauss(0.4, 0.06)) for _ in range(240)]  # 2 minutes, 0.5 s ticks
    published = _run(targets)
    turns = direction = 0
    for a, b in itertools.pairwise(published):
        step = (b > a) - (b < a)
        if step and direction and step != direction:
            turns += 1
        direction = step or direction
    assert turns <= 4
    assert all(abs(p - 0.4) <= 0.2 for p in published[10:])


def test_urgent_moves_are_not_held() -> None:
    up = hold(hold(None, 0.2, 0.0, band=SHARE_BAND), 0.3, 1.0, band=SHARE_BAND)
    assert hold(up, 0.28, 1.5, band=SHARE_BAND, urgent=True).published == 0.28


def _released(targets: list[float], urgent_at: int | None = None) -> list[float]:
    """A share published 40 s ago (no reversal hold left), then these targets each tick."""
    held: Held | None = Held(published=0.4, target=0.4, direction=1, moved_at=0.0)
    out = []
    for tick, target in enumerate(targets):
        now = 40.0 + tick * 0.5
        held = hold(
            held,
            target,
            now,
            band=SHARE_BAND,
            urgent=tick == urgent_at,
            release_ticks=RELEASE_TICKS,
        )
        out.append(held.published)
    return out


def test_a_one_tick_dip_in_the_need_does_not_release_a_share() -> None:
    # Without the grace the share went to 0 on the dip and users went back to queue.
    assert _released([0.4, 0.0, 0.4, 0.4]) == [0.4, 0.4, 0.4, 0.4]
    assert _released([0.0, 0.4, 0.0, 0.0, 0.4]) == [0.4] * 5


def test_a_share_falls_once_the_need_stayed_lower_for_the_grace_ticks() -> None:
    published = _released([0.0] * (RELEASE_TICKS + 2))
    assert published[: RELEASE_TICKS - 1] == [0.4] * (RELEASE_TICKS - 1)
    assert published[RELEASE_TICKS - 1 :] == [0.0] * 3
    lower = _released([0.1] * (RELEASE_TICKS + 1))
    assert lower[RELEASE_TICKS - 1] == 0.1


def test_an_urgent_fall_skips_the_grace() -> None:
    assert _released([0.0, 0.0], urgent_at=0) == [0.0, 0.0]


def test_rises_are_not_delayed_by_the_grace() -> None:
    assert _released([0.7, 0.7]) == [0.7, 0.7]
    assert _released([0.0, 0.9]) == [0.4, 0.9]  # a dip, then more need: up at once


def test_an_urgent_move_within_the_band_is_still_held() -> None:
    """Urgency skips the reversal hold and the grace, not the dead band: a move of a few
    thousandths relieves nothing and is one more turn for Envoy."""
    up = hold(hold(None, 0.2, 0.0, band=SHARE_BAND), 0.3, 1.0, band=SHARE_BAND)
    assert hold(up, 0.29, 1.5, band=SHARE_BAND, urgent=True).published == 0.3
    assert hold(up, 0.0, 1.5, band=SHARE_BAND, urgent=True).published == 0.0  # home: always


def test_without_a_large_move_exception_only_urgency_turns_back_within_the_hold() -> None:
    up = Held(published=0.6, target=0.6, direction=1, moved_at=1.0)  # rose at 1 s
    # A fall of 30 points within REVERSAL_HOLD_S: large enough by default, held without it.
    assert hold(up, 0.3, 5.0, band=SHARE_BAND).published == 0.3
    held = hold(up, 0.3, 5.0, band=SHARE_BAND, large_move=float("inf"))
    assert held.published == 0.6
    assert hold(up, 0.3, 5.0, band=SHARE_BAND, large_move=float("inf"), urgent=True).published == (
        0.3
    )
    later = hold(up, 0.3, 1.0 + REVERSAL_HOLD_S, band=SHARE_BAND, large_move=float("inf"))
    assert later.published == 0.3
