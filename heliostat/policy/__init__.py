"""The policy file: schema, loading and validation with FILE:LINE errors."""

from heliostat.policy.durations import format_duration, parse_duration
from heliostat.policy.loader import load_policy, parse_policy
from heliostat.policy.problems import PolicyError, Problem
from heliostat.policy.schema import (
    BeyondBudget,
    Endpoint,
    Engine,
    Model,
    Overflow,
    Policy,
    Region,
    Thresholds,
    UpstreamProtocol,
)

__all__ = [
    "BeyondBudget",
    "Endpoint",
    "Engine",
    "Model",
    "Overflow",
    "Policy",
    "PolicyError",
    "Problem",
    "Region",
    "Thresholds",
    "UpstreamProtocol",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
]
