"""What lending a one-replica region's users does under prefix hashing, on the planet's
copy of bench/scenarios/shared_prefix.yaml (`bench/measure/prefix_planet.py`, its `--lend`
what-if: the paying share forced, not heliostat's law).

Under hashing a lending gateway's ring holds the rescuer's replicas beside its own (each by
its locality weight), so the keys lent leave its replica for good: the one replica then sees
fewer of the groups' prompts and its cache holds more of those it keeps. Its hit rate, and
so its prefill, is a function of the share (12 seeds at 65%: 35.8% under the law, which
lends 15% on average, on and off; 39.3% at a steady 8%, 40.6% at 15%, 47.1% at 30%, 48.7%
at 45%), while `spill` takes the prefill measured at the share in force as the prefill at
every share. The load alone does not move it: the replica alone at 1.2 to 3.5 requests/s
hits 33% at every rate.
"""

from __future__ import annotations

import statistics

from bench.measure import prefix_planet
from heliostat.balance import overflow

SEEDS = range(3)


def test_the_what_if_leaves_the_law_as_it_found_it() -> None:
    before = (overflow.paying, overflow.carries_own, overflow._pays_to_judge)
    with prefix_planet.lending("ap-southeast:eu-west:0.3"):
        assert overflow.paying is not before[0]
    assert (overflow.paying, overflow.carries_own, overflow._pays_to_judge) == before


def test_a_lent_share_raises_the_one_replicas_hit_rate() -> None:
    law = prefix_planet.options(["--seconds", "30"])
    lent = prefix_planet.options(["--seconds", "30", "--lend", "ap-southeast:eu-west:0.3"])
    kept: list[float] = []
    sent: list[float] = []
    away: list[float] = []
    for seed in SEEDS:
        _, hits, _ = prefix_planet.play(law, seed)
        kept.append(hits["ap-southeast"])
        by_origin, hits, _ = prefix_planet.play(lent, seed)
        sent.append(hits["ap-southeast"])
        away.append(by_origin["ap-southeast"]["cross_region_share"])
    print(f"hit rate kept {kept}, lent {sent}; served in eu-west {away}")
    assert statistics.mean(away) >= 0.2
    assert statistics.mean(sent) >= statistics.mean(kept) + 0.05
