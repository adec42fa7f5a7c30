"""Rules that relate one part of a policy to another.

pydantic checks each value on its own; these checks need the whole document (is this region
declared? is every pair of regions given an RTT?). Each returns problems with the path of the
value an operator must edit, so the error points at the line to fix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import combinations

from heliostat.policy import traffic_checks
from heliostat.policy.problems import Problem, did_you_mean
from heliostat.policy.schema import Model, Policy
from heliostat.policy.yamlsource import Path
from heliostat.samples import SourceKind


def check(policy: Policy) -> list[Problem]:
    return [*_regions(policy), *_models(policy), *traffic_checks.check(policy)]


def _regions(policy: Policy) -> Iterator[Problem]:
    regions = policy.spec.regions
    if not regions:
        yield Problem(("spec", "regions"), "at least one region is required")
        return
    for name, region in regions.items():
        for peer, rtt in region.rtt_ms.items():
            path = ("spec", "regions", name, "rtt_ms", peer)
            if peer not in regions:
                yield Problem(path, f"unknown region {peer!r}{did_you_mean(peer, regions)}")
            elif rtt < 0:
                yield Problem(path, f"RTT must not be negative (got {rtt:g})")
            elif peer == name and rtt != 0:
                yield Problem(path, "a region's RTT to itself is 0; remove this entry")
    for a, b in combinations(regions, 2):
        forward = regions[a].rtt_ms.get(b)
        backward = regions[b].rtt_ms.get(a)
        if forward is None and backward is None:
            yield Problem(
                ("spec", "regions", a),
                f"missing RTT between {a!r} and {b!r} (give rtt_ms on either side)",
            )
        elif forward is not None and backward is not None and forward != backward:
            yield Problem(
                ("spec", "regions", b, "rtt_ms", a),
                f"RTT is symmetric but {a!r}->{b!r} is {forward:g} ms and "
                f"{b!r}->{a!r} is {backward:g} ms; give it once",
            )


def _models(policy: Policy) -> Iterator[Problem]:
    regions = policy.spec.regions
    if not policy.spec.models:
        yield Problem(("spec", "models"), "at least one model is required")
    seen_models: dict[str, int] = {}
    for index, model in enumerate(policy.spec.models):
        yield from _drain(model, ("spec", "models", index), regions)
        base = ("spec", "models", index)
        if model.name in seen_models:
            yield Problem(
                (*base, "name"),
                f"duplicate model name {model.name!r} "
                f"(first at spec.models[{seen_models[model.name]}])",
            )
        seen_models.setdefault(model.name, index)
        yield from _signals(model, base)
        yield from _endpoints(model, base, index, regions)


def _signals(model: Model, base: Path) -> Iterator[Problem]:
    signals = model.signals
    if signals.source is SourceKind.PROMETHEUS and not signals.prometheus_url:
        yield Problem((*base, "signals", "prometheus_url"), "required when source is prometheus")
    if signals.timeout > signals.interval:
        yield Problem((*base, "signals", "timeout"), "must not be longer than the interval")
    if signals.stale_after < signals.interval:
        yield Problem((*base, "signals", "stale_after"), "must be at least the interval")
    if signals.interval <= 0:
        yield Problem((*base, "signals", "interval"), "must be longer than 0")
    # The scraper refuses it (ScrapeTarget): serve would not start with it.
    if signals.timeout <= 0:
        yield Problem((*base, "signals", "timeout"), "must be longer than 0")


def _endpoints(
    model: Model, base: Path, index: int, regions: Mapping[str, object]
) -> Iterator[Problem]:
    if not model.endpoints and model.kubernetes is None:
        yield Problem(
            (*base, "endpoints"), "at least one endpoint (or a kubernetes selector) is required"
        )
    if model.kubernetes is not None and model.kubernetes.region is not None:
        region = model.kubernetes.region
        if region not in regions:
            yield Problem(
                (*base, "kubernetes", "region"),
                f"unknown region {region!r}{did_you_mean(region, regions)}",
            )
    seen_addresses: dict[str, int] = {}
    for position, endpoint in enumerate(model.endpoints):
        path = (*base, "endpoints", position)
        if endpoint.region not in regions:
            yield Problem(
                (*path, "region"),
                f"unknown region {endpoint.region!r}{did_you_mean(endpoint.region, regions)}",
            )
        if endpoint.address in seen_addresses:
            first = seen_addresses[endpoint.address]
            yield Problem(
                (*path, "address"),
                f"duplicate endpoint address {endpoint.address!r} "
                f"(first at spec.models[{index}].endpoints[{first}])",
            )
        seen_addresses.setdefault(endpoint.address, position)


def _drain(model: Model, base: Path, regions: Mapping[str, object]) -> Iterator[Problem]:
    addresses = [e.address for e in model.endpoints]
    for position, address in enumerate(model.drain.endpoints):
        if address not in addresses:
            yield Problem(
                (*base, "drain", "endpoints", position),
                f"{address!r} is not an endpoint of model {model.name!r}"
                f"{did_you_mean(address, addresses)}",
            )
    for position, region in enumerate(model.drain.regions):
        if region not in regions:
            yield Problem(
                (*base, "drain", "regions", position),
                f"unknown region {region!r}{did_you_mean(region, regions)}",
            )
