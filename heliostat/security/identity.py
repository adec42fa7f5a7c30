"""Which node a client certificate speaks for, and whether the node it claims is that one.

A node tells heliostat who it is in its first DiscoveryRequest (node id, `locality.region`),
and the region decides the view it is sent; with mTLS, the claim has to be backed by the
client certificate the CA signed. The certificate names the node in a subject alternative
name, in one of two forms:

- SPIFFE URI `spiffe://TRUST_DOMAIN/ns/REGION/sa/NODE_ID` (the path SPIRE and Istio issue
  for a workload: namespace = the node's region, service account = its node id);
- DNS name `NODE_ID.REGION.ANY.SUFFIX` (first label the node id, second the region), for a CA
  that only issues DNS names.

Any one SAN that names exactly the claimed (node id, region) is enough; a certificate that
names a different node or region, or no node at all, is refused, and so is a stream without
a client certificate. With `trust_domain` set, SPIFFE IDs of other trust domains never match.
Pure: the server hands in the SANs it read from the TLS session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    region: str
    source: str  # the SAN it was read from, for logs


def identities(sans: Iterable[str], trust_domain: str | None = None) -> list[Identity]:
    """Every (node id, region) the certificate's SANs name, in their order."""
    found = []
    for san in sans:
        identity = _from_spiffe(san, trust_domain) if "://" in san else _from_dns(san)
        if identity is not None:
            found.append(identity)
    return found


def refusal(
    node_id: str, region: str, sans: Iterable[str], trust_domain: str | None = None
) -> str | None:
    """None when the certificate backs the claim, else one line saying why not."""
    sans = list(sans)
    if not sans:
        return f"node {node_id!r}: no client certificate with a subject alternative name"
    named = identities(sans, trust_domain)
    if any(i.node_id == node_id and i.region == region for i in named):
        return None
    if not named:
        return (
            f"node {node_id!r}: the client certificate names no node "
            f"(SANs: {', '.join(sans)[:200]}; expected spiffe://DOMAIN/ns/REGION/sa/NODE_ID "
            "or NODE_ID.REGION.SUFFIX)"
        )
    shown = ", ".join(f"{i.node_id} in {i.region}" for i in named)[:200]
    return f"node {node_id!r} claims region {region!r} but its certificate is for {shown}"


def _from_spiffe(uri: str, trust_domain: str | None) -> Identity | None:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if parts.scheme != "spiffe" or parts.query or parts.fragment:
        return None
    if trust_domain is not None and parts.netloc != trust_domain:
        return None
    segments = parts.path.split("/")
    if len(segments) != 5 or segments[0] != "" or segments[1] != "ns" or segments[3] != "sa":
        return None
    region, node_id = segments[2], segments[4]
    if not region or not node_id:
        return None
    return Identity(node_id, region, uri)


def _from_dns(name: str) -> Identity | None:
    labels = name.rstrip(".").split(".")
    if len(labels) < 3 or not all(labels[:2]) or "*" in labels[0] or "*" in labels[1]:
        return None
    return Identity(labels[0], labels[1], name)
