"""How one overflow share (sender -> rescuer) moves from the law's target to what Envoy is told.

Three stages, each against a different way a share could misbehave:

1. **Goal, with a dead zone.** The goal follows the target only when the target moved at
   least GOAL_MOVE (2 points) away from it, or to zero. Targets come from measurements that
   lag the shares (or, at worst, do not respond at all); without the dead zone a target that
   creeps by tiny amounts would keep the share creeping forever. With it, the goal moves a
   bounded number of times and then stops.
2. **Smoothing.** The share follows the goal through an EWMA (time constant TAU_S),
   each step bounded by UP_PER_S * dt up and DOWN_PER_S * dt down (backing off is faster than
   lending). A rescuer that is itself past its threshold is not waited for: the share drops
   straight towards the goal, still bounded by DOWN_PER_S * dt. An EWMA never arrives, so it
   snaps to the goal once within SNAP.
3. **Publication, quantised with hysteresis.** Envoy gets multiples of STEP (5%), or
   overflow.max_share itself: the level at or *below* the smoothed share, so a rounded share
   never lends more than the target allows (a small rescuer of a big region would feel
   every rounded-up point). A published level is kept until the smoothed share reaches the
   next level up, or falls more than DOWN_HYSTERESIS below it: noise of a few points never
   reaches Envoy, and the share only moves when the decision really changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GOAL_MOVE = 0.02
TAU_S = 2.0
UP_PER_S = 0.05
DOWN_PER_S = 0.15
SNAP = 0.005
STEP = 0.05
DOWN_HYSTERESIS = 0.02


@dataclass(frozen=True, slots=True)
class Share:
    goal: float
    smoothed: float
    published: float


def follow(
    before: Share | None,
    target: float,
    max_share: float,
    gain: float,
    dt: float,
    *,
    distressed: bool = False,
) -> Share | None:
    """The share after this tick; None once it is zero everywhere (the overflow ended)."""
    goal = before.goal if before else 0.0
    if target == 0.0 or abs(target - goal) >= GOAL_MOVE:
        goal = target
    current = before.smoothed if before else 0.0
    change = goal - current if distressed and goal < current else gain * (goal - current)
    value = current + min(max(change, -DOWN_PER_S * dt), UP_PER_S * dt)
    if abs(goal - value) < SNAP:
        value = goal
    published = quantise(value, before.published if before else 0.0, max_share)
    if goal == 0.0 and value == 0.0 and published == 0.0:
        return None
    return Share(goal=goal, smoothed=value, published=published)


def level(value: float, max_share: float) -> float:
    """The publishable share at or below `value`: a multiple of STEP, or max_share itself."""
    if value >= max_share - 1e-9:
        return max_share
    return min(max_share, round(math.floor(value / STEP + 1e-9) * STEP, 6))


def quantise(value: float, published: float, max_share: float) -> float:
    """Up a level once `value` reaches it; down only once it fell clearly below the level."""
    candidate = level(value, max_share)
    if candidate < published and value >= published - DOWN_HYSTERESIS:
        return min(published, max_share)
    return candidate


def cap_total(published: dict[str, float], smoothed: dict[str, float], max_share: float) -> None:
    """Keep the sum of one sender's published shares within max_share (in place).

    Rounding and hysteresis can each hold a share a little above its smoothed value; if that
    adds up past the cap, every share falls to the STEP multiple at or below its smoothed value.
    """
    if sum(published.values()) <= max_share + 1e-9:
        return
    for q in published:  # floors add up to at most the smoothed total, itself <= max_share
        published[q] = round(math.floor(smoothed[q] / STEP + 1e-9) * STEP, 6)
