"""Views straight from the policy, before any signal arrives.

Every endpoint gets the same neutral weight and is assumed healthy; only the locality
priorities differ per region. This is what heliostat serves at start-up and whenever it has
no signals. It is the control law's own answer for "no signals at all" (so start-up and the
first ticks agree on priorities and locality weights), minus the batch clusters: before any
signal there is nothing to shed, and batch requests use the model's cluster until the law runs.
"""

from __future__ import annotations

import dataclasses

from heliostat.balance.law import compute
from heliostat.balance.view import RegionView, TrafficClass, Views
from heliostat.balance.weights import NEUTRAL as NEUTRAL_WEIGHT
from heliostat.policy import Policy

__all__ = ["NEUTRAL_WEIGHT", "static_views"]


def static_views(policy: Policy) -> Views:
    views, _ = compute(policy, {}, None, now=0.0)
    return Views(
        by_region={r: _interactive(v) for r, v in views.by_region.items()},
        neutral=_interactive(views.neutral),
    )


def _interactive(view: RegionView) -> RegionView:
    clusters = tuple(c for c in view.clusters if c.traffic_class is TrafficClass.INTERACTIVE)
    return dataclasses.replace(view, clusters=clusters)
