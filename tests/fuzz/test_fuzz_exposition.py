"""Metric exposition text for every engine adapter: pages shaped like the real ones
(tests/signals/expositions.py), mutated line by line (values, labels, names, lines cut,
repeated or invented), plus text from nowhere. A page is a `Reading` whose numbers are usable
or a `Failure` with a known reason and a short detail; never an exception, never the
adapter's internal-error fallback."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heliostat.signals import Failure, Reading, Reason, read_exposition
from tests.fuzz.conftest import cases
from tests.signals import expositions as ex

pytestmark = pytest.mark.fuzz

PAGES: dict[str, list[Callable[[], str]]] = {
    "vllm": [ex.vllm, ex.vllm_old, ex.vllm_early_v1],
    "sglang": [ex.sglang],
    "triton": [ex.triton, ex.triton_trtllm],
    "trtllm": [ex.trtllm_serve, ex.trtllm_serve_no_queue, ex.trtllm_serve_mid_2025],
    "tgi": [ex.tgi],
}
TEXTS = {(engine, i): page() for engine, pages in PAGES.items() for i, page in enumerate(pages)}
KNOWN_REASONS = {
    v for k, v in vars(Reason).items() if not k.startswith("_") and isinstance(v, str)
} - {Reason.INTERNAL}
_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e309", "-0", "0x10", "1_000", "", "  ", "1 2 3"]),
)
_LABEL_VALUES = st.one_of(
    st.text(max_size=12), st.sampled_from(['\\"', "\\", "\\n", "}", "{", ",", '"', "\n"])
)


def _mutate_line(line: str, how: str, number: str, label: str, junk: str) -> list[str]:
    if how == "drop":
        return []
    if how == "repeat":
        return [line, line]
    if how == "value" and " " in line and not line.startswith("#"):
        return [line.rsplit(" ", 1)[0] + " " + number]
    if how == "label" and '="' in line:
        return [re.sub(r'="[^"]*"', f'="{label}"', line, count=1)]
    if how == "name" and not line.startswith("#"):
        return [junk + line[len(junk) :]]
    if how == "insert":
        return [line, junk]
    return [line]


def _assert_sound(result: Reading | Failure) -> None:
    if isinstance(result, Failure):
        assert result.reason in KNOWN_REASONS, result
        assert result.detail and len(result.detail) < 600, result
        return
    assert isinstance(result, Reading)
    for field in ("waiting", "running", "kv_usage", "kv_usage_max", "prefix_hit_rate"):
        value = getattr(result, field)
        assert value is None or (math.isfinite(value) and value >= 0), (field, value)


@given(
    page=st.sampled_from(sorted(TEXTS)),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from(["drop", "repeat", "value", "value", "label", "name", "insert"]),
            _NUMBERS,
            _LABEL_VALUES,
            st.text(max_size=15),
        ),
        min_size=1,
        max_size=6,
    ),
    openmetrics=st.booleans(),
)
@cases(3000)
def test_mutated_pages_read_or_fail_with_a_reason(
    page: tuple[str, int], edits: list[tuple[int, str, str, str, str]], openmetrics: bool
) -> None:
    engine = page[0]
    lines = TEXTS[page].splitlines()
    for at, how, number, label, junk in edits:
        index = at % max(1, len(lines))
        if lines:
            lines[index : index + 1] = _mutate_line(lines[index], how, number, label, junk)
    text = "\n".join(lines) + "\n"
    _assert_sound(read_exposition(text, engine, ex.LLAMA, openmetrics=openmetrics))
    _assert_sound(read_exposition(text, engine, "some-other-model", openmetrics=openmetrics))


@given(
    engine=st.sampled_from(sorted(PAGES)),
    text=st.one_of(
        st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))
    ),
)
@cases(1000)
def test_text_from_nowhere_fails_with_a_reason(engine: str, text: str) -> None:
    _assert_sound(read_exposition(text, engine, ex.LLAMA))
