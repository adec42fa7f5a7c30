"""After a surge: the overflow share comes back to zero without turning round (`QueuePlant`).

`Plant` (helpers) reports a queue proportional to the load, so its pressure *is* demand over
capacity. A real replica's queue is a backlog instead: while arrivals exceed what it serves
the queue grows for as long as the surge lasts, and it takes time to drain once the surge
ends. A law that read demand from queue levels read a 2x surge as up to 30x (pressure
counted the backlog), kept lending 12-18 s after the queue had drained, and with a 2x surge
raised the share again while the region sat idle. The law now reads demand as a rate (what
the replicas completed, `served_total`, plus queue growth) and keeps the backlog as a term
of its own; the plant reports completions as a vLLM server does and applies the gateways'
refusals as Envoy would. `seed` makes the plant noisy (Poisson arrivals).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping, Sequence

import pytest

from heliostat.balance import ControlState, GatewayLoad, OriginLoad, Views, compute, queueing
from heliostat.balance.overflow import QUEUE_SHARE, UTILISATION
from tests.balance.helpers import (
    MODEL,
    REGIONS,
    T0,
    Signals,
    addresses,
    cluster,
    policy_of,
    shares_in,
)
from tests.balance.helpers import signal as signal_of

SLOTS = 8
SERVICE_S = 1.0  # one request holds a slot this long: a full replica serves 8 requests/s
TICK_S = 0.5  # the demo's scrape interval
STEP_S = 0.01  # the plant's integration step
FLEET = {"us-east": 4, "eu-west": 2, "ap-southeast": 1}
MAX_SHARE = 0.3
SENDER, RESCUER = "ap-southeast", "eu-west"


class QueuePlant:
    """Every replica queues what it cannot run: requests in system n, running min(n, SLOTS),
    the rest waiting, each running request done after SERVICE_S on average. Demand is in
    replica capacities per region and split by the last views' locality weights; every
    replica of a region sees the same share of it. Without `seed` the plant is a fluid (no
    noise); with one, arrivals and completions are random (Poisson arrivals, exponential
    service)."""

    def __init__(
        self,
        demand: Mapping[str, float],
        *,
        seed: int | None = None,
        max_share: float | None = MAX_SHARE,
        gateways: bool = False,
    ) -> None:
        self.policy = policy_of(FLEET, budget=170.0, max_share=max_share, slots=SLOTS)
        self.gateways = gateways  # report each origin's demand as gateways would (LRS)
        self.demand = dict(demand)
        self.rng = random.Random(seed) if seed is not None else None
        self.in_system = dict.fromkeys(REGIONS, 0.0)  # per replica
        self.served = dict.fromkeys(REGIONS, 0.0)  # completions per replica since start
        self.views: Views | None = None
        self.state: ControlState | None = None
        self.now = T0

    def arrivals(self) -> dict[str, float]:
        """Requests per second reaching each replica of every region."""
        rate = dict.fromkeys(REGIONS, 0.0)
        for origin, amount in self.demand.items():
            split = {origin: 1.0} if self.views is None else shares_in(self.views, origin)
            admitted = 1.0 - self.refused(origin)
            for region, share in split.items():
                rate[region] += admitted * share * amount * SLOTS / SERVICE_S / FLEET[region]
        return rate

    def load_reports(self) -> GatewayLoad:
        """Each origin's requests/s as its gateways count them over a 3 s window (Poisson
        counts when the plant is noisy); nothing without `gateways`."""
        if not self.gateways:
            return GatewayLoad()
        origins = {}
        for origin, amount in self.demand.items():
            rate = amount * SLOTS / SERVICE_S
            if self.rng is not None:
                window = 3.0
                count = sum(self.rng.random() < rate * window / 400 for _ in range(400))
                rate = count / window
            origins[(MODEL, origin)] = OriginLoad(interactive=rate, at=self.now)
        return GatewayLoad(origins)

    def refused(self, origin: str) -> float:
        """The share of the origin's requests its gateways refuse (Envoy's drop_overloads)."""
        if self.views is None:
            return 0.0
        return cluster(self.views, origin).drop_overload_percent / 100.0

    def advance(self, seconds: float) -> None:
        rate = self.arrivals()
        for _ in range(round(seconds / STEP_S)):
            for region in REGIONS:
                n = self.in_system[region]
                running = min(n, SLOTS)
                if self.rng is None:
                    done = running / SERVICE_S * STEP_S
                    n += rate[region] * STEP_S
                else:
                    # Ten Bernoulli trials per step: Poisson enough at these rates.
                    n += sum(self.rng.random() < rate[region] * STEP_S / 10 for _ in range(10))
                    done = sum(self.rng.random() < STEP_S / SERVICE_S for _ in range(int(running)))
                done = min(done, n)
                self.served[region] += done
                self.in_system[region] = max(0.0, n - done)

    def waiting(self, region: str) -> float:
        return max(0.0, self.in_system[region] - SLOTS)

    def signals(self) -> Signals:
        result: Signals = {}
        for region in REGIONS:
            n = self.in_system[region]
            for address in addresses(self.policy, region):
                result[(MODEL, address)] = dataclasses.replace(
                    signal_of(
                        address,
                        waiting=max(0.0, n - SLOTS),
                        running=min(n, SLOTS),
                        kv=None,
                        max_num_seqs=SLOTS,
                        at=self.now,
                    ),
                    served_total=self.served[region],
                )
        return result

    def tick(self) -> float:
        """Let TICK_S pass, scrape, run the law; the share SENDER now publishes to RESCUER."""
        if self.state is not None:
            self.advance(TICK_S)
            self.now += TICK_S
        self.views, self.state = compute(
            self.policy, self.signals(), self.state, self.now, gateways=self.load_reports()
        )
        return shares_in(self.views, SENDER).get(RESCUER, 0.0)


def reversals(values: Sequence[float]) -> int:
    """How often a series turned round (the demo's recovery judge counts the same)."""
    turns = direction = 0
    for a, b in itertools.pairwise(values):
        step = (b > a) - (b < a)
        if step and direction and step != direction:
            turns += 1
        if step:
            direction = step
    return turns


def surge_then_calm(
    surge: float, rescuer: float, *, seed: int | None = None
) -> tuple[list[float], list[float], float]:
    """SENDER at `surge` x its one replica for 25 s, then at 0.5x for 45 s; RESCUER's own
    demand is `rescuer` (replica capacities). Returns the published shares during the surge,
    after it, and how many seconds after the surge the sender's queue was empty for good."""
    plant = QueuePlant({"us-east": 0.8, RESCUER: rescuer, SENDER: surge}, seed=seed)
    during = [plant.tick() for _ in range(50)]
    plant.demand[SENDER] = 0.5
    after: list[float] = []
    drained_at = None
    for tick in range(90):
        after.append(plant.tick())
        if plant.waiting(SENDER) > 0.0:
            drained_at = None
        elif drained_at is None:
            drained_at = (tick + 1) * TICK_S
    assert drained_at is not None, "the plant never drained: the scenario is wrong"
    return during, after, drained_at


@pytest.mark.parametrize(
    ("surge", "rescuer"),
    [(1.3, 0.5), (1.3, 1.0), (1.6, 1.0), (2.0, 0.5), (2.0, 1.0)],
)
def test_after_a_surge_the_share_falls_to_zero_without_turning_round(
    surge: float, rescuer: float
) -> None:
    during, after, drained_at = surge_then_calm(surge, rescuer)
    # The surge engages the overflow, within max_share.
    assert max(during) >= 0.2
    assert all(0.0 <= share <= MAX_SHARE + 1e-9 for share in during + after)
    # Once the surge is over the share only ever falls, to zero; overall it rose, then fell.
    assert all(b <= a for a, b in itertools.pairwise([during[-1], *after]))
    assert after[-1] == 0.0
    assert reversals(during + after) <= 1
    # And it does not outlast the queue by much: the region is idle, nothing left to relieve
    # (the smoothed demand takes a few seconds to come down, the share 2 s more).
    zero_at = (next(i for i, share in enumerate(after) if share == 0.0) + 1) * TICK_S
    assert zero_at - drained_at <= 11.0


@pytest.mark.parametrize("gateways", [False, True])
def test_without_a_cap_a_2x_surge_is_placed_in_budget_and_the_queue_stays_short(
    gateways: bool,
) -> None:
    """ap-southeast at 2x its one replica, eu-west (2 replicas) at half its capacity: about
    half of ap-southeast's users must leave, and eu-west has room for them below its
    ceiling. The share goes straight there and holds; ap-southeast never queues and eu-west
    stays below its ceiling, whether demand is inferred from the engines or measured at the
    gateways. (With Poisson noise on these one- and two-replica regions the share does not
    hold as well yet: known weak, see the branch's report.)"""
    plant = QueuePlant(
        {"us-east": 0.8, RESCUER: 1.0, SENDER: 2.0}, max_share=None, gateways=gateways
    )
    shares = [plant.tick() for _ in range(60)]
    waits = []
    rescuer = []
    for _ in range(40):
        shares.append(plant.tick())
        waits.append(plant.waiting(SENDER))
        rescuer.append(plant.in_system[RESCUER] / SLOTS)
    settled = shares[-40:]
    print(f"share {min(settled)}..{max(settled)}, max wait {max(waits)}, rescuer {max(rescuer)}")
    # What its replica (8 slots, `queueing`) does not carry at 2x: (2 - u) / 2 of its users
    # at its planning level u, and at least (2 - a) / 2 at its admission level a (with
    # demand inferred from engines eu-west keeps MIN_KEPT of its own users, so it has less
    # room to make for them and the sender keeps some above its planning level).
    ttft = 1.0  # the policy's default SLO
    level = queueing.utilisation(SLOTS, SLOTS / SERVICE_S, QUEUE_SHARE * ttft, UTILISATION)
    admits = queueing.admission(SLOTS, SLOTS / SERVICE_S, ttft, UTILISATION)
    assert level < admits < UTILISATION  # a pool of 8 slots runs below UTILISATION
    low = (2.0 - level) / 2.0 if gateways else (2.0 - admits) / 2.0
    assert low - 0.01 <= min(settled) and max(settled) <= (2.0 - level) / 2.0 + 0.05
    assert reversals(shares[10:]) == 0
    assert max(waits) == 0.0
    assert max(rescuer) <= 0.9  # eu-west's slots, filled to its ceiling at most
