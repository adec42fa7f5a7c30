"""How a planned fraction (an overflow share, a refusal) reaches Envoy: feed-forward, held.

The allocation computes each fraction from smoothed demand and capacity, so the target is
already the answer: a new target is published as it is (feed-forward), not ramped towards
in steps. What keeps Envoy calm is hysteresis around the published value:

- **Resolution.** Fractions are published in thousandths, the resolution of a locality
  weight out of 1000 (and of a drop percentage in tenths of a percent).
- **Dead band.** The published value moves only when the target is at least `band` away
  (2 points for shares, 1 for refusals), or falls to zero. Noise of a few points in the
  estimates never reaches Envoy.
- **Noise-wide.** The target's own tick-to-tick wander (an EWMA of its steps) widens the
  band to NOISE_K times it: a target that swings with its estimates is not a decision.
- **No quick reversal.** A move against the direction of the last one is held for
  REVERSAL_HOLD_S after that move unless it is large (LARGE_MOVE, at least twice the band),
  or urgent (a rescuer past its capacity, a region out of reach): under constant load a
  fraction therefore turns round at most twice a minute, while a real change goes through
  at once.
  A return to zero waits at most RELEASE_HOLD_S: it only brings users home.
- **Falls that last** (`falls_after`, for refusals): a target at least a band below the
  published value for that many ticks in a row is followed, whatever the wander or the
  last move's direction: a refusal that jumped on a backlog must come down once it drained.
- **Release grace** (`release_ticks`, for shares that carry users to where there is room: an
  overflow share, a fallback share). A fall waits until the target has stayed below the
  published value for that many ticks in a row, unless urgent: one tick's dip in the need
  (a noisy scrape, a queue that drained for an instant) must not send the users back to
  the GPUs they just left, to queue there and take the share again on the next tick.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from heliostat.balance.state import Held

RESOLUTION = 1000
SHARE_BAND = 0.02
REFUSAL_BAND = 0.02
REVERSAL_HOLD_S = 30.0
REFUSAL_REVERSAL_S = 10.0
RELEASE_HOLD_S = 10.0
NOISE_GAIN = 0.2  # per tick: the spread follows the target's last few steps
NOISE_K = 3.0  # a refusal outlasting its need costs goodput: shorter
LARGE_MOVE = 0.10
# A share that carries users away falls only once its need stayed lower this many ticks in a
# row: longer than one noisy scrape, the tick after it and the push.
RELEASE_TICKS = 3

NOTHING = Held(published=0.0, target=0.0)


def hold_s() -> float:
    """How long after a move a reversal of it can still be held (any fraction's)."""
    return max(REVERSAL_HOLD_S, REFUSAL_REVERSAL_S)


def quantise(value: float) -> float:
    """The value in thousandths, within [0, 1] (nan, from estimates past the float range, is
    0: nothing is decided on it)."""
    if math.isnan(value):
        return 0.0
    return min(RESOLUTION, max(0, round(value * RESOLUTION))) / RESOLUTION


def hold(
    before: Held | None,
    target: float,
    now: float,
    *,
    band: float,
    urgent: bool = False,
    reversal_s: float = REVERSAL_HOLD_S,
    release_ticks: int = 1,
    falls_after: int | None = None,
    large_move: float = LARGE_MOVE,
    reason: Callable[[float], str] = lambda _: "",
) -> Held:
    """The published fraction after this tick (see the module docstring).

    `reason(published)` builds the reason of a newly published value; a held value keeps
    the reason it was published with.
    """
    previous = before or NOTHING
    goal = quantise(target)
    # How far the target wanders from tick to tick on its own (an EWMA of its steps): noise
    # that size is not a decision, so the band and what counts as large widen with it. A
    # move is judged by the wander before it, then counts towards the next.
    width = max(band, NOISE_K * previous.spread)
    spread = previous.spread + NOISE_GAIN * (abs(goal - previous.target) - previous.spread)
    if before is None:
        spread = 0.0
    large = max(large_move, 2 * width)
    published = previous.published
    below = min(max(release_ticks, falls_after or 0), previous.below + 1) if goal < published else 0
    if falls_after is not None and below >= falls_after and published - goal >= band - 1e-9:
        # A target that stayed a band below for `falls_after` ticks is followed whatever
        # its wander says: a refusal held above its need refuses users the GPUs could serve.
        urgent = True
    if goal == published:
        return dataclasses.replace(previous, target=goal, spread=spread, below=below)
    if goal < published and below < release_ticks and not urgent:
        return dataclasses.replace(previous, target=goal, spread=spread, below=below)
    move = goal - published
    direction = 1 if move > 0 else -1
    small = abs(move) < width - 1e-9 and goal > 0.0
    if abs(move) < band - 1e-9 and goal > 0.0:
        # Within the dead band even when urgent: a move that small relieves nothing, and
        # each one is a turn Envoy makes (urgent falls of a few thousandths, one per noisy
        # tick, were most of the planet surge's reversals).
        return dataclasses.replace(previous, target=goal, spread=spread, below=below)
    # Back to zero (users home, nothing refused) waits less: it is always safe.
    hold_for = min(reversal_s, RELEASE_HOLD_S) if goal == 0.0 else reversal_s
    reversal = (
        previous.direction == -direction
        and now - previous.moved_at < hold_for
        and abs(move) < large - 1e-9
    )
    if not urgent and (small or reversal):
        return dataclasses.replace(previous, target=goal, spread=spread, below=below)
    return Held(
        published=goal,
        target=goal,
        direction=direction,
        moved_at=now,
        reason=reason(goal),
        spread=spread,
    )
