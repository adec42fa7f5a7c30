"""The traffic-policy sections of a model (and the spec's tenants), as pydantic models.

Each section says how a model's requests behave around the weights the control law computes:
affinity, outlier detection, circuit breakers per priority class, retries, version splits,
tenant pinning and a fallback model. Defaults are chosen for LLM inference (long, expensive,
mostly streamed requests), not copied from Envoy; where they differ from Envoy's, the field
says why. Cross-references (versions that must exist on endpoints, known regions, the
fallback model) are checked in `traffic_checks.py`, where each problem can be located at its
line.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from heliostat.policy.fields import (
    Count,
    DurationOrOff,
    HeaderName,
    Name,
    Percent,
    PositiveCount,
    PositiveDuration,
    Section,
)
from heliostat.wire import SESSION_HEADER, TENANT_HEADER


class HashKind(StrEnum):
    """Envoy's consistent-hashing load balancers; both support bounded load."""

    RING_HASH = "ring_hash"
    MAGLEV = "maglev"


class AffinityMode(StrEnum):
    """When affinity hashes: `auto` while the engines' prefix caches show shared prefixes
    (least-request otherwise, see `heliostat.balance.affinity`), `always` all the time."""

    AUTO = "auto"
    ALWAYS = "always"


class Affinity(Section):
    """Keep a session (or a shared prompt prefix) on one replica, where its KV cache is.

    `bounded_load` caps any replica at that multiple of the cluster's average in-flight
    requests (Envoy's hash_balance_factor / 100), so a hot session spills to the next replica
    on the ring instead of queueing behind itself.

    With `mode: auto` (the default) hashing is used only while it pays: the operator writes
    one policy for traffic whose prompts may or may not share prefixes, and a workload
    without shared prefixes keeps least-request's balance. `always` hashes whatever the
    evidence (stickiness the clients rely on, or an engine without prefix-cache metrics).
    """

    header: HeaderName = SESSION_HEADER
    # 1.5: Envoy's bound is relative to the gateway's in-flight count, so at a light moment
    # (a handful of requests in flight) 1.25 already passes a key on while its replica still
    # has free slots: a miss and a second copy of the prefix on the next replica. At full
    # size on shared_prefix, 1.5 halved us-east's spills and held about 3 points more hits,
    # its SLO within noise (README, "Bounded load and the hash"); closer to saturation the
    # two bounds differ by a request per replica.
    bounded_load: Annotated[float, Field(ge=1.0, le=100.0, allow_inf_nan=False, strict=True)] = 1.5
    hash: HashKind = HashKind.RING_HASH
    mode: AffinityMode = AffinityMode.AUTO
    # Without a session header, hash the first N characters of the prompt (or of the chat
    # messages' contents): requests sharing a system prompt land where its prefix is cached.
    prefix_chars: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] | None = None


class SuccessRate(Section):
    """Eject replicas whose success rate is `stdev_factor` deviations below the mean."""

    minimum_hosts: PositiveCount = 5
    request_volume: PositiveCount = 100
    stdev_factor: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False, strict=True)] = 1.9


class FailurePercentage(Section):
    """Eject replicas failing at least `threshold` percent of their requests."""

    threshold: Percent = 85.0
    minimum_hosts: PositiveCount = 5
    request_volume: PositiveCount = 50


class OutlierDetection(Section):
    """Eject a failing replica between scrapes, before the control law hears of it.

    Gateway failures (connect refused, reset, 502-504) are enforced by default, unlike
    Envoy's 0: they are what a crashed or killed replica produces. Success-rate and
    failure-percentage ejection are off unless their section is given.
    """

    consecutive_5xx: Count = 5
    consecutive_gateway_failure: Count = 2
    enforcing_consecutive_gateway_failure: Annotated[int, Field(ge=0, le=100, strict=True)] = 100
    success_rate: SuccessRate | None = None
    failure_percentage: FailurePercentage | None = None
    # Envoy: OutlierDetection.interval and base_ejection_time are `duration: {gt: {}}`.
    interval: PositiveDuration = 1.0
    base_ejection_time: PositiveDuration = 10.0
    # All of them may go: the panic threshold then sends to every replica again, which beats
    # refusing every request while a whole region restarts.
    max_ejection_percent: Annotated[int, Field(ge=0, le=100, strict=True)] = 100


