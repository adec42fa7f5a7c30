"""The scaling loop of the planet: an autoscaler acting on heliostat's scaling signals.

Every `scaling.interval` it reads the desired replicas per region, clamps them to the
region's limits, and moves the fleet towards them:

- up at once: new replicas hold their GPUs from the decision and serve after
  `provisioning_delay` (a pod scheduled, a 140 GB model loaded); at most `max_step` per
  region per action, and never more GPUs than the pool holds (replicas draining or still
  provisioning count). When the pool cannot give every region what it wants, the regions
  short of the largest share of their wish go first;
- down only once a region has wanted fewer for `scale_down_after`: the replicas it no longer
  wants are drained (DRAINING in the views: they finish what they hold) and released when
  empty. Their GPUs return to the pool, so GPUs follow the sun: the region whose users sleep
  gives back what the busy one asks for, `provisioning_delay` later.

What it reads (`scaling.signal`): `law`, `heliostat.balance.scaling.scaling_signals` of the
law's state, what `serve` exports; or `gateway_rates`, the requests/s each region's gateways
saw over one replica's requests/s at capacity (from the replica model, as an operator knows it
from a benchmark), a region's edge gateways counted in the nearest region with replicas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from heliostat.balance.scaling import desired_replicas
from heliostat.planet.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Move:
    region: str
    add: int = 0
    drain: int = 0


class Autoscaler:
    """Decides moves; the engine applies them to its fleet (see the module docstring)."""

    def __init__(self, scenario: Scenario, scalable: set[str]) -> None:
        self.scenario = scenario
        self.scaling = scenario.scaling
        gpus = scenario.model.gpus_per_replica
        fleet_gpus = sum(r.replicas for r in scenario.regions.values()) * gpus
        self.pool_replicas = (self.scaling.pool_gpus or fleet_gpus) // gpus
        self.scalable = sorted(scalable)
        self._lower_since: dict[str, float] = {}
        self.decisions: list[dict[str, object]] = []

    def limits(self, region: str) -> tuple[int, int]:
        limit = self.scaling.limits.get(region)
        low = limit.min if limit else 0
        high = limit.max if limit and limit.max is not None else self.pool_replicas
        return low, high

    def decide(
        self,
        now: float,
        desired: Mapping[str, int],
        active: Mapping[str, int],
        allocated: int,
    ) -> list[Move]:
        """Moves for this action. `active`: serving + provisioning replicas per region;
        `allocated`: every replica holding GPUs (draining ones too)."""
        wanted = {}
        for region in self.scalable:
            low, high = self.limits(region)
            wanted[region] = min(high, max(low, desired.get(region, 0)))
        moves: list[Move] = []
        free = self.pool_replicas - allocated
        short = {
            r: wanted[r] - active.get(r, 0) for r in self.scalable if wanted[r] > active.get(r, 0)
        }
        # The regions furthest below their wish (relatively) get the pool first.
        order = sorted(short, key=lambda r: (-short[r] / max(1, wanted[r]), r))
        for region in order:
            self._lower_since.pop(region, None)
            add = min(short[region], self.scaling.max_step, max(0, free))
            if add > 0:
                moves.append(Move(region, add=add))
                free -= add
        for region in self.scalable:
            surplus = active.get(region, 0) - wanted[region]
            if surplus <= 0:
                self._lower_since.pop(region, None)
                continue
            since = self._lower_since.setdefault(region, now)
            if now - since >= self.scaling.scale_down_after:
                moves.append(Move(region, drain=min(surplus, self.scaling.max_step)))
        self.decisions.append(
            {
                "t": now,
                "desired": dict(desired),
                "wanted": wanted,
                "active": dict(active),
                "moves": [(m.region, m.add, m.drain) for m in moves],
            }
        )
        return moves


def gateway_demand(
    scenario: Scenario, offered_rps: Mapping[str, float], scalable: set[str]
) -> dict[str, float]:
    """Requests/s per region with replicas: its own gateways', plus those of edge regions
    whose nearest region (by RTT) it is."""
    demand = dict.fromkeys(scalable, 0.0)
    for origin, rps in offered_rps.items():
        if origin in demand:
            demand[origin] += rps
            continue
        nearest = min(scalable, key=lambda r: (scenario.rtt_ms(origin, r), r), default=None)
        if nearest is not None:
            demand[nearest] += rps
    return demand


def desired_from_rates(
    demand_rps: Mapping[str, float], capacity_rps: float, target: float
) -> dict[str, int]:
    return {r: desired_replicas(d, capacity_rps, target) for r, d in demand_rps.items()}
