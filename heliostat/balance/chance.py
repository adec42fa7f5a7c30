"""What a pool of slots holds waiting by chance at a steady load: the queue that is noise.

A region of a few slots at a steady 65% queues now and then with nothing wrong: its users
arrive at random. The law reads a queue at every tick; it must tell a queue that is chance
at the region's level from one that grows (a surge, an outage) before it moves a share on
it, or the share turns round on every unlucky tick (issue 10's stability target: at most
two turns a minute). Kept apart from `queueing` (what level a pool may be planned at) since
it answers the other question: given the level, what queue is not news. Pure arithmetic.
"""

from __future__ import annotations

import math

from heliostat.balance.queueing import delay_probability


def queue_quantile(slots: int, rho: float, tail: float) -> float:
    """The queue (requests waiting for a slot) M/M/c exceeds with probability `tail` at
    utilisation rho: an arrival finds every slot busy with probability C, and the queue
    beyond them is then geometric with ratio rho, so P(Lq > n) = C rho^(n + 1); n is
    solved for, continuous. What a pool holds waiting by chance at a steady load: at 65% of
    4 slots a queue beyond 7.3 once in 100 looks, at 65% of 256 slots none. inf at or past
    saturation, where no queue is chance; 0 when fewer than `tail` of arrivals wait."""
    if rho >= 1.0:
        return math.inf
    if slots <= 0 or rho <= 0.0 or tail <= 0.0:
        return 0.0 if tail > 0.0 else math.inf
    delay = delay_probability(slots, slots * rho)
    if delay <= tail:
        return 0.0
    return max(0.0, math.log(tail / delay) / math.log(rho) - 1.0)
