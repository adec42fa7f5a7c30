"""The policy file's shape (heliostat/v1), as immutable pydantic models.

These names are a contract with operators, tests and later features: fields may be added,
never renamed. Only the shape and per-field rules live here; rules that relate one part of
the file to another (regions named by endpoints, RTT completeness, duplicates) are in
`semantics.py`, so each problem can be reported against the exact place that causes it.
"""

from __future__ import annotations

import ipaddress
import socket
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from heliostat.policy.durations import MAX_SECONDS
from heliostat.policy.fields import Duration as Duration  # re-exported: defined here before
from heliostat.policy.fields import Name as Name
from heliostat.policy.fields import PositiveDuration, Section
from heliostat.policy.limits import MAX_ENDPOINTS_PER_MODEL
from heliostat.policy.selector import KubernetesSelector, Namespace
from heliostat.policy.traffic import (
    Affinity,
    Canary,
    CircuitBreakers,
    Fallback,
    OutlierDetection,
    Retries,
    Tenant,
    VersionWeight,
)
from heliostat.samples import Engine, SourceKind


def canonical_address(value: str) -> str:
    """`IP:PORT` in one spelling per endpoint, or ValueError saying what is wrong.

    Two spellings of one socket must be one endpoint: `[::ffff:127.0.0.1]:9101` is
    `127.0.0.1:9101` (an IPv4-mapped IPv6 address), `[2001:DB8::0001]:80` is `[2001:db8::1]:80`
    and a port of `09101` is `9101`. IPv6 hosts are bracketed, as in URLs: without brackets
    `::1:9101` could be an address with no port at all.
    """
    shown = repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"malformed address {shown}: expected IP:PORT such as 127.0.0.1:9101")
    digits = port.isascii() and port.isdigit() and len(port.lstrip("0")) <= 5
    if digits and port[0] != "0" and int(port) < 65536 and _is_canonical_ipv4(host):
        return value  # the common case, 10x cheaper than ipaddress on large fleets
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"malformed address {shown}: the host must be an IP literal "
            "(Envoy does not resolve names of EDS endpoints)"
        ) from None
    if not digits or not 0 < int(port) < 65536:
        raise ValueError(f"malformed address {shown}: port must be 1-65535")
    if isinstance(ip, ipaddress.IPv6Address):
        if not bracketed:
            raise ValueError(
                f"malformed address {shown}: write an IPv6 host in brackets, "
                f"such as [{host}]:{port}"
            )
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    elif bracketed:
        raise ValueError(f"malformed address {shown}: only IPv6 hosts take brackets")
    text = f"[{ip.compressed}]" if isinstance(ip, ipaddress.IPv6Address) else ip.compressed
    return f"{text}:{int(port)}"


def _is_canonical_ipv4(host: str) -> bool:
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, host)) == host
    except (OSError, ValueError):
        return False


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address (use 0.0.0.0 for every interface)"
        ) from None
    return value


IpAddress = Annotated[str, AfterValidator(_check_ip)]
Address = Annotated[str, AfterValidator(canonical_address)]
"""An endpoint's `IP:PORT`, stored in its canonical spelling (see `canonical_address`)."""
# Numbers are strict: YAML 1.1 reads `yes`/`on`/`true` as booleans, and pydantic's lax mode
# would quietly turn them into 1 (a port, 1 ms of RTT); a quoted "80" is a string, not a port.
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]


_Spec = Section


class UpstreamProtocol(StrEnum):
    HTTP1 = "http1"
    HTTP2 = "http2"


class Metadata(_Spec):
    name: Name
    # As a Kubernetes object has them, so a resource's manifest validates as a file too.
    namespace: Namespace | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Region(_Spec):
    rtt_ms: dict[Name, Annotated[float, Field(allow_inf_nan=False, strict=True)]] = Field(
        default_factory=dict
    )
    # The region's east-west gateway addresses (an operator's load-balanced address, or each
    # gateway's): other regions' gateways send the requests they lend to this region there,
    # and its gateways place them on their own replicas. Empty: lenders list the replicas.
    east_west: tuple[Address, ...] = ()


class Gateway(_Spec):
    port: Port = 10000
    address: IpAddress = "0.0.0.0"


class Slo(_Spec):
    # The streamed per-try timeout defaults to 2 x ttft_ms (resilience.per_try_timeout): it
    # must stay a duration Envoy holds, at least 1 ms and at most MAX_SECONDS.
    ttft_ms: Annotated[
        float, Field(ge=1, le=MAX_SECONDS * 500, allow_inf_nan=False, strict=True)
    ] = 1000.0
    network_budget_ms: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)] = 150.0


def _check_metrics_path(value: str | None) -> str | None:
    if value is not None and not value.startswith("/"):
        raise ValueError(f"must start with '/' (such as /metrics), got {value!r}")
    return value


