"""Locality priorities: the view's own region first, then the others by round trip.

Envoy fails over priority by priority, so the order of priorities is the order in which a
region's traffic will look elsewhere. Regions beyond the model's network budget would break
its latency SLO on every request they serve; they come last, as a last resort, or never.
"""

from __future__ import annotations

from heliostat.policy import Model, Policy


def region_priorities(
    policy: Policy, model: Model, region: str | None, *, beyond_budget: bool = True
) -> dict[str, int]:
    """Priority (0 = first choice) of every region for traffic that starts in `region`.

    With `region` None (a node whose region the policy does not know) there is no
    preference: every region gets priority 0. Regions left out of the result get no traffic.
    """
    regions = sorted(policy.spec.regions)
    if region is None or region not in policy.spec.regions:
        return dict.fromkeys(regions, 0)
    budget = model.slo.network_budget_ms
    others = sorted((policy.rtt_ms(region, r), r) for r in regions if r != region)
    within = [r for rtt, r in others if rtt <= budget]
    beyond = [r for rtt, r in others if rtt > budget] if beyond_budget else []
    return {r: priority for priority, r in enumerate([region, *within, *beyond])}


def within_budget(policy: Policy, model: Model, region: str) -> list[str]:
    """Other regions a request from `region` may reach inside the model's network budget.

    Nearest first (ties by name): the order in which overflow looks for rescuers.
    """
    budget = model.slo.network_budget_ms
    others = sorted((policy.rtt_ms(region, r), r) for r in policy.spec.regions if r != region)
    return [r for rtt, r in others if rtt <= budget]
