"""Human durations (`500ms`, `2s`, `1m`) as float seconds.

Operators write intervals the way Envoy and Kubernetes do; the rest of heliostat only ever
sees seconds as a float, so the unit question is settled once, here.
"""

from __future__ import annotations

import math
import re

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
            raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m or h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("expected a duration such as 500ms, 2s or 1m")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative time")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for summaries and debug output."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
