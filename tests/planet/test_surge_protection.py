"""In a regional surge the rescuing region's own users keep their SLO attainment (issue 10's
protection target: within 1 point of theirs before the surge), and the surging region's users
are still served.

The bench's regional_surge, request by request (the discrete engine, gateways reporting over
LRS as Envoy does; the fleet of tests/planet/test_share_stability.py): us-east 4 replicas,
eu-west 3, ap-southeast 1, 4 slots each at speed 1.5, chats with long-tailed prompts and
outputs, a TTFT objective of 500 ms and a 170 ms budget. Every region at 50% of its capacity
for 15 s, then ap-southeast at twice its one replica for 40 s: only eu-west (160 ms) is
within its budget, so eu-west takes ap-southeast's overflow and may pass its own users on to
us-east (80 ms) to make room.

Seeds 0-4 here (about 15 s on an idle core): eu-west's users 99.5% before, 99.0% during;
ap-southeast's 96.7% during. Over seeds 10-29: 99.4% before, 99.6% during, ap-southeast
96.3%. The bench (Envoy, real processes, wall-clock replicas) has not met the target yet:
its kept full run of 2026-12-06 (seventh) gave eu-west's users 95.2% during against 100%
before, eu-west passing 18-82% of its own users on to us-east within seconds of the surge
and us-east's own users at 95.7%; what the planet does not reproduce there is not found
yet. This test keeps the law's part of the target from regressing.
"""

from __future__ import annotations

from heliostat.planet.fluid import RunOptions
from heliostat.planet.record import Record
from heliostat.planet.run import _play
from heliostat.planet.scenario import PolicyName, Scenario
from tests.planet.test_share_stability import REPLICA_RPS, REPLICAS, chat_fleet

SEEDS = range(5)
LOAD = 0.5
BEFORE_S = 15.0
SURGE_S = 40.0
SLACK = 0.01  # the 1 point


def surge(seed: int) -> Scenario:
    """The bench's regional_surge on the planet (see the module docstring)."""
    events = [
        {
            "kind": "flash_crowd",
            "regions": ["ap-southeast"],
            "at": BEFORE_S,
            "ramp": 0.01,
            "hold": SURGE_S + 5.0,
            "factor": 2.0 / LOAD,
        }
    ]
    document = chat_fleet(seed, events).model_dump()
    document["duration"] = BEFORE_S + SURGE_S
    document["demand"] = {
        region: {"curve": [LOAD * REPLICA_RPS * count] * 24} for region, count in REPLICAS.items()
    }
    return Scenario.model_validate(document)


def counts(record: Record, region: str, start: float, end: float) -> tuple[float, float]:
    """(offered, met within the SLO) of `region`'s users who arrived in [start, end)."""
    offered = met = 0.0
    for index, bucket in enumerate(record.series[region]):
        if start <= index * record.bucket_s < end:
            offered += bucket.users.offered
            met += bucket.users.met
    return offered, met


def test_the_rescuers_own_users_keep_their_slo_through_a_surge() -> None:
    before = [0.0, 0.0]
    during = [0.0, 0.0]
    surging = [0.0, 0.0]
    for seed in SEEDS:
        record = _play((surge(seed), "heliostat", RunOptions(PolicyName.HELIOSTAT))).record
        end = BEFORE_S + SURGE_S
        for total, part in (
            (before, counts(record, "eu-west", 0.0, BEFORE_S)),
            (during, counts(record, "eu-west", BEFORE_S, end)),
            (surging, counts(record, "ap-southeast", BEFORE_S, end)),
        ):
            total[0] += part[0]
            total[1] += part[1]
    ratio = [met / offered for offered, met in (before, during, surging)]
    print(
        f"eu-west's users before {ratio[0]:.4f}, during {ratio[1]:.4f}; ap-southeast {ratio[2]:.4f}"
    )
    assert ratio[1] >= ratio[0] - SLACK
    # Protection is not bought by leaving the surging region's users to queue or be refused.
    assert ratio[2] >= 0.9
