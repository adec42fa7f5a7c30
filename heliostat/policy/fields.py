"""Value types shared by every section of the policy file.

They live apart from `schema.py` so that sections defined in their own modules (the traffic
policy in `traffic.py`) can use the same names, durations and strictness without importing
the document that in turn imports them.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from heliostat.policy.durations import check_envoy_positive, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
"""Seconds, written as `500ms`, `2s`, `1m` or a bare number of seconds; 0 to Envoy's longest."""

PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_duration, json_schema_input_type=float | str),
    AfterValidator(check_envoy_positive),
]
"""A duration that lands in an Envoy field whose rules say `gt: {}`: at least 1 ms."""


def _zero_or_envoy_positive(seconds: float) -> float:
    return seconds if seconds == 0 else check_envoy_positive(seconds)


DurationOrOff = Annotated[
    float,
    BeforeValidator(parse_duration, json_schema_input_type=float | str),
    AfterValidator(_zero_or_envoy_positive),
]
"""0 turns the setting off; anything else is a duration Envoy can hold (at least 1 ms)."""

UINT32_MAX = 2**32 - 1
"""Counts land in Envoy's uint32 fields (UInt32Value wrappers, mostly)."""

_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
# RFC 9110 token characters, lower case only: Envoy lower-cases header names, so a policy
# that says `X-Session-Id` would silently mean `x-session-id`; asking for lower case says so.
_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"invalid name {value!r}: use lower-case letters, digits, '.', '_' or '-' "
            "(at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def _check_header(value: str) -> str:
    if not _HEADER.match(value):
        raise ValueError(
            f"invalid header name {value!r}: use lower-case letters, digits and '-' "
            "(Envoy matches header names in lower case; pseudo-headers are not allowed)"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
HeaderName = Annotated[str, AfterValidator(_check_header)]

# Numbers are strict: YAML 1.1 reads `yes`/`on`/`true` as booleans, and pydantic's lax mode
# would quietly turn them into 1; a quoted "80" is a string, not a number.
Count = Annotated[int, Field(ge=0, le=UINT32_MAX, strict=True)]
PositiveCount = Annotated[int, Field(ge=1, le=UINT32_MAX, strict=True)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]


class Section(BaseModel):
    """Every section is strict about unknown keys and frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
