"""How much of a region's users overflow should send to a rescuer: only what pays.

A region above its planning utilisation (`queueing.utilisation`) is at risk for its SLO,
but sending everything above that level away is not what serves its users best: each user
sent pays the round trip to the rescuer, and adds to the rescuer's own users' waits. For a
small pool the planning level is low (0.38 for one 4-slot replica at a 500 ms TTFT), so
"everything above it" meant half of a region at 65% crossing 160 ms, its rescuer pushed
past its own planning level and lending onward in turn (the bench's chat: 9% of all
requests crossed regions, p99 517 ms against least-request's 414 ms, and the shares turned
four times a minute).

So the share is the one that minimises the expected time to first token over the origin's
users and the rescuer's own, with waits from `queueing.mean_wait`:

    f(s) = D_o (1 - s) (W_o(D_o (1 - s)) + P_o) + D_o s (W_q(D_q + s D_o) + rtt + P_q)
           + D_q W_q(D_q + s D_o)

(D demand in requests/s, W the expected wait at that arrival rate, P the mean prefill a
request takes there, `Pool.prefill`). The prefill term is what a region's prefix cache is
worth: a small pool that cannot hold its users' shared prompts prefills most of each one
cold, and a rescuer whose cache holds them prefills the same prompts in a fraction of the
time; a round trip shorter than that difference pays even with no queue at home. (It pays
for the sent users' prefill as the rescuer measures it for its own, and for the origin's
as it measures it now: an approximation while the share moves which prompts each cache
holds.) Without a measured prefill on every side P is 0 everywhere and the choice is the
waits' alone, as before.

The share is taken only if it saves enough per origin user: START of the TTFT objective to
start lending, any saving once lending (hysteresis: a saving that hovers around the
threshold does not switch a share on and off). One rescuer at a time, the one saving the
most; the allocation then places the excess by its costs as before. Pure arithmetic,
memoised on rounded inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from heliostat.balance import queueing

# The saving (share of the TTFT objective, per origin user) a share must bring to start:
# below it, the estimates the saving is computed from (demand over seconds, capacity from
# completions) disagree by more than that by chance.
START = 0.02
STEP = 0.01  # the shares tried, in steps of this (finer than any estimate behind them)


@dataclass(frozen=True, slots=True)
class Pool:
    """One region's slots: how many, what they complete per second when full, and the
    demand of its own users (requests/s)."""

    slots: int
    capacity: float
    demand: float
    # The mean prefill the origin's users take when served there (seconds; measured by its
    # engines, `overflow.Supply.prefill`): 0 when unknown on either side.
    prefill: float = 0.0


@dataclass(frozen=True, slots=True)
class Spill:
    """The paying share of the origin's users to send away, and its rescuer."""

    share: float
    rescuer: str | None
    saved_s: float  # expected TTFT saved per origin user, seconds
    # Prefills were weighed (measured on every side): the share is what the origin sends,
    # not only the most it sends (`overflow._origins`). With waits alone, a region below
    # its planning level keeps its users: the share only bounds what the allocation places
    # above that level.
    prefill: bool = False


NONE = Spill(0.0, None, 0.0)


