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
from collections import Counter
from typing import Any

from bench.measure import prefix_planet
from heliostat.balance import capacity, overflow, spill
from heliostat.planet import discrete
from heliostat.planet.discrete import DiscreteRun
from heliostat.planet.fluid import RunOptions
from heliostat.planet.scenario import PolicyName

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


def test_the_capacity_what_if_leaves_the_estimator_as_it_found_it() -> None:
    before = (capacity.observe_columns, capacity.known_columns)
    with prefix_planet.full_capacity("x0.75"):
        assert capacity.known_columns is not before[1]
    assert (capacity.observe_columns, capacity.known_columns) == before


def test_lend_takes_several_origins() -> None:
    seen: dict[str, spill.Spill] = {}
    with prefix_planet.lending("ap-southeast:eu-west:0.3,eu-west:us-east:0.15"):
        for origin in ("ap-southeast", "eu-west"):
            seen[origin] = overflow.paying(None, None, origin, {}, None, None)  # type: ignore[arg-type]
    assert (seen["ap-southeast"].rescuer, seen["ap-southeast"].share) == ("eu-west", 0.3)
    assert (seen["eu-west"].rescuer, seen["eu-west"].share) == ("us-east", 0.15)


def _placements(placement: str) -> Counter[tuple[str, str, str]]:
    """(gateway, the region of the Envoy that counts the request, the replica's region) of
    every try of a 20 s run lending 30% of ap-southeast's users to eu-west."""
    args = prefix_planet.options(
        ["--seconds", "20", "--lend", "ap-southeast:eu-west:0.3", "--lent", placement]
    )
    run = DiscreteRun(prefix_planet.scenario(args, 0), RunOptions(PolicyName.HELIOSTAT))
    counted: Counter[tuple[str, str, str]] = Counter()
    send = run._send

    def spying(request: Any, host: str) -> None:
        counted[(request.gateway, request.envoy.region, run.replicas[host].region)] += 1
        send(request, host)

    run._send = spying  # type: ignore[method-assign]
    discrete.LENT_PLACEMENT = discrete.LentPlacement(placement)
    try:
        with prefix_planet.lending(args.lend):
            run.run()
    finally:
        discrete.LENT_PLACEMENT = discrete.LentPlacement.LENDER_RING
    return counted


def test_a_lent_request_is_counted_by_the_rescuers_gateway_in_the_what_if() -> None:
    """As published, the lender's Envoy places and counts what it lends (its bound blind to
    the rescuer's own users on those replicas); `--lent rescuer_ring` hands the request to
    the rescuer's gateway, whose in-flight counts then hold every request on its replicas."""
    published = _placements("lender_ring")
    relayed = _placements("rescuer_ring")
    print(f"lender_ring {dict(published)}; rescuer_ring {dict(relayed)}")
    assert published[("ap-southeast", "ap-southeast", "eu-west")] >= 10
    assert relayed[("ap-southeast", "eu-west", "eu-west")] >= 10
    assert relayed[("ap-southeast", "ap-southeast", "eu-west")] == 0
    assert discrete.LENT_PLACEMENT is discrete.LentPlacement.LENDER_RING
