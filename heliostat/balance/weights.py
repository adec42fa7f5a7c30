"""Endpoint weights: equal while a replica has room, lower only close to saturation, and calm.

Inside a locality Envoy's least-request balancer does the per-request work. With *equal*
host weights it uses power-of-two-choices on every pick: two random hosts, the one with fewer
requests in flight wins, counted live. With *unequal* weights it switches to an earliest-
deadline schedule over weight / (active + 1), and a host's entry is only recomputed when that
host is picked: the in-flight counts it schedules by are stale. So heliostat keeps every
replica of a region at the same weight (W_MAX) while it has room, and moves a weight only for
what Envoy cannot see from one gateway: a replica's capacity, and a replica close to its
thresholds and hotter than its peers (load from other gateways, long prompts filling its KV
cache):

    level  <- level + alpha * (s - level),   alpha = 1 - exp(-dt / TAU_S)
    band   =  free -> near when level >= ENTER_NEAR and NEAR_MARGIN above its peers' mean
              (back when level <= LEAVE_NEAR or within NEAR_MARGIN / 2 of it)
    state  =  healthy -> saturated when level >= ENTER_SATURATED (or one sample at
              HARD_SATURATION), saturated -> healthy when level <= LEAVE_SATURATED
    target =  W_MAX * capacity (free), that x NEAR_FACTOR (near), x NEAR_FACTOR again when
              also saturated (never the floor: see `target`)

Replicas are not all alike: a GPU three times faster completes three times the requests at
the same occupancy. Equal weights would still send it only what choice-of-two gives it (at
equal in-flight counts its requests simply finish sooner, while the slow one's queue waits
three times as long), and a hashing ring would give it the same share of keys as the slow
one. So "full" is relative to observed capacity: each replica's capacity is the requests it
completes per busy second (decaying sums over CAPACITY_TAU_S of completions and of its busy
share of slots x seconds, see `endpoints`), and its weight is W_MAX x its capacity over the
best of its region, in sqrt(2) tiers (`capacity_tier`) that move only TIER_HYSTERESIS past
the midpoint, and only as far as the ratio's bound TIER_CONFIDENCE standard errors towards
the current tier: alike replicas stay equal, and a young estimate moves a step at a time.
Where that bound cannot settle a ratio (estimates never firmer than ~15%), a replica whose
load runs hotter or cooler than its peers' takes the step its estimate points to
(`capacity_tier`'s `lean`).
Measured on replicas of speeds 1 and 3: least-request with equal weights met the SLO for
88% of chat requests, with weights set by hand to the speeds 98%.

With consistent hashing (affinity) a host's weight is its share of the ring or table, and
every change of weight moves keys, and so cached prefixes, between replicas. There the `near`
band keeps the full weight (bounded load already spills a hot replica's excess); only a
replica saturated and hotter than its peers, real trouble, moves keys.

Smoothing the saturation matters: a replica with 4 slots at 65% load reads running/slots =
0.25 .. 1.0 from one scrape to the next. The EWMA uses elapsed time, so 0.5 s and 2 s ticks
converge alike. Unmistakable overload (a single sample at HARD_SATURATION, twice the
thresholds) does not wait for the average: the endpoint is saturated at once. The floor
weight is for health (unhealthy, draining), not load.

Calm by construction (`move`): under constant load a weight must not turn round more than
twice a minute, whatever the noise: at most MAX_REVERSALS turns (a raise after a cut, or a cut
after a raise) in any REVERSAL_WINDOW_S, with no exception, not even for a saturated replica
(a weight that already turned twice this minute is flapping, which is the thing to stop; its
state still says `saturated`, Envoy's least-request still counts its requests in flight, and
the regional law still sees its pressure). Within that budget a turn on *soft* evidence (the
`near` band, a capacity tier, an average drifting back across a threshold) also waits until
the last turn is MIN_REVERSAL_GAP_S old, so it is judged on fresh evidence. A turn on *hard*
evidence does not wait (`Evidence`): a cut of a saturated replica (overload is met at once),
and the turn back up after such a cut once the replica has clearly recovered (`recovered`:
out of both bands, its level at or below LEAVE_NEAR). Holding a genuine recovery for the
gap kept a replica whose burst had drained at a quarter of its weight for 15 s (the
convergence benchmark's "back": p50 15 s). The damping is on the signal rather than the
output: a single sample at HARD_SATURATION lifts the level to ENTER_SATURATED at once, and a
single clear sample (at or below CLEAR) takes back what that lift added (`settle`), so a
burst that drained costs one cut and one raise, while a replica that stays busy keeps its
averaged level, and its hysteresis. Raises are rate-limited (at most x2 per tick, so a
replica coming back is ramped in, not stampeded) and so are cuts (at most /2 per tick),
except a saturated replica's, which go straight to their goal.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

W_MAX = 100
FLOOR = 1  # Envoy rejects endpoint weights below 1
NEUTRAL = W_MAX // 2  # stale or unknown: neither starve a replica nor trust it fully
TAU_S = 5.0
ENTER_SATURATED = 1.0
LEAVE_SATURATED = 0.85
HARD_SATURATION = 2.0
# Clearly free: at most half way to its thresholds. A sample this low undoes a hard lift
# (`settle`).
CLEAR = 0.5
# The `near` band: close enough to the thresholds that Envoy's in-flight counts at one gateway
# no longer tell the replica's room. Hysteresis wider than a 4-slot replica's smoothed noise.
ENTER_NEAR = 0.9
LEAVE_NEAR = 0.7
NEAR_MARGIN = 0.2  # above its peers' mean level
NEAR_FACTOR = 0.5
# Observed capacity (see `capacity_tier`): a replica's weight is W_MAX x its capacity relative
# to the best replica of its region, in steps of sqrt(2) down to 1/8, with hysteresis, from
# what it completed per busy second over (decaying) CAPACITY_TAU_S.
CAPACITY_TIERS = tuple(2.0 ** (-k / 2) for k in range(7))
TIER_HYSTERESIS = 0.35
TIER_CONFIDENCE = 2.5  # standard errors
CAPACITY_TAU_S = 30.0
# The reversal budget (see `move`).
REVERSAL_WINDOW_S = 60.0
MAX_REVERSALS = 2
MIN_REVERSAL_GAP_S = 15.0
# Ticks a change must last before other parts of the law act on it (fallback shares use it).
CONFIRM_TICKS = 2

FREE = "free"
NEAR = "near"


def alpha(dt: float, tau: float = TAU_S) -> float:
    """The gain of an EWMA with time constant `tau` for a tick dt seconds after the last."""
    return 1.0 - math.exp(-max(dt, 0.0) / tau)


def smooth(level: float | None, sample: float, gain: float) -> float:
    """One EWMA step of the saturation level (gain `alpha(dt)`); the first sample starts it.

    A sample at HARD_SATURATION or above lifts the level to at least ENTER_SATURATED.
    """
    value = sample if level is None else level + gain * (sample - level)
    if sample >= HARD_SATURATION and value < ENTER_SATURATED:
        return ENTER_SATURATED
    return value


class Level(NamedTuple):
    """The smoothed saturation level, and the level it would have without hard lifts
    (`unlifted`, None while no lift holds it up)."""

    value: float
    unlifted: float | None = None


def settle(level: Level | None, sample: float, gain: float) -> Level:
    """`smooth`, with the lift's mirror: a single hard sample lifts the level to
    ENTER_SATURATED at once (one scrape at twice the thresholds is unmistakable overload),
    and a single clear sample (at or below CLEAR: at most half way to the thresholds) is as
    unmistakable a recovery, so it takes back what the lift added: the level returns to the
    average of the samples themselves. A replica that stays busy, or whose own samples kept
    its average up, keeps it (and the hysteresis around it): only the lift is undone."""
    if level is None:
        return Level(sample)
    value = smooth(level.value, sample, gain)
    before = level.value if level.unlifted is None else level.unlifted
    base = before + gain * (sample - before)
    if value - base < 1e-3:  # no lift holds it up (any more)
        return Level(value)
    if sample <= CLEAR:
        return Level(base)
    return Level(value, base)


def saturated(level: float, was_saturated: bool) -> bool:
    """Hysteresis on the smoothed level: enter at ENTER_SATURATED, leave at LEAVE_SATURATED."""
    if was_saturated:
        return level > LEAVE_SATURATED
    return level >= ENTER_SATURATED


def near(level: float, peers: float | None, was_near: bool) -> bool:
    """Close to saturation *and* hotter than its peers (`peers`: the mean level of the other
    live replicas of its region, None without any), with hysteresis on both.

    Replicas that are alike run at alike levels under least-request, however busy; lowering
    one of them would only trade Envoy's live choice for a stale schedule. A replica that runs
    persistently hotter than its peers carries load Envoy cannot see from one gateway (other
    gateways' requests, long prompts filling its KV cache, a slower GPU): that one gets less.
    """
    if peers is None or peers >= ENTER_SATURATED:
        # Its peers are full too: a lower weight would only push its load onto replicas
        # with no room either (and under overload the levels of alike replicas differ by
        # noise alone). The regional law moves or refuses what a full region cannot carry.
        return False
    if was_near:
        return level > LEAVE_NEAR and level - peers > NEAR_MARGIN / 2
    return level >= ENTER_NEAR and level - peers >= NEAR_MARGIN


# Per tier, the ratios `capacity_tier` holds it at whatever the uncertainty: the bound it
# judges lies between the ratio and the held tier's own capacity, so a ratio within
# TIER_HYSTERESIS + 1/2 tier of it holds (a relative margin of 1e-9 covers log2's rounding).
# The top tier holds every ratio above its lower end (a bound above 1.0 counts as 1.0), the
# last every ratio below its upper end (there is no lower tier to move to).
_TIER_SLACK = 0.5 + TIER_HYSTERESIS
_LAST_TIER = len(CAPACITY_TIERS) - 1
_HOLDS = tuple(
    (
        -math.inf if k == _LAST_TIER else 2.0 ** (-(k + _TIER_SLACK) / 2) * (1.0 + 1e-9),
        math.inf if k <= _TIER_SLACK else 2.0 ** (-(k - _TIER_SLACK) / 2) / (1.0 + 1e-9),
    )
    for k in range(len(CAPACITY_TIERS))
)


def tier_holds(relative: float, current: int) -> bool:
    """Whether `capacity_tier(relative, current, u)` is `current` for every uncertainty u
    >= 0, known without working out u: most replicas of a region stay in their tier tick
    after tick, and their tier is tested on every tick (a property test holds this to
    `capacity_tier`). False says nothing: ask `capacity_tier`."""
    low, high = _HOLDS[current]
    return low <= relative <= high


_HOLDS_LOW = np.array([low for low, _ in _HOLDS], dtype=np.float64)
_HOLDS_HIGH = np.array([high for _, high in _HOLDS], dtype=np.float64)


def tiers_hold(
    relative: npt.NDArray[np.float64], current: npt.NDArray[np.intp]
) -> npt.NDArray[np.bool_]:
    """`tier_holds` of each row (`relative[i]`, `current[i]`) over whole columns: the same
    comparisons with the same floats (a NaN holds no tier, as there)."""
    with np.errstate(invalid="ignore"):
        return (_HOLDS_LOW[current] <= relative) & (relative <= _HOLDS_HIGH[current])


def capacity_tier(relative: float, current: int, uncertainty: float = 0.0, lean: int = 0) -> int:
    """The capacity tier (an index into CAPACITY_TIERS) for a replica whose observed capacity
    is `relative` x the best of its region's, given `uncertainty`, the relative standard
    error of that ratio (a few hundred completions cannot tell 0.8 from 1.0).

    It moves only as far as the evidence allows: to the tier of the ratio's confidence bound
    nearest the current tier (relative x (1 +- TIER_CONFIDENCE x uncertainty)), and only
    once that bound lies TIER_HYSTERESIS (in tiers) beyond the midpoint to a neighbouring
    tier. A young estimate thus takes its first step early and the next ones as it firms up,
    always in the same direction. Judging the error against the held tier instead, and then
    jumping to the estimate's own tier (as before), kept a replica three times slower at the
    full weight for 12-19 s and then overshot on a young estimate that was still low (a turn
    back the reversal budget had to absorb).

    The bound alone never settles some ratios: two 30-second estimates are never firmer than
    about 15% (a slow replica completes a few requests a second, and the busy share has its
    own 6%), and 1/3 x (1 + 2.5 x 0.15) reads as 0.46: a replica three times slower than its
    region's best stayed at tier 2 (weight 50), took half again what it can serve, queued,
    and was cut and raised by the `near` band in turn. So the load may settle it: `lean` +1
    says the replica runs hotter than its peers (at the `near` band's entry), -1 cooler than
    busy peers (`endpoints._lean`), i.e. its weight gives it more, or less, than it serves.
    When the estimate lies beyond the hysteresis that way and its one-error bound past the
    midpoint (the neighbouring tier is the likelier one), it moves one step. Alike replicas'
    estimates stay within the hysteresis, so the load's noise moves none of them. Planet,
    bench mixed_gpus fleet (tests/planet/test_mixed_speeds.py), seeds 0-29: SLO met 93.3%
    -> 94.0%; the same fleet all of speed 1: 95.0% both, 29 seeds identical."""
    last = len(CAPACITY_TIERS) - 1
    if relative <= 0.0:
        return last
    held = CAPACITY_TIERS[current]
    spread = TIER_CONFIDENCE * uncertainty
    if relative < held:  # the most capacity the evidence still allows, but not above held
        bound = min(held, relative * (1.0 + spread))
    else:  # the least, but not below held
        bound = max(held, relative * (1.0 - spread))
    position = -2.0 * math.log2(min(bound, 1.0))  # 0 at 1.0, 1 at 0.71, 2 at 0.5 ...
    if abs(position - current) > 0.5 + TIER_HYSTERESIS:
        return min(last, max(0, round(position)))
    if lean:
        # The load leans the same way (`lean`): one step towards the estimate once the
        # estimate lies beyond the hysteresis and its one-standard-error bound beyond the
        # midpoint, i.e. the neighbouring tier is the likelier one.
        estimate = -2.0 * math.log2(min(relative, 1.0))
        likely = relative * (1.0 + lean * uncertainty)
        if (
            lean * (estimate - current) > 0.5 + TIER_HYSTERESIS
            and likely > 0.0
            and lean * (-2.0 * math.log2(min(likely, 1.0)) - current) > 0.5
        ):
            return min(last, max(0, current + lean))
    return current


def target(
    *,
    is_saturated: bool,
    is_near: bool,
    hashing: bool,
    capacity: float = 1.0,
    relative: float | None = None,
) -> int:
    """The weight a healthy endpoint should have. `capacity` is its share of the best
    replica's capacity in its region (1.0 when they are alike or nothing says otherwise);
    `is_near` says it is close to saturation *and* hotter than its peers (`near`), and
    `relative` is its peers' mean level over its own (None: unknown).

    Saturation alone moves no weight: when every replica of a region is saturated they are
    alike, and weights cannot make room (the regional law moves or sheds demand). A replica
    hotter than its peers gets the share of its weight that would bring it to their level,
    `relative` (load follows weight), in the capacity tiers' sqrt(2) steps, at least one step
    down and at most to NEAR_FACTOR of it (NEAR_FACTOR^2 when also saturated; with hashing,
    where a weight is a ring share, only a saturated one is cut, to at most NEAR_FACTOR).
    Not to the floor, and not by a fixed quarter: it still has capacity, and taking more
    than its excess pushes its load onto peers that were nearly as busy. Measured on replicas
    of speeds 1 and 3: a fast replica at its slots' limit beside slow ones at 0.6 was
    quartered to 25, below the slow ones' own capacity weights (35-71), and their queues
    took its load (flooring the slow ones did the same the other way round).
    """
    full = W_MAX * capacity
    deepest = 1.0
    if is_near and not hashing:
        deepest *= NEAR_FACTOR
    if is_near and is_saturated:
        deepest *= NEAR_FACTOR
    if deepest < 1.0:
        full *= max(deepest, _one_step_down(relative))
    return max(FLOOR, min(W_MAX, round(full)))


def _one_step_down(relative: float | None) -> float:
    """`relative` rounded to the nearest sqrt(2) step, and at least one step below 1 (a cut
    that moves nothing is no cut); 0.0 when unknown, so the caller's deepest cut applies."""
    if relative is None or relative <= 0.0:
        return 0.0
    position = max(1, round(-2.0 * math.log2(min(relative, 1.0))))
    return float(2.0 ** (-position / 2))


class Moves(NamedTuple):
    """What `move` remembers: the direction of the last change (+1, -1, 0 for none yet), when
    the last MAX_REVERSALS reversals happened (oldest first), and whether the last cut was
    forced (a saturated replica's), so that a clear recovery may turn back without the gap."""

    direction: int = 0
    reversals: tuple[float, ...] = ()
    forced: bool = False


NO_MOVES = Moves()


class Evidence(NamedTuple):
    """How hard the evidence behind this tick's move is: `saturated`, the replica is past its
    thresholds (a cut goes straight to its goal and need not wait for the gap); `clear`, it
    has recovered (`recovered`: after a forced cut, a turn back up need not wait either)."""

    saturated: bool = False
    clear: bool = False


SOFT = Evidence()


def recovered(level: float, is_saturated: bool, is_near: bool) -> bool:
    """Clear evidence of recovery: out of both bands' hysteresis, i.e. not saturated, not
    near, and the level at or below LEAVE_NEAR (where even a replica that was hotter than
    its peers counts as having room again). Measured: a replica cut on a hard sample whose
    level then settled at 0.59 was held at a quarter of its weight for the whole gap."""
    return not is_saturated and not is_near and level <= LEAVE_NEAR


def move(
    published: int, goal: int, now: float, moves: Moves, evidence: Evidence = SOFT
) -> tuple[int, Moves]:
    """The weight to publish this tick on the way from `published` to `goal`, and the new
    bookkeeping. A saturated replica's cut goes straight to the goal instead of halving.

    For the same `published`, `moves` and `evidence`, a lower goal never yields a higher
    weight: whether a move may go ahead depends on its direction only, and the limits are
    monotone.
    """
    if goal == published:
        return published, moves
    direction = 1 if goal > published else -1
    turning = moves.direction != 0 and direction != moves.direction
    hard = evidence.saturated if direction < 0 else evidence.clear and moves.forced
    if turning and not may_turn(now, moves.reversals, hard):
        return published, moves
    if direction > 0:
        weight = min(goal, 2 * published)
    elif evidence.saturated or goal == FLOOR:
        weight = goal
    else:
        weight = max(goal, (published + 1) // 2)
    reversals = moves.reversals
    if turning:
        reversals = (*reversals, now)[-MAX_REVERSALS:]
    forced = evidence.saturated if direction < 0 else False
    return weight, Moves(direction, reversals, forced)


def may_turn(now: float, reversals: tuple[float, ...], hard: bool = False) -> bool:
    """Whether one more reversal keeps the budget: at most MAX_REVERSALS in any
    REVERSAL_WINDOW_S and, unless the turn rests on hard evidence, the last one at least
    MIN_REVERSAL_GAP_S ago."""
    if not hard and reversals and now - reversals[-1] < MIN_REVERSAL_GAP_S:
        return False
    return not (
        len(reversals) >= MAX_REVERSALS and now - reversals[-MAX_REVERSALS] < REVERSAL_WINDOW_S
    )
