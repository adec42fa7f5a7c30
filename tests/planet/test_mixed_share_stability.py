"""Under constant load on replicas of speeds 1 and 3, no share turns round more than twice a
minute (issue 10's stability target): a queue beside a free slot moves no share at once.

The bench's mixed GPUs (bench/scenarios/mixed_gpus.yaml through `bench.routing_planet`, with
the bench's prefix affinity), request by request: us-east 2 replicas of speed 1 and 2 of
speed 3, eu-west 2 and 1, ap-southeast 1 and 1, 4 slots each, every region's users at a
steady 65% of its capacity, 40 seconds from a cold start as the benchmark plays it.

Until the capacity tiers are learnt the slow replicas take as much as the fast ones and
queue while their peers have slots free. Such a queue made a rescuer's distress and an
origin's overdue queue urgent (past the reversal holds): on seed 15 eu-west lent 26% to
us-east at start-up, us-east's queue (6 waiting, 4-6 slots free) brought the share down at
once, eu-west's own queue raised it to 21% five seconds later and us-east's next queue
brought it down again: eu-west's home share turned three times in 40 s, as in the bench's
twelfth full run (4.5 reversals a minute). Now a queue is urgent for a share only while
its region has less than one slot free at this tick and the last
(`overflow._full_twice`): that share turns once.

Measured (/tmp/mixed13/repro.py, seeds 0-29, home shares counted): worst turns per run
mean 1.03 with one seed at 3 (seed 15) -> 0.93 with none above 1; SLO 95.17% -> 95.14%.

Seeded: four 40-second runs take about 15 s.
"""

from __future__ import annotations

from bench.routing_planet import bench_scenario, planet_scenario
from tests.planet.test_share_stability import published, worst_turns

__all__ = ["published"]  # the fixture, recording every share tick by tick

MIXED_GPUS = bench_scenario("mixed_gpus")
SEEDS = (13, 14, 15, 16)


def test_mixed_speeds_turn_no_share_twice_in_forty_seconds(
    published: dict[tuple[str, str], list[float]],
) -> None:
    worst, attainment = worst_turns(
        published, (planet_scenario(MIXED_GPUS, seed) for seed in SEEDS)
    )
    print(f"worst turns per run {worst}, SLO attainment {[round(a, 4) for a in attainment]}")
    # The bench counts turns over its 40 s: one is 1.5 a minute, two are 3. Before: 1, 1, 3, 1.
    assert max(worst) <= 1
