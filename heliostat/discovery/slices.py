"""EndpointSlices (as the API server's JSON) -> a model's endpoints. Pure: no client, no I/O.

Conditions map the way kube-proxy reads them: `ready` is in rotation; `terminating` but still
`serving` finishes what it has and takes nothing new (heliostat's draining); anything else is
left out. A missing condition means what the API documents: ready and serving unknown count
as true, terminating unknown as false. The result is sorted, so two heliostat replicas that
saw the same slices build byte-identical snapshots whatever order the events came in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from heliostat.policy.schema import Endpoint, canonical_address
from heliostat.policy.selector import KubernetesSelector

JsonObject = Mapping[str, Any]


@dataclass(frozen=True)
class ModelEndpoints:
    """What one source knows about one model's replicas."""

    endpoints: tuple[Endpoint, ...] = ()
    # Addresses (among `endpoints`) that take no new requests: terminating but still serving.
    draining: frozenset[str] = frozenset()
    # Why slices or endpoints were left out, one short line each (logged once, shown in state).
    skipped: tuple[str, ...] = field(default=(), compare=False)


def endpoints_from_slices(
    slices: Iterable[JsonObject],
    selector: KubernetesSelector,
    regions: Collection[str],
) -> ModelEndpoints:
    found: dict[str, tuple[Endpoint, bool]] = {}  # address -> (endpoint, draining)
    skipped: list[str] = []
    for item in slices:
        where = _name(item)
        labels: Mapping[str, str] = item.get("metadata", {}).get("labels") or {}
        kind = item.get("addressType")
        if kind not in ("IPv4", "IPv6"):
            skipped.append(f"{where}: addressType {kind!r} is not an IP family")
            continue
        port = _port(item.get("ports") or [], selector)
        if isinstance(port, str):
            skipped.append(f"{where}: {port}")
            continue
        region = labels.get(selector.region_label, selector.region)
        if region is None:
            skipped.append(f"{where}: no {selector.region_label} label and no kubernetes.region")
            continue
        if region not in regions:
            skipped.append(f"{where}: region {region!r} is not in spec.regions")
            continue
        version = labels.get(selector.version_label)
        for entry in item.get("endpoints") or []:
            state = _state(entry.get("conditions") or {})
            addresses = entry.get("addresses") or []
            if state is None or not addresses:
                continue
            host = addresses[0]
            text = f"[{host}]:{port}" if kind == "IPv6" else f"{host}:{port}"
            try:
                address = canonical_address(text)
                endpoint = Endpoint.model_validate(
                    {
                        "address": address,
                        "region": region,
                        "version": version,
                        "slots": selector.slots,
                    }
                )
            except ValueError as exc:
                skipped.append(f"{where}: {str(exc).splitlines()[0]}")
                continue
            draining = state == "draining"
            known = found.get(address)
            # The same replica in two slices (a Service being re-sliced): in rotation wins.
            if known is None or (known[1] and not draining):
                found[address] = (endpoint, draining)
    ordered = sorted(found.items())
    return ModelEndpoints(
        endpoints=tuple(endpoint for _, (endpoint, _) in ordered),
        draining=frozenset(address for address, (_, draining) in ordered if draining),
        skipped=tuple(skipped),
    )


def _state(conditions: JsonObject) -> str | None:
    """'serving', 'draining', or None when the endpoint takes no traffic at all."""
    ready = conditions.get("ready") is not False
    serving = conditions.get("serving", ready) is not False
    terminating = conditions.get("terminating") is True
    if terminating:
        return "draining" if serving else None
    return "serving" if ready else None


def _port(ports: list[JsonObject], selector: KubernetesSelector) -> int | str:
    """The port number to use, or why there is none."""
    wanted = selector.port
    if wanted is None:
        if len(ports) != 1:
            return f"{len(ports)} ports and no kubernetes.port to choose one"
        chosen: JsonObject | None = ports[0]
    else:
        key = "name" if isinstance(wanted, str) else "port"
        chosen = next((p for p in ports if p.get(key) == wanted), None)
        if chosen is None:
            return f"no port {wanted!r}"
    number = chosen.get("port") if chosen else None
    if not isinstance(number, int) or not 0 < number < 65536:
        return f"port {chosen!r} has no number (a Service without ports?)"
    return number


def _name(item: JsonObject) -> str:
    metadata = item.get("metadata") or {}
    return f"EndpointSlice {metadata.get('namespace', '?')}/{metadata.get('name', '?')}"
