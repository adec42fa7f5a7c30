"""The capacity estimate is not biased by the noise of occupancy snapshots.

A replica's occupancy is read at each scrape, a snapshot of a process that moves within the
interval; the capacity samples (completions / occupancy) were weighted by the interval's
own snapshots squared, and a weight that grows with the snapshot's noise regresses on it
(errors in variables): an 8-slot replica at 40% read about 20% low, and its region sent
users away it could serve. Here a replica of 8 slots, each request holding one for an
exponential second (8 requests/s when full), Poisson arrivals, scraped every 0.5 s.
"""

from __future__ import annotations

import dataclasses
import heapq
import random

import pytest

from heliostat.balance import capacity
from heliostat.signals.record import Signal

SLOTS = 8
SERVICE_S = 1.0
FULL_RPS = SLOTS / SERVICE_S
SCRAPE_S = 0.5


def estimate(load: float, seconds: float, seed: int) -> float | None:
    """The capacity estimate after `seconds` of Poisson arrivals at `load` x FULL_RPS."""
    rng = random.Random(seed)
    t = 0.0
    next_arrival = rng.expovariate(load * FULL_RPS)
    finishes: list[float] = []  # running requests' end times
    waiting = 0
    served = 0
    state = None
    scrape = SCRAPE_S
    while scrape <= seconds:
        event = min(next_arrival, finishes[0] if finishes else float("inf"), scrape)
        t = event
        if t == scrape:
            signal = Signal("m", "a", "vllm", float(waiting), float(len(finishes)), 0.1)
            signal = dataclasses.replace(
                signal, max_num_seqs=SLOTS, scraped_at=t, served_total=float(served)
            )
            state = capacity.observe(signal, SLOTS, state, SCRAPE_S)
            scrape += SCRAPE_S
        elif finishes and t == finishes[0]:
            heapq.heappop(finishes)
            served += 1
            if waiting:
                waiting -= 1
                heapq.heappush(finishes, t + rng.expovariate(1.0 / SERVICE_S))
        else:
            if len(finishes) < SLOTS:
                heapq.heappush(finishes, t + rng.expovariate(1.0 / SERVICE_S))
            else:
                waiting += 1
            next_arrival = t + rng.expovariate(load * FULL_RPS)
    return capacity.known(state)


@pytest.mark.parametrize("load", [0.2, 0.4, 0.8])
def test_the_estimate_at_partial_load_is_within_a_tenth_of_the_full_rate(load: float) -> None:
    """Weighted by the snapshots squared, eight two-minute runs read 6.6 at 20% (17% low)
    and 7.6 at 40%; now 8.1 and 8.5 (a replica with fewer requests does not run each faster
    here: the estimate has nothing to extrapolate)."""
    values = [estimate(load, 120.0, seed) for seed in range(8)]
    known = [v for v in values if v is not None]
    assert len(known) == len(values)
    mean = sum(known) / len(known)
    print(f"load {load}: {[round(v, 2) for v in known]} mean {mean:.2f} for {FULL_RPS}")
    assert mean == pytest.approx(FULL_RPS, rel=0.1)
