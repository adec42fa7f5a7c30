"""Endpoint weights from saturation: smoothing, target curve, dead band, rate limit.

Envoy's least-request balancer divides a host's weight by its in-flight requests + 1, so it
already reacts to every request in flight; heliostat's weight only has to carry what Envoy
cannot see: how much room a replica has, over seconds. The weight is proportional to the
headroom left by the *smoothed* saturation level:

    level  <- level + alpha * (s - level),   alpha = 1 - exp(-dt / TAU_S)
    target = 100 below 0.5, 60 below 0.7, 30 below 0.85, 10 below 1, the floor 1 at >= 1
             (STEPS, with STEP_HYSTERESIS around each edge)

Smoothing the saturation rather than reacting to each scrape matters: a replica with 4 slots
at 30% load reads running/slots = 0, 0.25, 0.5, 0.75, sometimes 1.0 from one scrape to the
next, and a law that trusted single samples would send it to the floor on a burst and ramp
it back over seconds. The EWMA uses elapsed time, so 0.5 s and 2 s ticks converge alike.

Three more mechanisms keep the published weight calm, so the fleet is not pushed new EDS on
every scrape:

- a dead band: the published weight moves only when the target is more than 10% and more
  than 1 away from it, and further than the endpoint's own noise explains (NOISE_K standard
  deviations of the level, estimated from how far scrapes stray from it; zero for a steady
  signal); otherwise weight and reason are kept verbatim. Under stationary but noisy load
  (a few slots, Poisson arrivals) this is what keeps EDS quiet;
- a rate limit: at most x2 up and /2 down per tick, so a replica that comes back (or leaves
  saturation) is ramped in and not stampeded;
- hysteresis on the `saturated` state: entered when the level reaches ENTER_SATURATED (1.0),
  left only when it falls to LEAVE_SATURATED (0.85).

Unmistakable overload does not wait for the average: a single sample at HARD_SATURATION (2x
the thresholds, e.g. a queue twice the queue threshold) saturates the endpoint at once, floor
weight, and lifts the level to the threshold so that it is left only once the average agrees.
"""

from __future__ import annotations

import math

W_MAX = 100
FLOOR = 1  # Envoy rejects endpoint weights below 1
NEUTRAL = W_MAX // 2  # stale or unknown: neither starve a replica nor trust it fully
TAU_S = 5.0
DEAD_BAND = 0.10
ENTER_SATURATED = 1.0
LEAVE_SATURATED = 0.85
HARD_SATURATION = 2.0
NOISE_K = 3.0
NOISE_CAP = 20.0
# A move the dead band lets through is published only once it has lasted CONFIRM_TICKS ticks
# in the same direction, unless it is larger than twice the band: noise crosses the band for
# a tick now and then, a real change stays across it.
CONFIRM_TICKS = 2


# Headroom steps: below half its thresholds a replica is simply "free" (Envoy's least-request
# balancing evens out the rest); closer to the thresholds the weight falls in coarse steps.
# Steps, with STEP_HYSTERESIS around every edge, are what keep a moderately and noisily loaded
# fleet from being pushed new weights: the level wanders inside a step, rarely across it.
STEPS: tuple[tuple[float, int], ...] = ((0.5, W_MAX), (0.7, 60), (0.85, 30), (1.0, 10))
STEP_HYSTERESIS = 0.05


def target(saturation: float) -> float:
    """The step weight of a saturation level: monotone non-increasing, in [FLOOR, W_MAX]."""
    for edge, weight in STEPS:
        if saturation < edge:
            return float(weight)
    return float(FLOOR)


def held_target(saturation: float, published: int) -> float:
    """`target`, except that a published step weight is kept while the level stays within
    STEP_HYSTERESIS of that step. Monotone non-increasing in saturation for a given
    `published`."""
    lower = target(saturation + STEP_HYSTERESIS)
    upper = target(saturation - STEP_HYSTERESIS)
    if lower <= published <= upper and any(published == w for _, w in STEPS):
        return float(published)
    return target(saturation)


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


def noise_band(spread: float, gain: float) -> float:
    """How far (in weight) the target wanders on noise alone: NOISE_K standard deviations.

    Capped at NOISE_CAP: a real change also inflates the spread (a step looks like a large
    deviation), and a move of more than a fifth of the range is never waved off as noise.

    `spread` is the mean absolute deviation of the raw saturation from its level; an EWMA
    with gain a leaves sqrt(a / (2 - a)) of a white noise's deviation in the level, and a
    mean absolute deviation is 0.8 of a standard deviation.
    """
    if spread <= 0.0 or gain <= 0.0:
        return 0.0
    band = NOISE_K * (W_MAX - FLOOR) * 1.25 * spread * math.sqrt(gain / (2.0 - gain))
    return min(band, NOISE_CAP)


def band(published: int, noise: float = 0.0) -> float:
    """The dead band around a published weight: 10% of it, at least 1, at least `noise`."""
    return max(DEAD_BAND * published, 1.0, noise)


def confirm(
    published: int, candidate: int, smoothed: float, noise: float, pending: int
) -> tuple[int, int]:
    """Hold a new weight until it has lasted CONFIRM_TICKS ticks, unless the move is large
    (beyond twice the band) or a rate-limited ramp, both of which no noise produces.

    `pending` counts the ticks a change has been asked for: positive for raises, negative
    for cuts. Returns the weight to publish now and the new count. For the same `pending`,
    more load never yields a higher weight: a cut is confirmed at least as readily as a hold.
    """
    if candidate == published:
        return published, 0
    direction = 1 if candidate > published else -1
    count = pending + direction if pending * direction > 0 else direction
    rate_limited = abs(math.floor(smoothed + 0.5) - candidate) >= 1  # a ramp is under way
    large = abs(smoothed - published) > 2 * band(published, noise)
    if abs(count) >= CONFIRM_TICKS or large or rate_limited:
        return candidate, 0
    return published, count


def publish(published: int, smoothed: float, noise: float = 0.0) -> int:
    """The weight to give Envoy: held inside the dead band, else rounded and rate-limited.

    The dead band is 10% of the published weight, at least 1, and at least `noise` (see
    `noise_band`): a change the signal's own noise explains is not a change. Monotone in
    `smoothed` for a given `published` and `noise`, so more load never raises a weight.
    """
    width = band(published, noise)
    if -width <= smoothed - published <= width:
        return published
    candidate = math.floor(smoothed + 0.5)
    lowest = (published + 1) // 2  # at most halved per tick
    highest = 2 * published  # at most doubled per tick
    if candidate < lowest:
        candidate = lowest
    elif candidate > highest:
        candidate = highest
    return min(W_MAX, max(FLOOR, candidate))


def saturated(level: float, was_saturated: bool) -> bool:
    """Hysteresis on the smoothed level: enter at ENTER_SATURATED, leave at LEAVE_SATURATED."""
    if was_saturated:
        return level > LEAVE_SATURATED
    return level >= ENTER_SATURATED
