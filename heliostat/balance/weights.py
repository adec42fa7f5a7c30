"""Endpoint weights from saturation: smoothing, target curve, dead band, rate limit.

Envoy's least-request balancer divides a host's weight by its in-flight requests + 1, so it
already reacts to every request in flight; heliostat's weight only has to carry what Envoy
cannot see: how much room a replica has, over seconds. The weight is proportional to the
headroom left by the *smoothed* saturation level:

    level  <- level + alpha * (s - level),   alpha = 1 - exp(-dt / TAU_S)
    target = FLOOR + (W_MAX - FLOOR) * (1 - min(level, 1))   (100 at 0, 1 at >= 1)

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


def target(saturation: float) -> float:
    """Monotone non-increasing in saturation, within [FLOOR, W_MAX]."""
    if saturation >= 1.0:
        return float(FLOOR)
    if saturation <= 0.0:
        return float(W_MAX)
    return FLOOR + (W_MAX - FLOOR) * (1.0 - saturation)


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


def publish(published: int, smoothed: float, noise: float = 0.0) -> int:
    """The weight to give Envoy: held inside the dead band, else rounded and rate-limited.

    The dead band is 10% of the published weight, at least 1, and at least `noise` (see
    `noise_band`): a change the signal's own noise explains is not a change. Monotone in
    `smoothed` for a given `published` and `noise`, so more load never raises a weight.
    """
    band = DEAD_BAND * published
    if band < 1.0:
        band = 1.0
    if band < noise:
        band = noise
    if -band <= smoothed - published <= band:
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
