"""How busy a region may be planned while its users still meet the SLO: a queue of slots.

A region's replicas, behind Envoy's least-request balancer, behave like one pool of c slots
(every replica's `max_num_seqs` added up) fed by one stream of arrivals: a request waits only
when every slot is taken. With the region's observed capacity K (completions/s with every
slot busy), each slot serves mu = K / c requests per second, and at arrival rate
lambda = rho K the queue is Erlang's M/M/c:

    P(wait > t) = C(c, c rho) exp(-c mu (1 - rho) t)

with C Erlang's delay formula (the probability that an arrival finds every slot busy).

The planning utilisation is the highest rho at which P(wait > t) stays within WAIT_TAIL for
the wait the SLO leaves a request (t = QUEUE_SHARE x TTFT, see `overflow`), never above the
law's UTILISATION. Why not one utilisation for every region: how close to full a pool may
run depends on its size. 75 replicas of 256 slots run at 95% with waits of microseconds; one
replica of 4 slots whose requests take 0.7 s each makes one arrival in three wait at 60%,
and at 95% its waits run to seconds (the planet's regional surge at 95%: p99 4.6 s for the
one-replica region). Planning to this level moves users to a neighbour's free slots (a
round trip of 160 ms beats a queue of seconds) before their own queue makes them late, and
tells the refusal what a full region can admit within the SLO.

M/M/c takes service times as exponential; an engine's are less spread (continuous
batching, bounded outputs), so it errs on the side of waiting: that is the side to err on
for a latency objective. Pure arithmetic: Erlang B's recursion up to EXACT_SLOTS slots,
the Halfin-Whitt limit beyond (exact to a few percent there, and O(1) for planet-sized
pools); results are memoised by (slots, mu t), the only two things they depend on.
"""

from __future__ import annotations

import functools
import math

# The share of arrivals that may wait longer than the SLO leaves for waiting. Not a target
# for SLO attainment by itself: a wait past t is not yet a missed TTFT (prefill is short),
# and M/M/c overstates waits (see the module docstring).
WAIT_TAIL = 0.05
EXACT_SLOTS = 128
_STEPS = 30  # bisection steps: rho to within 1e-9
_FAR = 30.0  # standard deviations: beyond, nothing waits (and the density underflows)


def delay_probability(slots: int, offered: float) -> float:
    """Erlang C: the probability that an arrival waits, `offered` = lambda / mu in slots."""
    if slots <= 0 or offered >= slots:
        return 1.0
    if offered <= 0.0:
        return 0.0
    if slots <= EXACT_SLOTS:
        blocking = 1.0  # Erlang B, by its recursion in the number of slots
        for k in range(1, slots + 1):
            blocking = offered * blocking / (k + offered * blocking)
        rho = offered / slots
        return blocking / (1.0 - rho * (1.0 - blocking))
    beta = (slots - offered) / math.sqrt(slots)  # Halfin-Whitt: (1 - rho) sqrt(c)
    if beta > _FAR:
        return 0.0  # the density underflows: no arrival waits
    phi = math.exp(-beta * beta / 2.0) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + math.erf(beta / math.sqrt(2.0)))
    return 1.0 / (1.0 + beta * cdf / phi)


def wait_tail(slots: int, rho: float, service_wait: float) -> float:
    """P(wait > t) at utilisation rho, with `service_wait` = mu t (t in one slot's service
    times)."""
    if rho >= 1.0:
        return 1.0
    return delay_probability(slots, slots * rho) * math.exp(-slots * service_wait * (1.0 - rho))


def utilisation(slots: int | None, capacity: float, wait_s: float, ceiling: float) -> float:
    """The highest utilisation (at most `ceiling`) at which the region's slots keep the share
    of arrivals waiting beyond `wait_s` within WAIT_TAIL; `ceiling` when the slots or the
    capacity are unknown."""
    if not slots or slots <= 0 or capacity <= 0.0 or not math.isfinite(capacity):
        return ceiling
    service_wait = capacity / slots * max(0.0, wait_s)
    # Memoised on a rounded mu t: the capacity estimate moves a little every tick.
    return _utilisation(slots, float(f"{service_wait:.3g}"), ceiling)


