"""JSON for /debug/state: every view with its clusters and endpoints, every node's sync."""

from __future__ import annotations

from typing import Any

from heliostat.balance import RegionView, Views
from heliostat.xds.cache import SnapshotCache
from heliostat.xds.registry import StreamRegistry


def describe_views(views: Views) -> dict[str, Any]:
    regions = {region: _region(view) for region, view in sorted(views.by_region.items())}
    return {"regions": regions, "neutral": _region(views.neutral)}


def _region(view: RegionView) -> dict[str, Any]:
    return {
        cluster.name: {
            "model": cluster.model,
            "drop_overload_percent": cluster.drop_overload_percent,
            "endpoints": [
                {
                    "address": e.address,
                    "region": locality.region,
                    "version": e.version,
                    "priority": locality.priority,
                    "locality_weight": locality.weight,
                    "weight": e.weight,
                    "health": e.health.value,
                    "reason": dict(e.reason),
                }
                for locality in cluster.localities
                for e in locality.endpoints
            ],
        }
        for cluster in view.clusters
    }


def describe_nodes(streams: StreamRegistry) -> list[dict[str, Any]]:
    return [entry.as_json() for entry in streams.entries()]


def describe_snapshots(cache: SnapshotCache) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for group in cache.groups():
        snapshot = cache.get(group)
        if snapshot is not None:
            result[group.key] = {"version": snapshot.version, "watchers": cache.watched(group)}
    return result
