"""How loaded one endpoint is, from its scraped signal and the model's thresholds.

Two numbers come out, on the same scale (1.0 = at the model's thresholds):

- `saturation` s = max(waiting / thresholds.queue, kv_usage / thresholds.kv,
  running / (slots * thresholds.running)) over the terms the engine reports. It drives the
  endpoint's weight: it says how close this replica is to queueing or evicting KV blocks.
- `pressure` p = max(s, (waiting + growth) / thresholds.queue,
  (running + waiting + growth) / (slots * thresholds.running)). It estimates demand over
  capacity, so it keeps growing past 1 when work piles up (s does too, through the queue, but
  KV use stops at 100%). `growth` is the rise of the queue per sample, when it rose over the
  last two samples (see `queue_growth`): work arriving faster than it is served counts as
  demand before it shows up as queue. It only
  counts once the endpoint is at its thresholds (s >= 1): below them a replica absorbs more
  work by running it, and a queue that rises towards the threshold is already in the level
  (counting it again made a rescuer look overloaded by the very share it had just been
  given, and the overflow oscillated). p >= s, so a region whose mean p is below 1 really is
  below its endpoints' thresholds.

`slots` is the policy's hint, else the engine's max_num_seqs; with neither, the running terms
are skipped. Negative or non-finite readings are ignored rather than trusted.

Not used yet: a data-parallel vLLM server (several engines behind one address) reports the
mean KV use of its engines; the signals layer is gaining `Signal.kv_usage_max`, the fullest
engine's. A server whose one engine is full while the others idle still takes requests (its
front end balances engines), so the mean stays right for `saturation`; the fullest engine
would be a reason for the `near` band (`weights.near`), not for the floor.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from heliostat.policy import Thresholds
from heliostat.samples import Sample


class Load(NamedTuple):
    saturation: float
    driver: str  # "kv" | "queue" | "running": the term that set the saturation
    pressure: float


_INF = math.inf


def _reading(value: float | None) -> float | None:
    """A usable reading: None when absent or not finite, negatives read as 0."""
    if value is None or 0.0 <= value < _INF:
        return value
    return 0.0 if value < 0.0 else None


def measure(
    signal: Sample, slots_hint: int | None, thresholds: Thresholds, growth: float = 0.0
) -> Load | None:
    """The endpoint's load, or None when the signal carries none of the terms."""
    waiting, running, kv = signal.waiting, signal.running, signal.kv_usage
    # The common case (absent, or a finite non-negative number) costs no call.
    if waiting is not None and not 0.0 <= waiting < _INF:
        waiting = _reading(waiting)
    if running is not None and not 0.0 <= running < _INF:
        running = _reading(running)
    if kv is not None and not 0.0 <= kv < _INF:
        kv = _reading(kv)
    slots = slots_hint or signal.max_num_seqs
    # Ties go to the first term in this fixed order, so the driver is deterministic.
    driver = ""
    saturation = -1.0
    if kv is not None:
        driver, saturation = "kv", kv / thresholds.kv
    if waiting is not None:
        term = waiting / thresholds.queue
        if term > saturation:
            driver, saturation = "queue", term
    seats = slots * thresholds.running if slots is not None and slots > 0 else 0.0
    if running is not None and seats > 0:
        term = running / seats
        if term > saturation:
            driver, saturation = "running", term
    if not driver:
        return None
    return Load(
        saturation, driver, _pressure(saturation, waiting, running, seats, thresholds, growth)
    )


def _pressure(
    saturation: float,
    waiting: float | None,
    running: float | None,
    seats: float,
    thresholds: Thresholds,
    growth: float,
) -> float:
    """Demand against capacity: the saturation, or what waits, runs and grows if more (the
    queue's growth counts only once the endpoint is saturated)."""
    pressure = saturation
    if saturation < 1.0:
        growth = 0.0
    if waiting is not None:
        pressure = max(pressure, (waiting + growth) / thresholds.queue)
    if running is not None and seats > 0:
        pressure = max(pressure, (running + (waiting or 0.0) + growth) / seats)
    return pressure


class Growth(NamedTuple):
    rise: float  # how much the queue rose between the last two samples (0 when it fell)
    trend: float  # the smaller of the last two rises: what counts as demand


NO_GROWTH = Growth(0.0, 0.0)


def queue_growth(waiting: float | None, previous_waiting: float | None, previous: Growth) -> Growth:
    """The queue's growth as of a new sample, given the previous sample and its growth.

    Only a queue that rose over two sample intervals in a row counts (`trend`): a single
    rise is as often a burst, or the echo of a share the law itself just moved, and a
    derivative term that reacts to blips makes the control loop ring. (A tick that sees the
    same sample again keeps the growth that sample showed; the caller checks `scraped_at`.)
    """
    # Both samples as `measure` reads them: callers keep the raw previous reading, and one
    # that was NaN made every later growth NaN (a negative one inflated the rise).
    # (The common case, absent or a finite non-negative number, costs no call: per endpoint.)
    current, before = waiting, previous_waiting
    if current is not None and not 0.0 <= current < _INF:
        current = _reading(current)
    if before is not None and not 0.0 <= before < _INF:
        before = _reading(before)
    if current is None or before is None or current <= before:
        return NO_GROWTH  # shared: most samples show none, and this runs per endpoint
    rise = current - before
    return Growth(rise, min(rise, previous.rise))