@functools.lru_cache(maxsize=4096)
def _utilisation(slots: int, service_wait: float, ceiling: float) -> float:
    if wait_tail(slots, ceiling, service_wait) <= WAIT_TAIL:
        return ceiling
    low, high = 0.0, ceiling
    for _ in range(_STEPS):
        middle = (low + high) / 2.0
        if wait_tail(slots, middle, service_wait) <= WAIT_TAIL:
            low = middle
        else:
            high = middle
    return low


# The engine's service times spread less than exponential ones: continuous batching admits a
# request the step a slot frees, outputs are bounded, and a step is faster with fewer
# sequences. Measured on the simulated engine (ShareGPT-like chats, 4 and 8 slots, 65-75%
# load, bench/measure/engine_waits.py), the mean wait is 0.65-0.8 of M/M/c's (at lighter
# loads the rest of the engine step under way dominates); Allen-Cunneen's (1 + cv^2) / 2
# with a squared coefficient of variation of 0.4 gives 0.7. Used for expected waits only
# (`mean_wait`): the planning level keeps M/M/c's tail, erring towards waiting.
SERVICE_CV2 = 0.4


def mean_wait(slots: int | None, capacity: float, rho: float) -> float:
    """The expected wait for a slot (s) at utilisation rho of `slots` slots that complete
    `capacity` requests/s when full: M/M/c's C / (c mu (1 - rho)), times Allen-Cunneen's
    (1 + cv^2) / 2 for the engine's less spread service times. inf at or past saturation;
    0 when the slots or the capacity are unknown (nothing known to wait for)."""
    if not slots or slots <= 0 or capacity <= 0.0 or not math.isfinite(capacity):
        return 0.0
    if rho >= 1.0:
        return math.inf
    if rho <= 0.0:
        return 0.0
    spread = (1.0 + SERVICE_CV2) / 2.0
    return spread * delay_probability(slots, slots * rho) / (capacity * (1.0 - rho))


def admission(slots: int | None, capacity: float, late_s: float, ceiling: float) -> float:
    """The utilisation (at most `ceiling`) at which the region serves the most requests
    within the SLO: rho (1 - P(wait > late_s)), late_s being the wait that makes a request
    late. Past it every extra admitted request makes more than one late: when no region
    has room, what the region's users bring beyond it is better refused at once than
    queued. `ceiling` when the slots or the capacity are unknown.

    Why goodput, not a tail: at this level 6-19% of arrivals wait past the TTFT on pools of
    16 to 4 slots (M/M/c), which keeps the admitted p99 of a full planet near 1 s. Levels
    sized on the tail instead, measured on the planet's flash crowd (chat mix, 6 seeds,
    refusing on sight): M/M/c 5% waiting past the TTFT 94.1% admitted within the SLO, p99
    0.87 s, 27.6 requests/s (12 seeds: 93.3%, 0.92 s, 27.4/s, against 91.8%, 1.03 s,
    27.5/s here); 1% 94.9%, 0.87 s, 25.6/s; 1% past half the TTFT 97.8%, 0.69 s, 24.9/s.
    None reaches a p99 within the TTFT (55-72% of the late requests are on the ramp), and
    on a 4-slot pool the 5% level is 0.51 against 0.69 here: tests/e2e/test_regional_law's
    full planet (unary requests, little spread, 99.5% within the SLO at 70%) would refuse a
    quarter of its interactive requests. A tail level wants the measured spread of service
    times (not in the signals yet), not M/M/c's."""
    if not slots or slots <= 0 or capacity <= 0.0 or not math.isfinite(capacity):
        return ceiling
    service_wait = capacity / slots * max(0.0, late_s)
    return _admission(slots, float(f"{service_wait:.3g}"), ceiling)


@functools.lru_cache(maxsize=4096)
def _admission(slots: int, service_wait: float, ceiling: float) -> float:
    def goodput(rho: float) -> float:
        return rho * (1.0 - wait_tail(slots, rho, service_wait))

    # Golden-section search: the goodput rises, peaks and falls (it is 0 at rho = 1).
    low, high = 0.0, 1.0
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(_STEPS):
        a = high - ratio * (high - low)
        b = low + ratio * (high - low)
        if goodput(a) < goodput(b):
            low = a
        else:
            high = b
    return min(ceiling, (low + high) / 2.0)
