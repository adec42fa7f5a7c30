"""JSON for /debug/state: every view with its clusters and endpoints, every node's sync.

Each cluster says what it refuses and why (`drop_overload_percent`, `drop_reason`) and how
its localities are weighted and why (`localities[].reason`: the overflow shares the
allocation published for this view's users); the allocation itself, per region, is in the
control law's decisions (`control.decisions`).

A view lists, by cluster name, the control law's clusters (`<model>`, `<model>.batch`) and,
given the policy, the clusters the traffic policy derives from them for this view's Envoys
(`<model>@<version>`, `<model>~<tenant>`, `<model>~<tenant>@<version>`), each saying what it
was derived from; those are the clusters Envoy really holds. A model's own cluster also
carries its fallback: the share of its requests this view sends to the fallback model and
why, and the same for each tenant's pinned requests.
"""

from __future__ import annotations

from typing import Any

from heliostat.balance import ClusterView, FallbackView, RegionView, Views
from heliostat.planning import Derivation, plan
from heliostat.policy import Policy
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc.registry import StreamRegistry


def describe_views(views: Views, policy: Policy | None = None) -> dict[str, Any]:
    regions = {region: _region(view, policy) for region, view in sorted(views.by_region.items())}
    return {"regions": regions, "neutral": _region(views.neutral, policy)}


def _region(view: RegionView, policy: Policy | None) -> dict[str, Any]:
    result = {cluster.name: _cluster(cluster, view) for cluster in view.clusters}
    if policy is None:
        return result
    try:
        planned = plan(policy, view)
    except ValueError:  # views of another policy (a reload in between): nothing to derive
        return result
    for name, derivation in sorted(planned.derivations.items()):
        if name not in result:
            cluster, _model = planned.clusters[name]
            result[name] = {**_cluster(cluster, view), **_derivation(derivation)}
    return result


def _cluster(cluster: ClusterView, view: RegionView) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": cluster.model,
        "traffic_class": cluster.traffic_class.value,
        "drop_overload_percent": cluster.drop_overload_percent,
        "drop_reason": cluster.drop_reason or None,
        "localities": [
            {
                "region": locality.region,
                "priority": locality.priority,
                "weight": locality.weight,
                **({"reason": dict(locality.reason)} if locality.reason else {}),
            }
            for locality in cluster.localities
        ],
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
    if cluster.balancing is not None:  # a model with affinity: hashing or not, and why
        entry["lb_policy"] = cluster.balancing.policy.value
        entry["lb_reason"] = dict(cluster.balancing.reason)
    if cluster.name == cluster.model:
        own = view.fallback(cluster.model)
        if own is not None:
            entry["fallback"] = _fallback(own)
            entry["tenant_fallbacks"] = {
                f.tenant: _fallback(f)
                for f in view.fallbacks
                if f.model == cluster.model and f.tenant is not None
            }
    return entry


def _fallback(fallback: FallbackView) -> dict[str, Any]:
    return {"model": fallback.fallback, "share": fallback.share, "reason": dict(fallback.reason)}


def _derivation(derivation: Derivation) -> dict[str, Any]:
    """What the plan says a derived cluster is: its source cluster, its version, its tenant."""
    return {
        "derived_from": derivation.derived_from,
        "kind": derivation.kind,
        "tenant": derivation.tenant,
        "version": derivation.version,
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