class Signals(_Spec):
    interval: Duration = 2.0
    timeout: Duration = 0.5
    stale_after: Duration = 6.0
    source: SourceKind = SourceKind.DIRECT
    prometheus_url: str | None = None
    # None: the engine's own path (trtllm-serve /prometheus/metrics, the others /metrics).
    metrics_path: Annotated[str | None, AfterValidator(_check_metrics_path)] = None
    # This model is a LoRA adapter served on the base model of this name (the engine's model
    # label value): its series are read, so its load signals are the base model's.
    base_model: Annotated[str, Field(min_length=1)] | None = None


class SimKnobs(_Spec):
    """Capacity of a simulated replica (`heliostat sim fleet`); `serve` ignores it."""

    max_num_seqs: Annotated[int, Field(ge=1, strict=True)] | None = None
    num_gpu_blocks: Annotated[int, Field(ge=1, strict=True)] | None = None
    block_size: Annotated[int, Field(ge=1, strict=True)] | None = None
    speed: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)] | None = None


class Endpoint(_Spec):
    address: Address
    region: Name
    version: Name | None = None
    # Concurrent sequences the server runs at once (vLLM's max_num_seqs); engines that do
    # not export it leave the control law without a "running vs slots" term unless set here.
    slots: Annotated[int, Field(ge=1, strict=True)] | None = None
    sim: SimKnobs | None = None


class Thresholds(_Spec):
    """When an endpoint counts as saturated; the control law's weights fall towards these."""

    # waiting requests
    queue: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)] = 4.0
    # KV-cache use, 0-1
    kv: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = 0.8
    # share of slots
    running: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = 1.0
    # consecutive failed scrapes -> UNHEALTHY
    failures: Annotated[int, Field(ge=1, strict=True)] = 3


class BeyondBudget(StrEnum):
    LAST_RESORT = "last_resort"
    NEVER = "never"


class Overflow(_Spec):
    """How much of a region's traffic may spill to a neighbour that has headroom.

    `max_share` left out (None): the control law's allocation decides from feasibility and
    the rescuers' room; given, it caps the share of its users a region with GPUs sends away.
    """

    max_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)] | None = None
    beyond_budget: BeyondBudget = BeyondBudget.LAST_RESORT


class Drain(_Spec):
    """Endpoints taken out of rotation on purpose: in-flight requests finish, new ones move."""

    endpoints: tuple[Address, ...] = ()
    regions: tuple[Name, ...] = ()


class Model(_Spec):
    name: Name
    engine: Engine = Engine.VLLM
    slo: Slo = Slo()
    signals: Signals = Signals()
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    connect_timeout: PositiveDuration = 1.0  # Envoy: Cluster.connect_timeout, gt 0
    thresholds: Thresholds = Thresholds()
    overflow: Overflow = Overflow()
    # Traffic policy (traffic.py): how requests behave around the control law's weights.
    affinity: Affinity | None = None
    outlier_detection: OutlierDetection = OutlierDetection()
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    retries: Retries = Retries()
    versions: dict[Name, VersionWeight] = Field(default_factory=dict)
    canary: tuple[Canary, ...] = ()
    fallback: Fallback | None = None
    drain: Drain = Drain()
    # The loader refuses a longer list before validating it (limits.py), with its own message.
    endpoints: Annotated[tuple[Endpoint, ...], Field(max_length=MAX_ENDPOINTS_PER_MODEL)] = ()
    # Replicas discovered from EndpointSlices, alongside `endpoints` (heliostat.discovery).
    kubernetes: KubernetesSelector | None = None

    def drained(self) -> frozenset[str]:
        """Addresses the policy drains, by endpoint or by region."""
        regions = set(self.drain.regions)
        listed = set(self.drain.endpoints)
        return frozenset(
            e.address for e in self.endpoints if e.address in listed or e.region in regions
        )


class Spec(_Spec):
    regions: dict[Name, Region]
    gateway: Gateway = Gateway()
    models: tuple[Model, ...]
    # Tenants pinned to regions, for every model (traffic.py).
    tenants: tuple[Tenant, ...] = ()


API_GROUP = "heliostat.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
"""The grouped apiVersion, which a Kubernetes custom resource needs; `heliostat/v1` (files
written before there was a CRD) is read as the same document."""


class Policy(_Spec):
    """One InferencePolicy document."""

    apiVersion: Literal["heliostat.dev/v1alpha1", "heliostat/v1"]
    kind: Literal["InferencePolicy"]
    metadata: Metadata
    spec: Spec

    def model(self, name: str) -> Model | None:
        return next((m for m in self.spec.models if m.name == name), None)

    def rtt_ms(self, a: str, b: str) -> float:
        """Round trip between two regions; symmetric, zero within a region."""
        if a == b:
            return 0.0
        regions = self.spec.regions
        if a in regions and b in regions[a].rtt_ms:
            return regions[a].rtt_ms[b]
        if b in regions and a in regions[b].rtt_ms:
            return regions[b].rtt_ms[a]
        raise KeyError(f"no RTT between {a!r} and {b!r}")