def paying_share(
    origin: Pool,
    rescuers: Mapping[str, tuple[Pool, float]],
    ttft_s: float,
    lent: Mapping[str, float],
    spread: float = 0.0,
) -> Spill:
    """The share of `origin`'s users that minimises the expected TTFT (see the module
    docstring), with rescuers given as name -> (pool, RTT in seconds) and `lent` the shares
    published now; `spread` is the standard deviation of the origin's demand reading by
    chance (requests/s). NONE when nothing pays.

    Hysteresis both ways, by more than chance: a share starts only when it saves START x
    ttft_s per origin user even at a demand `spread` lower than read (the share is the best
    one there); one published is kept as it is while, at a demand `spread` higher, it costs
    them less than that, and while no other share saves that much more at the demand read;
    past that, it follows the best share down while one still saves that much at a demand
    `spread` higher, and ends only when none does.
    At 65% of a small pool the saving hovers around zero as the reading wanders (a 3.5/s
    demand counted over seconds: +-25%), and following it switched the share on and off."""
    if origin.demand <= 0.0 or origin.capacity <= 0.0 or origin.slots <= 0:
        return NONE
    margin = START * ttft_s
    low = dataclasses.replace(origin, demand=max(0.0, origin.demand - spread))
    high = dataclasses.replace(origin, demand=origin.demand + spread)
    for name in sorted(rescuers):
        now = lent.get(name, 0.0)
        pool, rtt = rescuers[name]
        if now <= 0.0 or pool.slots <= 0 or pool.capacity <= 0.0:
            continue
        if _saved_at(high, pool, rtt, now) > -margin:
            share, saved = _best(origin, pool, rtt)
            if saved - _saved_at(origin, pool, rtt, now) <= margin:
                return Spill(now, name, _saved_at(origin, pool, rtt, now))
            return Spill(share, name, saved)
        # It costs as it is: it follows the best share (at the reading, else the one that
        # pays a deviation higher, no larger than it is) while one still pays at a demand
        # `spread` higher, the mirror of the start, rather than ending at once and starting
        # again at the next high reading: two turns of the share each time (planet chat
        # fleet at 65%, three minutes, ten seeds: at most 3-6 turns per run, now 1-5).
        kept, kept_saved = _best(high, pool, rtt)
        if kept > 0.0 and kept_saved >= margin:
            share, saved = _best(origin, pool, rtt)
            if share > 0.0:
                return Spill(share, name, saved)
            return Spill(min(kept, now), name, _saved_at(origin, pool, rtt, min(kept, now)))
    best = NONE
    for name in sorted(rescuers):
        pool, rtt = rescuers[name]
        if pool.slots <= 0 or pool.capacity <= 0.0 or low.demand <= 0.0:
            continue
        share, saved = _best(low, pool, rtt)
        if saved > best.saved_s:
            best = Spill(share, name, saved)
    if best.share > 0.0 and best.saved_s >= margin:
        return best
    return NONE


def _best(origin: Pool, rescuer: Pool, rtt: float) -> tuple[float, float]:
    """The best share and its expected TTFT saved per origin user."""
    costs = _costs(_key(origin), _key(rescuer), round(rtt, 4))
    least, index = min((c, i) for i, c in enumerate(costs))
    return index * STEP, _saved(costs[0], least, origin.demand)


def _saved_at(origin: Pool, rescuer: Pool, rtt: float, share: float) -> float:
    """The expected TTFT per origin user that `share` saves."""
    if origin.demand <= 0.0:
        return -math.inf
    costs = _costs(_key(origin), _key(rescuer), round(rtt, 4))
    return _saved(costs[0], costs[min(len(costs) - 1, round(share / STEP))], origin.demand)


def _saved(stay: float, cost: float, demand: float) -> float:
    """Expected TTFT saved per origin user, from the costs of staying and of a share."""
    if math.isinf(cost):
        return -math.inf
    if math.isinf(stay):
        return math.inf
    return (stay - cost) / demand


def _key(pool: Pool) -> tuple[int, float, float, float]:
    return (
        pool.slots,
        float(f"{pool.capacity:.3g}"),
        float(f"{max(0.0, pool.demand):.3g}"),
        round(max(0.0, pool.prefill), 3),  # to the millisecond
    )


@functools.lru_cache(maxsize=4096)
def _costs(
    origin: tuple[int, float, float, float],
    rescuer: tuple[int, float, float, float],
    rtt: float,
) -> tuple[float, ...]:
    """f(s) for s = 0, STEP, ..., 1 (see the module docstring), in request-seconds."""
    slots_o, capacity_o, demand_o, prefill_o = origin
    slots_q, capacity_q, demand_q, prefill_q = rescuer

    def cost(share: float) -> float:
        home = demand_o * (1.0 - share)
        sent = demand_o * share
        wait_o = queueing.mean_wait(slots_o, capacity_o, home / capacity_o)
        wait_q = queueing.mean_wait(slots_q, capacity_q, (demand_q + sent) / capacity_q)
        if math.isinf(wait_q) or (home > 0.0 and math.isinf(wait_o)):
            return math.inf
        return home * (wait_o + prefill_o) + sent * (wait_q + rtt + prefill_q) + demand_q * wait_q

    return tuple(cost(i * STEP) for i in range(round(1.0 / STEP) + 1))
