"""Signal records, counter rates and the debug view."""

from __future__ import annotations

import json

import pytest

from heliostat.samples import Engine
from heliostat.signals import Reading, ScrapeTarget, Signal, debug_view
from heliostat.signals.rates import CounterState, prefix_hit_rate, served_rate
from heliostat.signals.record import empty_signal


def counters(hits: float, queries: float) -> Reading:
    return Reading(engine="vllm", prefix_hits_total=hits, prefix_queries_total=queries)


def test_first_counter_reading_has_no_rate() -> None:
    rate, state = prefix_hit_rate(None, counters(30, 100))
    assert rate is None
    assert state == CounterState(30, 100, None)


def test_rate_is_increase_ratio_between_scrapes() -> None:
    _, state = prefix_hit_rate(None, counters(30, 100))
    rate, state = prefix_hit_rate(state, counters(90, 200))
    assert rate == pytest.approx(0.6)
    rate, state = prefix_hit_rate(state, counters(90, 300))
    assert rate == 0.0


def test_counter_reset_counts_the_new_value_as_the_increase() -> None:
    _, state = prefix_hit_rate(None, counters(5000, 10000))
    rate, state = prefix_hit_rate(state, counters(20, 80))  # server restarted
    assert rate == pytest.approx(0.25)
    rate, _ = prefix_hit_rate(state, counters(60, 120))
    assert rate == pytest.approx(1.0)


def test_reset_of_one_counter_only_resets_both() -> None:
    _, state = prefix_hit_rate(None, counters(50, 100))
    rate, _ = prefix_hit_rate(state, counters(10, 400))
    assert rate == pytest.approx(10 / 400)


def test_idle_server_keeps_its_previous_rate() -> None:
    _, state = prefix_hit_rate(None, counters(0, 0))
    rate, state = prefix_hit_rate(state, counters(0, 0))
    assert rate is None
    rate, state = prefix_hit_rate(state, counters(40, 100))
    assert rate == pytest.approx(0.4)
    rate, _ = prefix_hit_rate(state, counters(40, 100))
    assert rate == pytest.approx(0.4)


def test_hits_growing_faster_than_queries_is_clamped() -> None:
    _, state = prefix_hit_rate(None, counters(0, 100))
    rate, _ = prefix_hit_rate(state, counters(500, 200))
    assert rate == 1.0


def test_gauge_rates_pass_through() -> None:
    rate, state = prefix_hit_rate(None, Reading(engine="sglang", prefix_hit_rate=0.3))
    assert (rate, state) == (0.3, None)


def test_signal_age_and_staleness() -> None:
    target = ScrapeTarget(model="m", address="127.0.0.1:9000")
    signal = empty_signal(target)
    assert signal.age(100.0) is None
    assert signal.is_stale(100.0, 6.0)
    assert not signal.ok
    fresh = signal.with_reading(Reading(engine="vllm", waiting=1), None, at=100.0)
    assert fresh.ok and fresh.age(103.0) == 3.0
    assert not fresh.is_stale(106.0, 6.0)
    assert fresh.is_stale(106.5, 6.0)
    assert fresh.age(99.0) == 0.0  # clock stepped back: never negative
    failing = fresh.failed("timeout").failed("timeout")
    assert (failing.error, failing.consecutive_failures, failing.waiting) == ("timeout", 2, 1)
    assert failing.scraped_at == 100.0 and not failing.ok
    recovered = failing.with_reading(Reading(engine="vllm", waiting=4), None, at=110.0)
    assert (recovered.error, recovered.consecutive_failures, recovered.waiting) == (None, 0, 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"engine": "llamacpp"},
        {"address": "no-port"},
        {"address": ":80"},
        {"interval": 0},
        {"timeout": -1},
        {"stale_after": float("nan")},
        {"max_body_bytes": 0},
        {"metrics_path": "metrics"},
        {"source": "prometheus"},
    ],
)
def test_scrape_target_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"model": "m", "address": "127.0.0.1:8000"}
    with pytest.raises(ValueError):
        ScrapeTarget(**{**base, **kwargs})  # type: ignore[arg-type]


def test_scrape_target_defaults() -> None:
    t = ScrapeTarget(model="m", address="127.0.0.1:8000")
    assert (t.engine, t.interval, t.timeout, t.stale_after) == ("vllm", 2.0, 0.5, 6.0)
    assert t.max_body_bytes == 4 * 1024 * 1024
    assert t.url == "http://127.0.0.1:8000/metrics"
    assert t.selector == "m"
    assert ScrapeTarget(model="m", address="[::1]:80", model_label="x").selector == "x"


def test_debug_view_is_json_and_shows_age() -> None:
    signals = {
        ("m", "127.0.0.1:2"): Signal(
            "m", "127.0.0.1:2", "vllm", waiting=1, kv_usage=0.5, scraped_at=90.0
        ),
        ("m", "127.0.0.1:1"): Signal("m", "127.0.0.1:1", "vllm", error="timeout"),
        ("n", "127.0.0.1:3"): Signal("n", "127.0.0.1:3", "tgi", scraped_at=99.5),
    }
    view = debug_view(signals, now=100.0, stale_after={"m": 6.0})
    json.dumps(view, allow_nan=False)
    m = view["models"]["m"]
    assert [e["address"] for e in m] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert m[0]["age_s"] is None and m[0]["error"] == "timeout" and m[0]["stale"] is True
    assert m[1]["age_s"] == 10.0 and m[1]["kv_usage"] == 0.5 and m[1]["stale"] is True
    assert view["models"]["n"][0]["age_s"] == 0.5 and "stale" not in view["models"]["n"][0]
    assert debug_view(signals, 100.0, stale_after=20.0)["models"]["m"][1]["stale"] is False


