"""`allocate` keeps answers by the problem's exact content: what it hands back is `solve`'s
answer to the very problem asked, never a neighbour's (hypothesis over random planets)."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import given
from hypothesis import strategies as st

from heliostat.balance import allocation
from heliostat.balance.allocation import Origin, allocate, solve
from tests.balance.test_allocation import CEILING, SETTINGS, planets


@SETTINGS
@given(planets(), st.integers(0, 4), st.sampled_from(["demand", "capacity", "strain"]))
def test_kept_answers_are_the_problems_own(
    planet: tuple[dict[str, Origin], object, object], which: int, field: str
) -> None:
    origins, _, _ = planet
    first = allocate(origins, CEILING)
    assert first == solve(origins, CEILING)
    # Asked again, in another order: the same answer, and it is still solve's.
    again = allocate(dict(reversed(list(origins.items()))), CEILING)
    assert again == first
    # One number one ulp away is another problem: its own answer, not the kept one.
    name = sorted(origins)[which % len(origins)]
    before = origins[name]
    value = math.nextafter(getattr(before, field), math.inf)
    if field == "demand":
        moved = dataclasses.replace(before, demand=value)
    elif field == "capacity":
        moved = dataclasses.replace(before, capacity=value)
    else:
        moved = dataclasses.replace(before, strain=value)
    nearby = {**origins, name: moved}
    assert allocate(nearby, CEILING) == solve(nearby, CEILING)


def test_the_same_problem_is_solved_once() -> None:
    origins = {
        "a": Origin(demand=10.0, capacity=4.0, reach={"b": 20.0}),
        "b": Origin(demand=1.0, capacity=9.0, reach={"a": 20.0}),
    }
    allocation._solved.clear()
    first = allocate(origins, CEILING)
    rebuilt = {n: dataclasses.replace(o, reach=dict(o.reach)) for n, o in origins.items()}
    assert allocate(rebuilt, CEILING) is first  # equal content: no second solve
    assert allocate(origins, 0.8) is not first  # another ceiling is another problem
    assert first.placed["a"]["b"] > 0.0  # a real answer: a lends to b


def test_what_a_key_cannot_tell_apart_is_not_kept() -> None:
    """-0.0 and 0.0 are different keys (an answer may carry the sign); ints are not kept
    (their answer may carry the type)."""
    zero = {"a": Origin(demand=0.0, capacity=1.0, reach={})}
    negative = {"a": Origin(demand=-0.0, capacity=1.0, reach={})}
    assert allocation._content(zero, CEILING) != allocation._content(negative, CEILING)
    counted = {"a": Origin(demand=3, capacity=1.0, reach={})}  # an int where a float goes
    assert allocation._content(counted, CEILING) is None
    assert allocate(counted, CEILING) == solve(counted, CEILING)
