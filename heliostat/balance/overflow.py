"""Bounded overflow: a region whose GPUs cannot carry its demand lends a share to neighbours.

Units: one endpoint at its thresholds carries 1.0. Per model and region r, over endpoints with
a fresh signal that can take traffic (healthy or saturated):

    capacity C_r = their count,  load L_r = sum of their pressures (see `saturation`).

L_r is what r's endpoints carry *with the overflow already in effect*, so it cannot be used as
r's demand directly: sending 30% away lowers L_r, which would end the overflow, which would
raise L_r again (an oscillator). The demand of r's own gateways is recovered from the shares
that were published last tick:

    L_r = (1 - sum_q S[r][q]) * D_r + sum_s S[s][r] * D_s         (solved by a few iterations)

D_r is then smoothed like endpoint saturation (an EWMA with `weights.TAU_S`), so decisions
follow the demand's trend rather than one scrape, and the pressure used for every decision is
Pi_r = D_r / C_r. Then:

- r overflows once Pi_r >= ENGAGE (1.0) and keeps doing so until Pi_r <= RELEASE (0.9)
  (hysteresis). Its excess is e = 1 - RELEASE / Pi_r: enough to bring r back to RELEASE.
- Rescuers are the regions within the network budget of r (RTT <= slo.network_budget_ms),
  nearest first, that are not overflowing themselves. A rescuer q's own demand is reserved
  first: spare_q = RESCUE_CEILING * C_q - D_q - what senders book on q this tick, with
  D_q = L_q - sum_s S[s][q] * D_s left unclamped. Written out, that plans q's load as
  L_q + sum_s (new share - published share) * D_s <= RESCUE_CEILING * C_q: anchored on q's
  *measured* load, so an error in a sender's estimated demand only scales the change, and a
  steady rescue is judged on what q really carries. A rescue never plans q past
  RESCUE_CEILING (0.9), below its saturation threshold.
- share(r -> q) = min(remaining of min(max_share, e), spare_q / D_r); next rescuer while the
  total stays <= overflow.max_share (and <= 1 - MIN_KEPT: a region keeps at least 20%).
  Senders that share a rescuer split its spare in proportion to what they ask for (see
  `_targets`).
- How the share then travels from that target to Envoy (a dead zone on the goal, an EWMA
  with bounded steps, publication in 5% levels with hysteresis) is `shares`.

When no in-budget region has headroom, the target is 0 and the share ramps down to nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from heliostat.balance import shares, weights
from heliostat.balance.priorities import within_budget
from heliostat.balance.state import RegionState
from heliostat.policy import Model, Policy

ENGAGE = 1.0
RELEASE = 0.9
RESCUE_CEILING = 0.9
MIN_SHARE = 0.01
# The correction divides by the share a region keeps. A region therefore always keeps at
# least MIN_KEPT of its own traffic, whatever overflow.max_share says: below that, the
# division amplifies measurement noise and lag more than fivefold.
MIN_KEPT = 0.2
_ITERATIONS = 4


def max_lent(model: Model) -> float:
    """The most of a region's traffic overflow may send away: max_share, at most 1-MIN_KEPT."""
    return min(model.overflow.max_share, 1.0 - MIN_KEPT)


@dataclass(frozen=True, slots=True)
class RegionLoad:
    capacity: int
    load: float


