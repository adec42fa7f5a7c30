"""Which of a model's requests move to its fallback model in a view, and with what share.

The control law gives each view a fallback share per model (and per tenant); a share above
zero becomes a FallbackRoute for the model's generic routes or for one tenant's. A tenant
gets one only when the fallback model has endpoints in the tenant's regions in this view, so
a moved request is still served where the tenant is pinned. How the routes carry it to
Envoy's Lua program is translation's business (`heliostat.xds.translate.fallback`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from heliostat.balance import RegionView
from heliostat.balance.view import ReasonValue
from heliostat.policy import Model, Policy
from heliostat.policy.traffic import Tenant


@dataclass(frozen=True, slots=True)
class FallbackRoute:
    """Routes of `model` whose requests move to `target` with probability `share`."""

    model: Model
    target: Model
    share: float
    reason: Mapping[str, ReasonValue]


def fallback_routes(
    policy: Policy, model: Model, view: RegionView
) -> dict[str | None, FallbackRoute]:
    """By tenant (None: the generic routes), the fallback that applies in this view now."""
    result: dict[str | None, FallbackRoute] = {}
    tenants: tuple[Tenant | None, ...] = (None, *policy.spec.tenants)
    for tenant in tenants:
        name = tenant.name if tenant else None
        decided = view.fallback(model.name, name)
        if decided is None or decided.share <= 0.0:
            continue
        target = policy.model(decided.fallback)
        if target is None:  # a view always comes from this policy; guard against misuse
            raise ValueError(f"view names fallback model {decided.fallback!r} the policy lacks")
        if tenant is not None and not _serves_in(view, target, frozenset(tenant.regions)):
            continue  # the pinning would leave nothing to serve the moved requests
        result[name] = FallbackRoute(model, target, decided.share, decided.reason)
    return result


def _serves_in(view: RegionView, model: Model, regions: frozenset[str]) -> bool:
    cluster = view.cluster(model.name)
    return cluster is not None and any(e.region in regions for e in cluster.endpoints())
