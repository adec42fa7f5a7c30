"""Which clusters one region's Envoys get, and where each kind of request of a model goes.

A model's requests come in kinds: which tenant sent them (or none) and which priority class
(interactive or batch). Each kind is sent to one cluster or, with versions, split between
per-version clusters. The clusters are the control law's own (`<model>`, `<model>.batch`) and
clusters derived from them in this layer (`<model>~<tenant>`, `...@<version>`), so the
traffic policy works on whatever views the law computes. A kind's requests may also move to
the model's fallback model while the view gives it a share (`fallback.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from heliostat.balance import ClusterView, RegionView, TrafficClass
from heliostat.planning import caps
from heliostat.planning.fallback import FallbackRoute, fallback_routes
from heliostat.planning.subsets import PickMemo, region_subset, version_subset
from heliostat.planning.versions import version_weights
from heliostat.policy import Model, Policy
from heliostat.policy.traffic import Tenant

Kind = tuple[str | None, TrafficClass]
"""(tenant name or None, priority class)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Clusters with their weights; a single entry is a plain cluster route."""

    clusters: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model: Model
    targets: Mapping[Kind, Target]
    # By tenant (None: the generic routes): the fallback this view applies now, if any.
    fallbacks: Mapping[str | None, FallbackRoute] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Derivation:
    """What a derived cluster is: the control law's cluster it keeps a subset of, and for
    which tenant (its regions only) and which version (its endpoints only)."""

    derived_from: str
    model: str
    tenant: str | None
    version: str | None

    @property
    def kind(self) -> str:
        """ "tenant", "version" or "tenant+version"."""
        return "+".join(k for k, v in (("tenant", self.tenant), ("version", self.version)) if v)


@dataclass(frozen=True, slots=True)
class Plan:
    clusters: Mapping[str, tuple[ClusterView, Model]]
    models: tuple[ModelPlan, ...]
    tenants: tuple[Tenant, ...]
    # By cluster name, for the clusters this layer derives (not the control law's own).
    derivations: Mapping[str, Derivation] = field(default_factory=dict)


def plan(policy: Policy, view: RegionView, picks: PickMemo | None = None) -> Plan:
    """The clusters of the view and those derived from them, and each kind of request's
    targets. `picks` lets the caller's earlier views share their subsets (`subsets`)."""
    clusters: dict[str, tuple[ClusterView, Model]] = {}
    for cluster_view in view.clusters:
        model = policy.model(cluster_view.model)
        if model is None:  # a view always comes from this policy; guard against misuse
            raise ValueError(f"view names model {cluster_view.model!r} the policy lacks")
        clusters[cluster_view.name] = (cluster_view, model)
    derivations: dict[str, Derivation] = {}
    models = []
    for model in policy.spec.models:
        interactive = view.cluster(model.name)
        if interactive is None:
            raise ValueError(f"the view has no cluster for model {model.name!r}")
        batch = next(
            (
                c
                for c in view.clusters
                if c.model == model.name and c.traffic_class is TrafficClass.BATCH
            ),
            interactive,  # before the control law runs, batch shares the model's cluster
        )
        weights = version_weights(model, view.region)
        # The interactive cap split over the clusters a gateway routes to (`caps`): the
        # generic one and each tenant's holding this region's slots, by version.
        holding = [t.name for t in policy.spec.tenants if view.region in t.regions]
        split = caps.split(interactive, [None, *holding], weights)
        targets: dict[Kind, Target] = {}
        for tenant in (None, *policy.spec.tenants):
            for traffic_class, source in (
                (TrafficClass.BATCH, batch),
                (TrafficClass.INTERACTIVE, interactive),
            ):
                tenant_name = tenant.name if tenant else None
                scoped = source
                if tenant is not None:
                    scoped = region_subset(source, tenant.name, frozenset(tenant.regions), picks)
                derived = (
                    [scoped] if not weights else [version_subset(scoped, v, picks) for v in weights]
                )
                if split and source is interactive:  # batch shares it before the law runs
                    derived = [
                        dataclasses.replace(c, max_requests=split.get((tenant_name, v)))
                        for c, v in zip(derived, weights or [None], strict=True)
                    ]
                    if tenant is None and not weights:  # the law's own cluster, its share
                        clusters[derived[0].name] = (derived[0], model)
                for cluster_view, version in zip(derived, weights or [None], strict=True):
                    clusters.setdefault(cluster_view.name, (cluster_view, model))
                    if cluster_view.name != source.name:
                        derivations[cluster_view.name] = Derivation(
                            source.name, model.name, tenant_name, version
                        )
                split_weights = list(weights.values()) or [1]
                targets[tenant_name, traffic_class] = Target(
                    tuple((c.name, w) for c, w in zip(derived, split_weights, strict=True))
                )
        models.append(ModelPlan(model, targets, fallback_routes(policy, model, view)))
    return Plan(clusters, tuple(models), policy.spec.tenants, derivations)
