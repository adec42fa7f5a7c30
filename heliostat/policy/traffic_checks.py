"""Cross-checks of the traffic-policy sections, each problem at the value to edit.

pydantic has checked every value on its own; these rules relate a section to the rest of the
document: versions must exist on endpoints, canaries and tenants must name known regions,
headers heliostat itself routes on cannot be reused, options that would silently be
ignored (status codes without the condition that reads them) are refused, and a fallback
must name another model of the policy without leading back to the model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from heliostat.policy.problems import Problem, did_you_mean
from heliostat.policy.schema import Model, Policy
from heliostat.policy.traffic import RetryOn
from heliostat.policy.yamlsource import Path
from heliostat.wire import MODEL_HEADER, PRIORITY_HEADER, RESERVED_HEADER_PREFIXES

# Headers heliostat's own routes and filters read or write.
RESERVED_HEADERS = frozenset(
    {MODEL_HEADER, PRIORITY_HEADER, "host", "content-type", "content-length"}
)


def check(policy: Policy) -> Iterator[Problem]:
    for index, model in enumerate(policy.spec.models):
        base: Path = ("spec", "models", index)
        yield from _affinity(model, base)
        yield from _breakers(model, base)
        yield from _retries(model, base)
        yield from _versions(policy, model, base)
    yield from _fallbacks(policy)
    yield from _tenants(policy)


def _reserved(header: str) -> str | None:
    if header in RESERVED_HEADERS or header.startswith(RESERVED_HEADER_PREFIXES):
        return f"header {header!r} is used by heliostat itself; choose another name"
    return None


def _affinity(model: Model, base: Path) -> Iterator[Problem]:
    if model.affinity is not None and (message := _reserved(model.affinity.header)):
        yield Problem((*base, "affinity", "header"), message)


def _breakers(model: Model, base: Path) -> Iterator[Problem]:
    breakers = model.circuit_breakers
    for name, breaker in (("interactive", breakers.interactive), ("batch", breakers.batch)):
        if breaker.max_retries is not None and breaker.retry_budget is not None:
            yield Problem(
                (*base, "circuit_breakers", name, "retry_budget"),
                "give max_retries or retry_budget, not both (Envoy ignores max_retries "
                "when a budget is set)",
            )


def _retries(model: Model, base: Path) -> Iterator[Problem]:
    retries = model.retries
    wants_codes = RetryOn.RETRIABLE_STATUS_CODES in retries.retry_on
    if wants_codes and not retries.retriable_status_codes:
        yield Problem(
            (*base, "retries", "retriable_status_codes"),
            "retry_on has retriable-status-codes but no status code is listed",
        )
    explicit_codes = "retriable_status_codes" in retries.model_fields_set
    if retries.retriable_status_codes and explicit_codes and not wants_codes:
        yield Problem(
            (*base, "retries", "retriable_status_codes"),
            "these codes are ignored unless retry_on has retriable-status-codes",
        )
    seen: set[str] = set()
    for position, condition in enumerate(retries.retry_on):
        if condition in seen:
            yield Problem(
                (*base, "retries", "retry_on", position), f"{condition.value!r} is listed twice"
            )
        seen.add(condition)


def _versions(policy: Policy, model: Model, base: Path) -> Iterator[Problem]:
    if not model.versions:
        if model.canary:
            yield Problem(
                (*base, "canary"), "a canary needs the model's versions (versions: {v1: 90, ...})"
            )
        return
    present = {e.version for e in model.endpoints if e.version is not None}
    for version in model.versions:
        if version not in present:
            yield Problem(
                (*base, "versions", version),
                f"no endpoint of model {model.name!r} has version {version!r}"
                f"{did_you_mean(version, sorted(present))}",
            )
    for position, endpoint in enumerate(model.endpoints):
        path = (*base, "endpoints", position)
        if endpoint.version is None:
            yield Problem(
                path, "the model splits traffic by versions: give this endpoint a version"
            )
        elif endpoint.version not in model.versions:
            yield Problem(
                (*path, "version"),
                f"version {endpoint.version!r} is not in the model's versions "
                f"({', '.join(sorted(model.versions))}); it would get no traffic",
            )
    yield from _canaries(policy, model, base)


def _canaries(policy: Policy, model: Model, base: Path) -> Iterator[Problem]:
    regions = policy.spec.regions
    by_region: dict[str, list[int]] = defaultdict(list)
    for position, canary in enumerate(model.canary):
        path = (*base, "canary", position)
        if canary.region not in regions:
            yield Problem(
                (*path, "region"),
                f"unknown region {canary.region!r}{did_you_mean(canary.region, regions)}",
            )
            continue
        if canary.version not in model.versions:
            yield Problem(
                (*path, "version"),
                f"version {canary.version!r} is not in the model's versions"
                f"{did_you_mean(canary.version, model.versions)}",
            )
            continue
        earlier = [model.canary[p] for p in by_region[canary.region]]
        if any(c.version == canary.version for c in earlier):
            yield Problem(
                (*path, "version"),
                f"a second canary for {canary.version!r} in {canary.region!r}",
            )
            continue
        by_region[canary.region].append(position)
    for region, positions in by_region.items():
        total = sum(model.canary[p].weight for p in positions)
        covered = {model.canary[p].version for p in positions}
        last = (*base, "canary", positions[-1], "weight")
        if total > 100:
            yield Problem(last, f"canary weights in {region!r} add up to {total:g}% (over 100)")
        elif covered == set(model.versions) and total != 100:
            yield Problem(
                last,
                f"canary weights in {region!r} cover every version but add up to {total:g}%, "
                "not 100",
            )


def _tenants(policy: Policy) -> Iterator[Problem]:
    regions = policy.spec.regions
    names: dict[str, int] = {}
    selectors: dict[tuple[str, str], int] = {}
    for index, tenant in enumerate(policy.spec.tenants):
        path: Path = ("spec", "tenants", index)
        if tenant.name in names:
            yield Problem(
                (*path, "name"),
                f"duplicate tenant {tenant.name!r} (first at spec.tenants[{names[tenant.name]}])",
            )
        names.setdefault(tenant.name, index)
        if message := _reserved(tenant.header):
            yield Problem((*path, "header"), message)
        selector = (tenant.header, tenant.value)
        if selector in selectors:
            yield Problem(
                (*path, "value"),
                f"spec.tenants[{selectors[selector]}] already matches "
                f"{tenant.header}: {tenant.value}",
            )
        selectors.setdefault(selector, index)
        if not tenant.regions:
            yield Problem((*path, "regions"), "a tenant needs at least one region")
        for position, region in enumerate(tenant.regions):
            if region not in regions:
                yield Problem(
                    (*path, "regions", position),
                    f"unknown region {region!r}{did_you_mean(region, regions)}",
                )
        for model in policy.spec.models:
            if model.affinity is not None and model.affinity.header == tenant.header:
                yield Problem(
                    (*path, "header"),
                    f"model {model.name!r} hashes sessions on {tenant.header!r}; "
                    "a tenant needs its own header",
                )


def _fallbacks(policy: Policy) -> Iterator[Problem]:
    """The fallback is another model of this policy, and following fallbacks never returns.

    A cycle is reported once, at its first member in the file: one edit breaks it.
    """
    models = {m.name: m for m in policy.spec.models}
    reported: set[str] = set()
    for index, model in enumerate(policy.spec.models):
        if model.fallback is None:
            continue
        path: Path = ("spec", "models", index, "fallback", "model")
        target = model.fallback.model
        if target == model.name:
            yield Problem(path, f"model {model.name!r} cannot fall back to itself")
            continue
        if target not in models:
            others = [name for name in models if name != model.name]
            yield Problem(
                path,
                f"unknown model {target!r}{did_you_mean(target, others)}; the fallback must "
                f"be another model of this policy ({', '.join(sorted(others)) or 'none'})",
            )
            continue
        chain = [model.name]
        current: str | None = target
        while current is not None and current not in chain and current in models:
            chain.append(current)
            following = models[current].fallback
            current = following.model if following is not None else None
        if current == model.name and model.name not in reported:
            reported.update(chain)
            yield Problem(
                path,
                f"fallback cycle {' -> '.join([*chain, model.name])}: a model cannot fall "
                "back, directly or through others, to itself",
            )
