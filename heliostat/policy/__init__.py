"""The policy file: schema, loading and validation with FILE:LINE errors."""

from heliostat.policy.durations import format_duration, parse_duration
from heliostat.policy.loader import load_policy, parse_policy
from heliostat.policy.problems import PolicyError, Problem
from heliostat.policy.schema import (
    BeyondBudget,
    Endpoint,
    Model,
    Overflow,
    Policy,
    Region,
    Thresholds,
    UpstreamProtocol,
)
from heliostat.policy.traffic import (
    Affinity,
    Breaker,
    Canary,
    CircuitBreakers,
    Fallback,
    HashKind,
    OutlierDetection,
    Retries,
    RetryBudget,
    RetryOn,
    Tenant,
)
from heliostat.samples import Engine

__all__ = [
    "Affinity",
    "BeyondBudget",
    "Breaker",
    "Canary",
    "CircuitBreakers",
    "Endpoint",
    "Engine",
    "Fallback",
    "HashKind",
    "Model",
    "OutlierDetection",
    "Overflow",
    "Policy",
    "PolicyError",
    "Problem",
    "Region",
    "Retries",
    "RetryBudget",
    "RetryOn",
    "Tenant",
    "Thresholds",
    "UpstreamProtocol",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
]
