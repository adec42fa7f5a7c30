"""A region's in-flight cap split over the clusters derived from its view.

While a region refuses and keeps its users at home, the control law caps what each of its
gateways has in flight on a model's interactive cluster (`balance.refusal.in_flight`: the
region's slots plus the backlog its users can wait behind within the SLO, split over its
gateways; Envoy's max_requests). Every Envoy cluster has its own circuit breaker, so a
derived cluster that inherited the whole cap would let one gateway hold that cap on each
cluster, all on the same replicas: a version's cluster could send the region's whole cap
to its part of the replicas, and the generic and every tenant's cluster could each hold the
whole cap at once. So the cap C (per gateway) is split, and the caps of the clusters a
gateway routes a model's interactive requests to add up to C:

- Between the clusters holding the region's own slots (the generic one and the cluster of
  each tenant whose regions include the region), equally: the law measures demand per
  (model, region) at the gateways (LRS on the model's clusters, `balance.demand`), not per
  tenant, and a tenant has no share in the policy. A split by a demand the law does not
  have would be a guess that moves every tick; an equal one holds, and an idle tenant's
  part is the price. A tenant's cluster without the region's endpoints sends its requests
  elsewhere, to replicas this cap does not size: it is not capped by it (None).
- Between versions (by `planning.versions` weights w_v), each gets its own live slots in
  the region over the gateways, s_v / g, and the tolerated backlog, B = C - S / g (S all
  of the region's live slots), in proportion to its traffic share: s_v / g + w_v B. A
  version's cluster sends only to its replicas: with the whole cap, a 50/50 split let each
  version queue the region's cap on half of the slots. A version without live slots in
  the region fails over elsewhere: not capped (None).

Each (tenant, version) part is w_t (s_v / g + w_v B) with w_t the tenant's equal share; the
parts are rounded to integers adding up to their sum rounded up (at most C, an integer at
least their sum) by largest remainder, then raised to 1 where a cluster holds live slots
(Envoy refuses every request of a cluster whose max_requests is 0): so the sum is at most C
plus one per cluster. The split is a function of C, the slots and the policy, no state: a
derived cap moves only when the region's cap moves (which `refusal.in_flight` moves only by
more than one request) or its live slots change, not with the measured rates. With
versions the law's own cluster is routed to by no request and keeps C. Translation keeps
each cap at most the operator's own max_requests (`xds.translate.resilience`). Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from heliostat.balance import ClusterView

Part = tuple[str | None, str | None]
"""(tenant name or None for the generic cluster, version or None without versions)."""


def split(
    view: ClusterView,
    tenants: Sequence[str | None],
    weights: Mapping[str, int],
) -> dict[Part, int | None]:
    """Each (tenant, version)'s cap out of `view.max_requests` (see the module): `tenants`
    lists the clusters holding the region's own slots (None: the generic one), `weights`
    the versions' integer weights (empty: no versions). Empty when `view` is not capped."""
    cap = view.max_requests
    if cap is None:
        return {}
    info = view.in_flight
    gateways = info.gateways if info is not None else 1
    slots: dict[str | None, int] = dict(info.slots) if info is not None else {}
    total_weight = sum(weights.values())
    if weights and total_weight > 0:
        everything = sum(slots.values())
        backlog = max(0.0, cap - everything / gateways)
        per_version: dict[str | None, float] = {
            v: slots.get(v, 0) / gateways + backlog * w / total_weight
            for v, w in weights.items()
            if slots.get(v, 0) > 0 or info is None
        }
        versions: list[str | None] = list(weights)
    else:
        per_version = {None: float(cap)}
        versions = [None]
    holders = list(dict.fromkeys(tenants))
    exact = {(t, v): x / len(holders) for t in holders for v, x in per_version.items()}
    rounded = apportion(exact)
    result: dict[Part, int | None] = {(t, v): None for t in holders for v in versions}
    for part, value in rounded.items():
        result[part] = max(1, value)
    return result


def apportion(exact: Mapping[Part, float]) -> dict[Part, int]:
    """Integers adding up to the sum of `exact` rounded up (largest remainder, ties by
    order): at most the cap they split, an integer at least their sum."""
    if not exact:
        return {}
    total = math.ceil(sum(exact.values()) - 1e-9)
    floors = {k: math.floor(x + 1e-9) for k, x in exact.items()}
    missing = total - sum(floors.values())
    order = sorted(exact, key=lambda k: floors[k] - exact[k])
    for key in order[: max(0, missing)]:
        floors[key] += 1
    return floors
