"""A full planet drains the queue its flash crowd built by refusing, so what it admits is on time.

The routing benchmark's flash crowd (bench/scenarios/flash_crowd.yaml through
`bench.routing_planet`), request by request:
us-east 4 replicas, eu-west 3, ap-southeast 1, 4 slots each (speed 1.5, the chat mix's
prompt and output spreads), a 500 ms TTFT objective and a 170 ms budget; every region at
40% of its capacity for 10 s, ramping to 130% over 10 s and holding it. No region has room to
lend: what is not refused queues.

Before, a region's queue late on the ramp (its demand estimate lags the crowd by seconds)
drained through the plan's slack and the batch class alone, interactive requests never
refused for it: every request admitted behind it was late. Over twelve seeds 83.5% of the
admitted met the SLO, admitted p99 1.39 s (1.2-2.1 s), goodput 25.8 requests/s. Now a late
queue is drained within the TTFT by refusing, batch first then interactive, and the refusal
holds while the plan's proof of a full planet lapses only because the refusal emptied the
slots (`refusal.beyond_admission`): 92.1% within the SLO, p99 1.01 s (0.87-1.22 s), goodput
27.5 requests/s. Then a region refuses on sight (`refusal.early`): what its gateways
measure beyond a deviation, its goodput-best level and the room in reach is refused the
tick it is seen, not once the plan's smoothed demand and proof of a full planet catch up
(they lag a ramp by seconds): over these six seeds within the SLO 90.7% -> 92.1%, p99
1.09 -> 0.97 s, goodput 26.97 -> 27.49 requests/s. The p99 is not within the objective
yet: a region admits its own users up to the goodput-best level (`queueing.admission`),
where 6-18% of them wait past the TTFT on pools of 4-16 slots, and the ramp's queue before
the first refusal holds half the late requests (`queueing.admission` gives the tail-sized
levels measured, and why none is kept). Then, while a region refuses, each of its gateways
caps what it has in flight at the region's slots (`refusal.in_flight`, Envoy's max_requests):
the random drop fraction lets a queue build now and then at the goodput-best level, the cap
refuses the request that would wait in it. Over these six seeds 91.6% -> 97.4% within the
SLO, p99 1.03 -> 0.69 s, goodput 27.23 -> 27.53 requests/s; once the crowd held, 1-2% of
the admitted were late against 6-11% (the p99 left is the ramp's, before the first
refusal).

Seeded: the same seeds play the same requests; six 45-second runs take about 3 s.
"""

from __future__ import annotations

from bench.routing_planet import bench_scenario, planet_scenario
from heliostat.planet.fluid import RunOptions
from heliostat.planet.record import Histogram
from heliostat.planet.run import _play
from heliostat.planet.scenario import PolicyName, Scenario

FLASH_CROWD = bench_scenario("flash_crowd")
TTFT_MS = FLASH_CROWD.slo.ttft_ms
SEEDS = range(6)
# The goodput before (mean of twelve seeds): draining by refusing must not cost any.
GOODPUT_BEFORE = 25.8


def flash_crowd(seed: int) -> Scenario:
    """The bench's flash crowd on the planet, without the bench's prefix affinity, as these
    figures were measured."""
    return planet_scenario(FLASH_CROWD, seed, affinity=False)


def test_a_full_planet_drains_its_late_queues_by_refusing() -> None:
    pooled = Histogram()
    served = met = goodput = 0.0
    for seed in SEEDS:
        record = _play((flash_crowd(seed), "heliostat", RunOptions(PolicyName.HELIOSTAT))).record
        summary = record.summary(TTFT_MS / 1000.0)
        pooled.merge(record.hist)
        served += record.totals.served
        met += record.totals.met
        goodput += summary["goodput_rps"] / len(SEEDS)
        print(seed, summary["admitted_within_slo"], summary["ttft_p99_ms"], summary["goodput_rps"])
    p99 = pooled.quantile(0.99)
    assert p99 is not None
    print(f"admitted within the SLO {met / served:.3f}, p99 {1000 * p99:.0f} ms, {goodput:.2f}/s")
    # These six seeds before the drain: 81.8-83.5% and 1.39-1.54 s; with it 90.7%, 1.09 s,
    # 26.97/s; refusing on sight too 92.1%, 0.97 s, 27.49/s; with the stability step
    # (overflow's share holds, wip/stab7) as well 91.6%, 1.03 s, 27.23/s (the holds alone:
    # 90.9%, 1.09 s, 27.09/s); capping what is in flight while refusing 97.4%, 0.69 s,
    # 27.53/s. The first two bounds fail without the cap.
    assert met / served >= 0.965
    assert p99 <= 0.75
    assert goodput >= GOODPUT_BEFORE + 1.6