def estimate_demand(
    loads: Mapping[str, RegionLoad], shares: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Each region's own demand, with the published overflow shares taken back out."""
    demand = {r: loads[r].load for r in sorted(loads)}
    live = [r for r in demand if loads[r].capacity > 0]
    for _ in range(_ITERATIONS):
        following: dict[str, float] = {}
        for r in demand:
            if loads[r].capacity == 0:
                following[r] = 0.0
                continue
            inflow = sum(shares.get(s, {}).get(r, 0.0) * demand[s] for s in live if s != r)
            kept = max(MIN_KEPT, 1.0 - sum(shares.get(r, {}).values()))
            following[r] = max(0.0, loads[r].load - inflow) / kept
        demand = following
    return demand


def step(
    policy: Policy,
    model: Model,
    loads: Mapping[str, RegionLoad],
    previous: Mapping[str, RegionState],
    dt: float,
) -> dict[str, RegionState]:
    """Every region's overflow decision for this tick (regions that hold endpoints of model)."""
    measured = estimate_demand(loads, {r: s.shares for r, s in previous.items()})
    # Decisions follow the demand's trend, not one scrape: a region of one or two replicas
    # reads very differently from one scrape to the next under the same load.
    trend = weights.alpha(dt)
    demand = {
        r: d if r not in previous else previous[r].demand + trend * (d - previous[r].demand)
        for r, d in measured.items()
    }
    pressure = {r: demand[r] / loads[r].capacity for r in demand if loads[r].capacity > 0}
    overflowing = {
        r: p >= ENGAGE or (r in previous and previous[r].overflowing and p > RELEASE)
        for r, p in pressure.items()
    }
    inflow = {
        q: sum(previous[s].shares.get(q, 0.0) * demand[s] for s in previous if s in demand)
        for q in demand
    }
    own = {q: loads[q].load - inflow[q] for q in demand}  # unclamped, see the module docstring
    targets = _targets(policy, model, loads, demand, own, pressure, overflowing)
    max_share = max_lent(model)
    gain = weights.alpha(dt, shares.TAU_S)
    distressed = {q for q, ld in loads.items() if ld.capacity and ld.load >= ld.capacity}
    result: dict[str, RegionState] = {}
    for r in sorted(loads):
        before = previous[r].lending if r in previous else {}
        reachable = set(within_budget(policy, model, r))
        goal = targets.get(r, {})
        lending: dict[str, shares.Share] = {}
        for q in sorted(set(before) | set(goal)):
            if q not in reachable:  # the budget changed: never keep a region now out of reach
                continue
            share = shares.follow(
                before.get(q), goal.get(q, 0.0), max_share, gain, dt, distressed=q in distressed
            )
            if share is not None:
                lending[q] = share
        result[r] = RegionState(
            capacity=loads[r].capacity,
            load=loads[r].load,
            demand=demand[r],
            overflowing=overflowing.get(r, False),
            lending=_capped(lending, max_share),
            measured=measured[r],
        )
    return result


def _capped(lending: dict[str, shares.Share], max_share: float) -> dict[str, shares.Share]:
    """One sender's shares, smoothed and published, each summing to at most max_share."""
    smoothed = {q: s.smoothed for q, s in lending.items()}
    total = sum(smoothed.values())
    if total > max_share:
        smoothed = {q: v * max_share / total for q, v in smoothed.items()}
    published = {q: s.published for q, s in lending.items()}
    shares.cap_total(published, smoothed, max_share)
    return {
        q: dataclasses.replace(s, smoothed=smoothed[q], published=published[q])
        for q, s in lending.items()
    }


def _targets(
    policy: Policy,
    model: Model,
    loads: Mapping[str, RegionLoad],
    demand: Mapping[str, float],
    own: Mapping[str, float],
    pressure: Mapping[str, float],
    overflowing: Mapping[str, bool],
) -> dict[str, dict[str, float]]:
    """Target shares, sender -> rescuer -> share of the sender's demand.

    Rounds by distance: in round k every sender asks its k-th nearest in-budget rescuer for
    what it still needs, and a rescuer asked for more than its spare grants each request the
    same fraction. Serving senders one by one (most pressed first) let two senders of equal
    need take turns at a shared rescuer, each tick handing it to the other; a proportional
    split is continuous in the inputs and settles.
    """
    senders = sorted(r for r, on in overflowing.items() if on)
    cap = max_lent(model)
    need = {s: min(cap, max(0.0, 1.0 - RELEASE / pressure[s])) for s in senders}
    nearest = {
        s: [q for q in within_budget(policy, model, s) if q in pressure and not overflowing[q]]
        for s in senders
    }
    spare = {q: RESCUE_CEILING * loads[q].capacity - own[q] for q in pressure}
    targets: dict[str, dict[str, float]] = {s: {} for s in senders}
    for k in range(max((len(n) for n in nearest.values()), default=0)):
        asks: dict[str, dict[str, float]] = {}  # rescuer -> sender -> load asked for
        for s in senders:
            if k < len(nearest[s]) and need[s] >= MIN_SHARE:
                asks.setdefault(nearest[s][k], {})[s] = need[s] * demand[s]
        for q, asked in sorted(asks.items()):
            total = sum(asked.values())
            fraction = min(1.0, max(0.0, spare[q]) / total) if total > 0 else 0.0
            for s, load in sorted(asked.items()):
                share = load * fraction / demand[s]
                if share >= MIN_SHARE:
                    targets[s][q] = share
                    need[s] -= share
                    spare[q] -= share * demand[s]
    return targets