# --- served rate ----------------------------------------------------------------------------


def test_served_rate_uses_the_scrapes_own_timestamps() -> None:
    rate, state = served_rate(None, 100.0, at=10.0)
    assert rate is None  # one scrape: no rate yet
    rate, state = served_rate(state, 130.0, at=12.0)
    assert rate == pytest.approx(15.0)
    rate, state = served_rate(state, 130.0, at=17.0)  # a late round: still per second
    assert rate == 0.0


def test_served_counter_reset_counts_its_new_value() -> None:
    _, state = served_rate(None, 5000.0, at=0.0)
    rate, state = served_rate(state, 8.0, at=2.0)  # restarted: 8 served since
    assert rate == pytest.approx(4.0)
    rate, _ = served_rate(state, 18.0, at=4.0)
    assert rate == pytest.approx(5.0)


def test_same_sample_again_repeats_the_rate() -> None:
    _, state = served_rate(None, 0.0, at=0.0)
    rate, state = served_rate(state, 20.0, at=2.0)
    again, state = served_rate(state, 20.0, at=2.0)
    assert again == rate == pytest.approx(10.0)
    rate, _ = served_rate(state, 40.0, at=4.0)
    assert rate == pytest.approx(10.0)


def test_no_success_counter_no_rate() -> None:
    assert served_rate(None, None, at=1.0) == (None, None)


def test_metrics_path_defaults_to_the_engines_own() -> None:
    assert ScrapeTarget(model="m", address="127.0.0.1:1", engine="trtllm").url == (
        "http://127.0.0.1:1/prometheus/metrics"
    )
    engines: tuple[Engine, ...] = ("vllm", "sglang", "triton", "tgi")
    for engine in engines:
        target = ScrapeTarget(model="m", address="127.0.0.1:1", engine=engine)
        assert target.path == "/metrics"
    custom = ScrapeTarget(model="m", address="127.0.0.1:1", engine="trtllm", metrics_path="/x")
    assert custom.url == "http://127.0.0.1:1/x"


def test_debug_view_shows_the_page_shape_and_what_is_missing() -> None:
    partial = Signal(
        "m",
        "127.0.0.1:4",
        "trtllm",
        kv_usage=0.4,
        kv_usage_max=0.4,
        served_total=77.0,
        served_rate=1.5,
        missing=frozenset({"waiting", "running"}),
        page="trtllm-serve",
        engines=1,
        read_as="undefined",
        scraped_at=99.0,
    )
    adapter = Signal(
        "alpaca", "127.0.0.1:5", "vllm", waiting=3, read_as="meta/base", lora="running"
    )
    failing = Signal(
        "m", "127.0.0.1:6", "trtllm", error="content_type", error_detail="JSON where ..."
    )
    signals = {(s.model, s.address): s for s in (partial, adapter, failing)}
    view = debug_view(signals, now=100.0)
    json.dumps(view, allow_nan=False)
    p, f = view["models"]["m"]
    assert p["missing"] == ["running", "waiting"] and p["page"] == "trtllm-serve"
    assert (p["served_total"], p["served_rate"], p["kv_usage_max"]) == (77.0, 1.5, 0.4)
    assert p["signal_of"] is None and p["error"] is None
    assert (f["error"], f["error_detail"]) == ("content_type", "JSON where ...")
    (a,) = view["models"]["alpaca"]
    assert a["signal_of"] is not None and "base model 'meta/base'" in a["signal_of"]
    assert "running" in a["signal_of"]


def prefilled(seconds: float, requests: float) -> Reading:
    return Reading(engine="vllm", prefill_seconds_total=seconds, prefill_requests_total=requests)


def test_prefill_time_is_the_mean_of_the_histograms_increases_decayed_over_its_window() -> None:
    from heliostat.signals.rates import PREFILL_TAU_S, prefill_time

    mean, state = prefill_time(None, prefilled(100.0, 1000.0), 0.0)
    assert mean is None  # one reading: no increase yet
    mean, state = prefill_time(state, prefilled(101.7, 1010.0), 1.0)
    assert mean == pytest.approx(0.17)  # ten requests, 1.7 s: cold prefills
    # Ten warm ones (35 ms) a window later: the mean is between, nearer the recent ones.
    mean, state = prefill_time(state, prefilled(102.05, 1020.0), 1.0 + PREFILL_TAU_S)
    assert 0.035 < mean < (0.17 + 0.035) / 2
    # Nothing prefilled since: the mean stands.
    same, state = prefill_time(state, prefilled(102.05, 1020.0), 2.0 + PREFILL_TAU_S)
    assert same == pytest.approx(mean)
    # A restart (counters down): the new values are the increase.
    restarted, _ = prefill_time(state, prefilled(0.35, 10.0), 3.0 + PREFILL_TAU_S)
    assert restarted is not None and 0.035 < restarted < same
    assert prefill_time(None, Reading(engine="sglang"), 0.0) == (None, None)
