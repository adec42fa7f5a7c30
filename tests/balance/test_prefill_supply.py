"""Each region's prefill time and prefix-cache hit rate, as the law hands them to `spill`:
its live endpoints' readings weighted by what each completes; None where none reports."""

from __future__ import annotations

import dataclasses

import pytest

from heliostat.balance import law, overflow
from heliostat.signals.record import Signal


def signal(prefill: float | None, hits: float | None, served: float | None) -> Signal:
    return Signal(
        model="m",
        address="a",
        engine="vllm",
        prefill_s=prefill,
        prefix_hit_rate=hits,
        served_rate=served,
    )


def supply() -> overflow.Supply:
    return overflow.Supply(2, 8.0, 10.0, 5.0, rates=True, slots=8)


def test_a_regions_prefill_is_its_endpoints_weighted_by_what_they_complete() -> None:
    signals = [signal(0.2, 0.3, 1.0), signal(0.05, 0.9, 3.0), signal(None, None, None)]
    result = law._with_prefill({"r": supply(), "s": supply()}, {"r": [0, 1], "s": [2]}, signals)
    assert result["r"].prefill == pytest.approx((0.2 * 1 + 0.05 * 3) / 4)
    assert result["r"].hit_rate == pytest.approx((0.3 * 1 + 0.9 * 3) / 4)
    assert (result["s"].prefill, result["s"].hit_rate) == (None, None)
    # Nothing else moves.
    assert dataclasses.replace(result["r"], prefill=None, hit_rate=None) == supply()


def test_an_endpoint_with_no_completions_yet_counts_once() -> None:
    signals = [signal(0.3, None, None), signal(0.1, None, 0.0)]
    result = law._with_prefill({"r": supply()}, {"r": [0, 1]}, signals)
    assert result["r"].prefill == pytest.approx(0.2)
    assert result["r"].hit_rate is None