class RetryBudget(Section):
    """Concurrent retries as a share of active requests (scales with load, unlike a count).

    At least `min_retry_concurrency` retries may run at once whatever the load; Envoy's own
    floor is 3, too few when a replica dies under a burst: every request it held fails at
    once, and their retries, which cross to another region and take a round trip, are still
    outstanding when the next failures want theirs.
    """

    budget_percent: Percent = 20.0
    min_retry_concurrency: Count = 10


class Breaker(Section):
    """Envoy's circuit-breaker thresholds for one priority class; unset means Envoy's default
    (1024 connections, pending and active requests). Retries are bounded by `retry_budget`,
    by `max_retries`, or, when neither is given, by the default budget (20%, at least 10)."""

    max_connections: Count | None = None
    max_pending_requests: Count | None = None
    max_requests: Count | None = None
    max_retries: Count | None = None
    retry_budget: RetryBudget | None = None


class CircuitBreakers(Section):
    """Separate thresholds for `x-priority: interactive` (Envoy HIGH) and `batch` (DEFAULT)."""

    interactive: Breaker = Breaker()
    batch: Breaker = Breaker()


class RetryOn(StrEnum):
    """Envoy's `retry_on` conditions that make sense for an inference gateway."""

    CONNECT_FAILURE = "connect-failure"
    REFUSED_STREAM = "refused-stream"
    RESET = "reset"
    RESET_BEFORE_REQUEST = "reset-before-request"
    RETRIABLE_STATUS_CODES = "retriable-status-codes"
    GATEWAY_ERROR = "gateway-error"
    FIVE_XX = "5xx"
    RETRIABLE_4XX = "retriable-4xx"
    ENVOY_RATELIMITED = "envoy-ratelimited"


DEFAULT_RETRY_ON = (
    RetryOn.CONNECT_FAILURE,
    RetryOn.REFUSED_STREAM,
    RetryOn.RESET,
    RetryOn.RETRIABLE_STATUS_CODES,
)
StatusCode = Annotated[int, Field(ge=100, le=599, strict=True)]

MAX_RETRIES = 100
"""Most retries a request may have. Envoy's field is a uint32, but its previous_priorities
retry extension (every heliostat route uses it) reserves a 16-byte slot per allowed retry for
each request up front: 4,294,967,295 retries made a real Envoy 1.40 allocate 64 GiB and abort
on the first request. 100 is far more tries than a request has useful places to go, and
costs at most 1.6 KB per request."""


class Retries(Section):
    """Retry elsewhere what never reached a model server or was refused before work began.

    `per_try_timeout` defaults to twice the SLO's ttft_ms and applies to streamed requests
    only: Envoy stops a try's timer once response headers went downstream, and a model server
    answers a streamed request's headers at once but a unary one's only after the whole
    generation, which a TTFT-sized timeout would cut. `0s` disables it.
    """

    num_retries: Annotated[int, Field(ge=0, le=MAX_RETRIES, strict=True)] = 2
    per_try_timeout: DurationOrOff | None = None
    retry_on: tuple[RetryOn, ...] = DEFAULT_RETRY_ON
    retriable_status_codes: tuple[StatusCode, ...] = (503,)


VersionWeight = Annotated[int, Field(ge=1, le=1_000_000, strict=True)]


class Canary(Section):
    """In `region`, send `weight` percent of the model's traffic to `version`."""

    region: Name
    version: Name
    weight: Percent


class Fallback(Section):
    """When the model's GPUs within its network budget are exhausted, serve up to `max_share`
    of its requests with another model of the policy (a smaller one, usually).

    The control law decides the share per region (see `heliostat.balance.fallback`); a request
    moved once is not moved again, so a chain a -> b -> c moves a's requests to b only.
    """

    model: Name
    max_share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = 0.5


class Tenant(Section):
    """Requests carrying `header: value` are served only by endpoints in `regions`."""

    name: Name
    header: HeaderName = TENANT_HEADER
    value: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")]
    regions: tuple[Name, ...]


__all__ = [
    "DEFAULT_RETRY_ON",
    "SESSION_HEADER",
    "Affinity",
    "AffinityMode",
    "Breaker",
    "Canary",
    "CircuitBreakers",
    "FailurePercentage",
    "Fallback",
    "HashKind",
    "OutlierDetection",
    "Retries",
    "RetryBudget",
    "RetryOn",
    "SuccessRate",
    "Tenant",
    "VersionWeight",
]
