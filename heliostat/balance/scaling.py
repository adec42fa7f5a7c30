"""Scaling signals: per model and region, the demand the control law measures, the capacity
it sees, and the replicas it would need to hold a utilisation target.

An autoscaler (HPA on external metrics, KEDA's Prometheus scaler, the planet's own) acts on
these; `serve` exports them on /metrics as `heliostat_desired_replicas{model,region}` and
its inputs (see manifests/autoscaling/).

Units. The arithmetic never looks at them: demand and capacity only have to share one.

    desired = ceil(demand / (target * capacity per replica))

The law measures both as rates once its endpoints' service rates are known (`RegionState.rates`):
demand in requests/s, capacity as the completions/s its live replicas sustain when busy
(`RegionState.raw_capacity`), so capacity per replica is that over the live replicas and a
target of 0.7 keeps every replica at 70% of its throughput. Before that (no success counters
yet) both are in endpoint units: one endpoint at its thresholds carries 1.0. The demand is
the region's *own* gateways' demand (`RegionState.demand`, from their load reports when they
send them): GPUs are asked for where the users are, so a region that leans on a neighbour
asks for the replicas that would serve its users at home.

A region with no live endpoint of the model (an edge region, or one whose replicas are all
down) is given the model's typical per-replica capacity; an edge region has no GPUs to scale,
and its desired count says how many it would take to serve its users at home.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from heliostat.balance.state import ControlState, RegionState
from heliostat.policy import Policy

DEFAULT_TARGET = 0.7
UNIT_ENDPOINT = "endpoint"  # one endpoint at its thresholds (today's law)
UNIT_RPS = "requests_per_second"


@dataclass(frozen=True, slots=True)
class ScalingSignal:
    """One model in one region. `demand` and `capacity` are in `unit`; `per_replica` is one
    replica's capacity in the same unit; `replicas` the live replicas counted."""

    model: str
    region: str
    demand: float
    capacity: float
    replicas: int
    per_replica: float
    target: float
    desired: int
    unit: str

    @property
    def utilisation(self) -> float:
        """Demand over capacity (0 when there is none)."""
        return self.demand / self.capacity if self.capacity > 0 else 0.0


def desired_replicas(demand: float, per_replica: float, target: float, *, minimum: int = 0) -> int:
    """Replicas that carry `demand` with each at `target` of its capacity `per_replica`.

    Any unit, as long as demand and per_replica share it. Never below `minimum`; a demand
    within a part per million of a whole replica is not rounded up to one more.
    """
    if not per_replica > 0 or not target > 0:
        raise ValueError("per_replica and target must be positive")
    if not math.isfinite(demand) or demand <= 0:
        return minimum
    exact = demand / (target * per_replica)
    return max(minimum, math.ceil(exact - 1e-6))


def scaling_signals(
    policy: Policy,
    state: ControlState | None,
    target: float = DEFAULT_TARGET,
    minimum: int = 0,
) -> list[ScalingSignal]:
    """Every (model, region) of the policy, from the law's last state (in endpoint units).

    Before the first tick (no state) every demand reads 0.
    """
    result = []
    for model in policy.spec.models:
        decided = state.models.get(model.name) if state is not None else None
        regions = decided.regions if decided is not None else {}
        typical = _per_replica(regions.values())
        for region in sorted(policy.spec.regions):
            rs = regions.get(region)
            rates = rs is not None and rs.rates
            live = rs.endpoints if rs is not None else 0
            capacity = (rs.raw_capacity if rates else float(live)) if rs is not None else 0.0
            per_replica = capacity / live if live and capacity > 0 else (typical if rates else 1.0)
            demand = max(0.0, rs.demand) if rs is not None else 0.0
            result.append(
                ScalingSignal(
                    model=model.name,
                    region=region,
                    demand=demand,
                    capacity=capacity,
                    replicas=live,
                    per_replica=per_replica,
                    target=target,
                    desired=desired_replicas(demand, per_replica, target, minimum=minimum),
                    unit=UNIT_RPS if rates else UNIT_ENDPOINT,
                )
            )
    return result


def _per_replica(regions: Iterable[RegionState]) -> float:
    """One replica's observed capacity across the model's regions (requests/s), for a region
    with none live to measure; 1.0 before anything was observed."""
    observed = sorted(
        r.raw_capacity / r.endpoints for r in regions if r.rates and r.endpoints and r.raw_capacity
    )
    return observed[len(observed) // 2] if observed else 1.0
