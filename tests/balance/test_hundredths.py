"""`endpoints._hundredths` is `round(value, 2)`: the same float to the bit (sign of zero
included) and the same type, for every float, ties and their neighbours among them."""

from __future__ import annotations

import math
import struct

from hypothesis import example, given
from hypothesis import strategies as st

from heliostat.balance.endpoints import _hundredths


def _same(value: float) -> None:
    fast, exact = _hundredths(value), round(value, 2)
    assert type(fast) is type(exact)
    if isinstance(exact, float) and math.isnan(exact):
        assert math.isnan(fast)
    else:
        assert struct.pack("<d", fast) == struct.pack("<d", exact), (value, fast, exact)


@given(st.floats(allow_nan=True, allow_infinity=True))
@example(0.005)
@example(0.015)
@example(0.125)
@example(1.005)
@example(2.675)
@example(-0.001)
@example(-0.0)
@example(0.0)
@example(1e-300)
@example(2.0**38 + 0.005)
@example(2.0**40 / 100)
def test_hundredths_is_round_to_two_places(value: float) -> None:
    _same(value)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=-8, max_value=8))
def test_hundredths_at_and_beside_every_half(hundreds: int, ulps: int) -> None:
    """Values at a half-hundredth (as close as a double gets) and a few units beside it,
    where a rounding of the hundredfold could cross the half."""
    value = (hundreds + 0.5) / 100
    for _ in range(abs(ulps)):
        value = math.nextafter(value, math.inf if ulps > 0 else -math.inf)
    _same(value)


@given(st.floats(min_value=0.0, max_value=4.0))
def test_hundredths_over_levels(value: float) -> None:
    """The range the law rounds (levels and capacity shares)."""
    _same(value)


def test_hundredths_of_ints_stays_round() -> None:
    assert _hundredths(3) == 3 and type(_hundredths(3)) is int
