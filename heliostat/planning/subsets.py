"""Clusters derived from the control law's views: one version's endpoints, one tenant's regions.

A derived cluster keeps everything the control law decided for the model (localities,
priorities, locality and endpoint weights, health, drop percentage) and only leaves endpoints
out. So whatever the law computes, a version's overflow to another region stays on that
version, and a tenant's failover never leaves its regions: the endpoints simply are not there.

Every node group's snapshot derives its clusters again on every tick, over every endpoint of
the fleet, so the filters a traffic policy uses (an endpoint's version, its region) run in C
(`_having`): a Python predicate per endpoint was the largest part of a publish. A caller that
derives the same clusters for several views passes `picks` (translation's round memo): the
control law hands every view of a model the same endpoint tuple per region, so a locality's
subset is filtered once per tick, not once per view and cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from itertools import compress
from operator import attrgetter
from typing import Protocol

from heliostat.balance import ClusterView, EndpointView, LocalityView
from heliostat.wire import TENANT_SEPARATOR, VERSION_SEPARATOR

Pick = Callable[[tuple[EndpointView, ...]], tuple[EndpointView, ...]]
Picked = tuple[tuple[EndpointView, ...], tuple[EndpointView, ...]]  # (source, its subset)


class PickMemo(Protocol):
    """Subsets already picked, by (id of the source tuple, attribute, accepted values); a
    value pins its source tuple, so an id found is that very tuple."""

    def get(self, key: tuple[int, str, Hashable], /) -> Picked | None: ...
    def put(self, key: tuple[int, str, Hashable], value: Picked, /) -> None: ...


def subset(view: ClusterView, name: str, keep: Callable[[EndpointView], bool]) -> ClusterView:
    """`view` renamed, holding only the endpoints `keep` accepts.

    Localities left empty are dropped and priorities renumbered 0..N without gaps, as Envoy
    requires; their order and every other decision of the view are kept.
    """
    return _derive(view, name, lambda endpoints: tuple(filter(keep, endpoints)))


def version_subset(view: ClusterView, version: str, picks: PickMemo | None = None) -> ClusterView:
    name = f"{view.name}{VERSION_SEPARATOR}{version}"
    return _derive(view, name, _having("version", frozenset({version}), picks))


def region_subset(
    view: ClusterView, label: str, regions: frozenset[str], picks: PickMemo | None = None
) -> ClusterView:
    return _derive(view, f"{view.name}{TENANT_SEPARATOR}{label}", _having("region", regions, picks))


def _having(attribute: str, accepted: frozenset[str], picks: PickMemo | None) -> Pick:
    """The endpoints whose `attribute` is in `accepted`, in order (read and tested in C;
    from `picks` when this tuple was filtered the same way before)."""
    read = attrgetter(attribute)
    test = accepted.__contains__

    def pick(endpoints: tuple[EndpointView, ...]) -> tuple[EndpointView, ...]:
        if picks is None:
            return tuple(compress(endpoints, map(test, map(read, endpoints))))
        key = (id(endpoints), attribute, accepted)
        hit = picks.get(key)
        if hit is not None:
            return hit[1]
        picked = tuple(compress(endpoints, map(test, map(read, endpoints))))
        picks.put(key, (endpoints, picked))
        return picked

    return pick


def _derive(view: ClusterView, name: str, pick: Pick) -> ClusterView:
    """`view` renamed with `pick` applied to every locality (see `subset`). A locality
    that keeps every endpoint and its priority is the very same object, so translation's
    memo (keyed by identity) reuses what it built for the source cluster."""
    localities: list[LocalityView] = []
    for locality in view.localities:
        endpoints = pick(locality.endpoints)
        if len(endpoints) == len(locality.endpoints):
            localities.append(locality)
        elif endpoints:
            localities.append(dataclasses.replace(locality, endpoints=endpoints))
    ranks = {p: i for i, p in enumerate(sorted({loc.priority for loc in localities}))}
    dense = tuple(_ranked(loc, ranks[loc.priority]) for loc in localities)
    return dataclasses.replace(view, name=name, localities=dense)


def _ranked(locality: LocalityView, priority: int) -> LocalityView:
    """The locality at `priority`: itself when it already is there."""
    if locality.priority == priority:
        return locality
    return dataclasses.replace(locality, priority=priority)
