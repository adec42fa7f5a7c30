"""Scaling signals: per model and region, the demand the control law measures, the capacity
it sees, and the replicas it would need to hold a utilisation target.

An autoscaler (HPA on external metrics, KEDA's Prometheus scaler, the planet's own) acts on
these; `serve` exports them on /metrics as `heliostat_desired_replicas{model,region}` and
its inputs (see manifests/autoscaling/).

Units. The arithmetic never looks at them: demand and capacity only have to share one.

    desired = ceil(demand / (target * capacity per replica))

Today's law measures both in endpoint capacities: one endpoint at its thresholds carries 1.0
(`balance.overflow`), so capacity per replica is 1.0 and a target of 0.7 keeps every
replica at 70% of its thresholds. The demand is the region's *own* gateways' demand, with
what it lends to its neighbours taken back in (`RegionState.demand`): GPUs are asked for
where the users are, so a region that leans on a neighbour asks for the replicas that would
serve its users at home. A law that measures demand as a rate (completions/s, issue 10)
passes requests/s and each replica's observed service rate; nothing here changes.

A region with gateways but no live endpoint of the model (an edge region, or one whose
replicas are all down) gets demand 0 from today's law: its users' load shows up in the
regions that serve them. Its desired count is then `minimum` (default 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heliostat.balance.state import ControlState
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
        for region in sorted(policy.spec.regions):
            region_state = decided.regions.get(region) if decided is not None else None
            demand = max(0.0, region_state.demand) if region_state is not None else 0.0
            live = region_state.capacity if region_state is not None else 0
            result.append(
                ScalingSignal(
                    model=model.name,
                    region=region,
                    demand=demand,
                    capacity=float(live),
                    replicas=live,
                    per_replica=1.0,
                    target=target,
                    desired=desired_replicas(demand, 1.0, target, minimum=minimum),
                    unit=UNIT_ENDPOINT,
                )
            )
    return result
