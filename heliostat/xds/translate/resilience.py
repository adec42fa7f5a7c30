"""Outlier detection, circuit breakers and retry policies from a model's traffic policy.

These are the per-request reflexes Envoy applies between the control law's ticks: eject a
replica that fails, refuse work beyond a class's thresholds, and retry what never reached a
model server somewhere else.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2 as previous_priorities_pb2,
)
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from heliostat.policy import Model
from heliostat.policy.traffic import Breaker, RetryBudget
from heliostat.xds.translate.common import pack, seconds

# Used when a class names neither max_retries nor retry_budget. Envoy's own default (3
# concurrent retries per cluster) starves retries exactly when a replica dies under load;
# a budget grows with the traffic.
DEFAULT_RETRY_BUDGET = RetryBudget()

_UINT = wrappers_pb2.UInt32Value


def outlier_detection(model: Model) -> outlier_detection_pb2.OutlierDetection:
    """Eject a replica that fails requests between ticks, before the next scrape says so."""
    policy = model.outlier_detection
    result = outlier_detection_pb2.OutlierDetection(
        interval=seconds(policy.interval),
        base_ejection_time=seconds(policy.base_ejection_time),
        max_ejection_percent=_UINT(value=policy.max_ejection_percent),
        enforcing_consecutive_5xx=_UINT(value=100 if policy.consecutive_5xx else 0),
        enforcing_consecutive_gateway_failure=_UINT(
            value=policy.enforcing_consecutive_gateway_failure
            if policy.consecutive_gateway_failure
            else 0
        ),
        # Off unless asked for: Envoy enables success-rate ejection by default.
        enforcing_success_rate=_UINT(value=100 if policy.success_rate else 0),
        enforcing_failure_percentage=_UINT(value=100 if policy.failure_percentage else 0),
    )
    if policy.consecutive_5xx:
        result.consecutive_5xx.value = policy.consecutive_5xx
    if policy.consecutive_gateway_failure:
        result.consecutive_gateway_failure.value = policy.consecutive_gateway_failure
    if policy.success_rate is not None:
        rate = policy.success_rate
        result.success_rate_minimum_hosts.value = rate.minimum_hosts
        result.success_rate_request_volume.value = rate.request_volume
        # Envoy reads the factor in thousandths: 1900 means 1.9 standard deviations.
        result.success_rate_stdev_factor.value = round(rate.stdev_factor * 1000)
    if policy.failure_percentage is not None:
        failures = policy.failure_percentage
        result.failure_percentage_threshold.value = round(failures.threshold)
        result.failure_percentage_minimum_hosts.value = failures.minimum_hosts
        result.failure_percentage_request_volume.value = failures.request_volume
    return result


def circuit_breakers(
    model: Model, max_requests: int | None = None
) -> circuit_breaker_pb2.CircuitBreakers:
    """Batch thresholds at DEFAULT, interactive at HIGH: routes pick them by priority.

    `max_requests` is the cluster's cap on requests in flight while its view refuses
    (`heliostat.balance.refusal.in_flight`): at most the operator's, at both priorities
    (a cluster carries one class, whichever priority its routes give it)."""
    breakers = model.circuit_breakers
    batch, interactive = breakers.batch, breakers.interactive
    if max_requests is not None:
        batch = _capped(batch, max_requests)
        interactive = _capped(interactive, max_requests)
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            _thresholds(base_pb2.DEFAULT, batch),
            _thresholds(base_pb2.HIGH, interactive),
        ]
    )


def _capped(breaker: Breaker, max_requests: int) -> Breaker:
    configured = breaker.max_requests
    limit = max_requests if configured is None else min(configured, max_requests)
    return breaker.model_copy(update={"max_requests": limit})


def _thresholds(
    priority: base_pb2.RoutingPriority.ValueType, breaker: Breaker
) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    result = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=priority,
        track_remaining=True,  # remaining_* gauges in /stats show how close a class is
    )
    for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        value = getattr(breaker, field)
        if value is not None:
            getattr(result, field).value = value
    budget = breaker.retry_budget
    if budget is None and breaker.max_retries is None:
        budget = DEFAULT_RETRY_BUDGET
    if budget is not None:
        result.retry_budget.CopyFrom(
            circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
                budget_percent=percent_pb2.Percent(value=budget.budget_percent),
                min_retry_concurrency=_UINT(value=budget.min_retry_concurrency),
            )
        )
    return result


def per_try_timeout(model: Model) -> float:
    """Seconds a streamed try may take to produce response headers; 0 disables it.

    By default twice the SLO's time to first token: a server that has not even answered the
    headers of a stream by then is wedged, and another replica will do better.
    """
    configured = model.retries.per_try_timeout
    return 2 * model.slo.ttft_ms / 1000 if configured is None else configured


def retry_policy(model: Model, *, streamed: bool) -> rc.RetryPolicy:
    """Retry elsewhere: another host (previous_hosts), then another priority.

    Envoy never retries once response headers went downstream, so a stream that has started
    is never replayed. The per-try timeout is set for streamed requests only (see
    `per_try_timeout`): a unary request's headers arrive after the whole generation.
    """
    retries = model.retries
    policy = rc.RetryPolicy(
        retry_on=",".join(condition.value for condition in retries.retry_on),
        num_retries=_UINT(value=retries.num_retries),
        retriable_status_codes=list(retries.retriable_status_codes),
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
        retry_priority=rc.RetryPolicy.RetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=pack(previous_priorities_pb2.PreviousPrioritiesConfig(update_frequency=1)),
        ),
    )
    timeout = per_try_timeout(model)
    if streamed and timeout > 0:
        policy.per_try_timeout.CopyFrom(seconds(timeout))
    return policy
