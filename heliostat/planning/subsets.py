"""Clusters derived from the control law's views: one version's endpoints, one tenant's regions.

A derived cluster keeps everything the control law decided for the model (localities,
priorities, locality and endpoint weights, health, drop percentage) and only leaves endpoints
out. So whatever the law computes, a version's overflow to another region stays on that
version, and a tenant's failover never leaves its regions: the endpoints simply are not there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from heliostat.balance import ClusterView, EndpointView, LocalityView
from heliostat.wire import TENANT_SEPARATOR, VERSION_SEPARATOR


def subset(view: ClusterView, name: str, keep: Callable[[EndpointView], bool]) -> ClusterView:
    """`view` renamed, holding only the endpoints `keep` accepts.

    Localities left empty are dropped and priorities renumbered 0..N without gaps, as Envoy
    requires; their order and every other decision of the view are kept.
    """
    localities: list[LocalityView] = []
    for locality in view.localities:
        endpoints = tuple(e for e in locality.endpoints if keep(e))
        if endpoints:
            localities.append(dataclasses.replace(locality, endpoints=endpoints))
    ranks = {p: i for i, p in enumerate(sorted({loc.priority for loc in localities}))}
    dense = tuple(dataclasses.replace(loc, priority=ranks[loc.priority]) for loc in localities)
    return dataclasses.replace(view, name=name, localities=dense)


def version_subset(view: ClusterView, version: str) -> ClusterView:
    return subset(view, f"{view.name}{VERSION_SEPARATOR}{version}", lambda e: e.version == version)


def region_subset(view: ClusterView, label: str, regions: frozenset[str]) -> ClusterView:
    return subset(view, f"{view.name}{TENANT_SEPARATOR}{label}", lambda e: e.region in regions)
