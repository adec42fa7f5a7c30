"""A model's traffic split between versions, per region: `versions` overridden by `canary`.

In a region with canaries, each canary version gets its percentage and the other versions
share the rest in proportion to their `versions` weights; elsewhere (and for nodes of no known
region) `versions` alone decides. Weights go to Envoy in parts per TOTAL, rounded so they add
up to exactly TOTAL.
"""

from __future__ import annotations

import math

from heliostat.policy import Model

TOTAL = 10_000


def version_shares(model: Model, region: str | None) -> dict[str, float]:
    """Each version's share of the model's traffic in `region` (0-1, summing to 1)."""
    weights = model.versions
    if not weights:
        return {}
    canaries = {c.version: c.weight / 100 for c in model.canary if c.region == region}
    rest = max(0.0, 1.0 - sum(canaries.values()))
    others = {v: w for v, w in weights.items() if v not in canaries}
    total = sum(others.values())
    shares = dict(canaries)
    for version, weight in others.items():
        shares[version] = rest * weight / total if total else 0.0
    return {v: shares[v] for v in sorted(weights)}


def version_weights(model: Model, region: str | None) -> dict[str, int]:
    """Integer weights out of TOTAL (largest remainder), versions with none left out."""
    shares = version_shares(model, region)
    exact = {v: share * TOTAL for v, share in shares.items()}
    floors = {v: math.floor(x) for v, x in exact.items()}
    missing = TOTAL - sum(floors.values()) if exact else 0
    for version in sorted(exact, key=lambda v: (floors[v] - exact[v], v))[: max(0, missing)]:
        floors[version] += 1
    return {v: w for v, w in floors.items() if w > 0}
