"""Human durations (`500ms`, `2s`, `1m`) as float seconds.

Operators write intervals the way Envoy and Kubernetes do; the rest of heliostat only ever
sees seconds as a float, so the unit question is settled once, here, with the range every
duration must fit. Envoy checks every Duration of every resource it receives
(`validateDurationUnifiedNoThrow`, on by default as `strict_duration_validation`): seconds
plus the largest nanoseconds must fit 64-bit nanoseconds, so at most 9,223,372,035 s (about
292 years), much less than google.protobuf.Duration's own 315,576,000,000 s. A longer value
makes Envoy reject the whole resource ("Duration out-of-range"), on every push.
"""

from __future__ import annotations

import math
import re

MAX_SECONDS = (2**63 - 1 - 999_999_999) // 1_000_000_000
"""The longest duration Envoy accepts, in whole seconds: 9,223,372,035."""

PROTOBUF_MAX_SECONDS = 315_576_000_000
"""google.protobuf.Duration's own range (10,000 years), for reference and tests."""

ENVOY_RESOLUTION_SECONDS = 0.001
"""Envoy keeps durations as milliseconds: a positive duration shorter than this becomes 0."""

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from `500ms`/`2s`/`1m`/`1h` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError(f"invalid duration {_show(value)}: use a number with ms, s, m or h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {_show(value)}: must be a finite, non-negative time")
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"duration {_show(value)} is too long: at most {MAX_SECONDS}s (about 292 years, "
            "the longest duration Envoy accepts)"
        )
    return seconds


def check_envoy_positive(seconds: float) -> float:
    """A duration Envoy requires to be positive (`gt: {}` in its validation rules): at least
    one millisecond, since Envoy would round anything shorter down to 0."""
    if seconds < ENVOY_RESOLUTION_SECONDS:
        raise ValueError(
            f"must be at least 1ms (got {format_duration(seconds)}): Envoy requires a positive "
            "duration and counts it in milliseconds"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for summaries and debug output."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
