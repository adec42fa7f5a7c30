"""Engine adapters on exposition text in each engine's documented format, good and bad."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heliostat.signals import Failure, Reading, Reason, read_exposition
from heliostat.signals.adapters import WANTED, adapt
from heliostat.signals.exposition import ExpositionError, SampleIndex, parse, select_lines
from heliostat.signals.record import LOAD_FIELDS

from . import expositions as ex


def ok(result: Reading | Failure) -> Reading:
    assert isinstance(result, Reading), result
    return result


def failed(result: Reading | Failure, reason: str) -> Failure:
    assert isinstance(result, Failure), result
    assert result.reason == reason, result
    return result


# --- each engine ---------------------------------------------------------------------------


def test_vllm_v1() -> None:
    r = ok(read_exposition(ex.vllm(waiting=2, running=7, kv=0.42), "vllm", "llama-8b"))
    assert (r.engine, r.waiting, r.running, r.kv_usage) == ("vllm", 2, 7, 0.42)
    assert (r.prefix_hits_total, r.prefix_queries_total) == (3.0e5, 1.0e6)
    assert r.prefix_hit_rate is None  # a rate needs two scrapes
    assert (r.num_gpu_blocks, r.block_size, r.max_num_seqs) == (27690, 16, None)


def test_vllm_data_parallel_engines_are_summed_and_kv_averaged() -> None:
    r = ok(read_exposition(ex.vllm(waiting=4, running=8, engines=("0", "1")), "vllm", "m"))
    assert (r.waiting, r.running, r.kv_usage, r.kv_usage_max) == (4, 8, 0.42, 0.42)
    assert r.prefix_queries_total == 1.0e6


def test_vllm_num_gpu_blocks_none_before_profiling() -> None:
    r = ok(read_exposition(ex.vllm(num_gpu_blocks="None"), "vllm", "m"))
    assert (r.num_gpu_blocks, r.block_size) == (None, 16)


def test_vllm_old_server_falls_back_to_removed_names() -> None:
    r = ok(read_exposition(ex.vllm_old(kv=0.3, hit_rate=0.25), "vllm", "m"))
    assert (r.waiting, r.running, r.kv_usage, r.prefix_hit_rate) == (1, 4, 0.3, 0.25)
    assert r.prefix_hits_total is None
    assert (r.num_gpu_blocks, r.block_size) == (7452, 16)


def test_vllm_v0_minus_one_hit_rate_means_prefix_caching_off() -> None:
    r = ok(read_exposition(ex.vllm_old(hit_rate=-1), "vllm", "m"))
    assert r.prefix_hit_rate is None


def test_vllm_early_v1_gpu_prefix_counters() -> None:
    r = ok(read_exposition(ex.vllm_early_v1(hits=50, queries=200), "vllm", "m"))
    assert (r.kv_usage, r.prefix_hits_total, r.prefix_queries_total) == (0.125, 50, 200)


def test_sglang() -> None:
    r = ok(read_exposition(ex.sglang(queue=5, running=12, usage=0.28), "sglang", "m"))
    assert (r.engine, r.waiting, r.running, r.kv_usage) == ("sglang", 5, 12, 0.28)
    assert r.prefix_hit_rate == 0.0075
    assert (r.block_size, r.num_gpu_blocks) == (1, 425984)


def test_triton_has_queue_only() -> None:
    r = ok(read_exposition(ex.triton(pending={"llama": 4}), "triton", "llama"))
    assert (r.engine, r.waiting, r.running, r.kv_usage, r.prefix_hit_rate) == (
        "triton",
        4,
        None,
        None,
        None,
    )


def test_triton_autodetects_trtllm_backend() -> None:
    r = ok(read_exposition(ex.triton_trtllm(waiting=3, scheduled=4, fraction=0.5), "triton", "m"))
    assert (r.engine, r.waiting, r.running, r.kv_usage) == ("triton-trtllm", 3, 4, 0.5)
    assert (r.max_num_seqs, r.num_gpu_blocks, r.block_size) == (512, 6239, 64)


def test_triton_trtllm_without_waiting_type_uses_active_minus_scheduled() -> None:
    text = ex.triton_trtllm(waiting=None, scheduled=4, active=7)
    r = ok(read_exposition(text, "triton", "m"))
    assert (r.waiting, r.running) == (3, 4)


def test_trtllm_serve() -> None:
    r = ok(read_exposition(ex.trtllm_serve(waiting=2, running=6, util=0.62), "trtllm", "x"))
    assert (r.engine, r.waiting, r.running, r.kv_usage, r.prefix_hit_rate) == (
        "trtllm",
        2,
        6,
        0.62,
        0.4,
    )


def test_tgi_has_no_kv_or_prefix() -> None:
    r = ok(read_exposition(ex.tgi(queue=3, batch=8), "tgi", "x"))
    assert (r.engine, r.waiting, r.running, r.kv_usage, r.prefix_hit_rate) == (
        "tgi",
        3,
        8,
        None,
        None,
    )


def test_openmetrics_format() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m"} 1.0\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="m"} 2.0\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m"} 0.5\n'
        "# TYPE vllm:prefix_cache_queries counter\n"
        'vllm:prefix_cache_queries_total{model_name="m"} 10.0\n'
        'vllm:prefix_cache_queries_created{model_name="m"} 1.7e9\n'
        "# TYPE vllm:prefix_cache_hits counter\n"
        'vllm:prefix_cache_hits_total{model_name="m"} 4.0\n'
        "# TYPE vllm:cache_config info\n"
        'vllm:cache_config_info{block_size="32",num_gpu_blocks="100"} 1.0\n'
        "# EOF\n"
    )
    r = ok(read_exposition(text, "vllm", "m", openmetrics=True))
    assert (r.waiting, r.running, r.kv_usage) == (1, 2, 0.5)
    assert (r.prefix_queries_total, r.prefix_hits_total, r.block_size) == (10, 4, 32)


def test_untyped_exposition_without_help_or_type_lines() -> None:
    text = "tgi_queue_size 1\ntgi_batch_current_size 2\n"
    assert ok(read_exposition(text, "tgi", "x")).waiting == 1


# --- model selection -----------------------------------------------------------------------


def test_multi_model_vllm_selects_by_model_name() -> None:
    text = ex.vllm(waiting=2, running=7, kv=0.4, extra_models=(ex.QWEN,))
    llama = ok(read_exposition(text, "vllm", ex.LLAMA))
    qwen = ok(read_exposition(text, "vllm", ex.QWEN))
    assert (llama.waiting, llama.kv_usage) == (2, 0.4)
    assert (qwen.waiting, qwen.kv_usage) == (20, 0.2)


def test_multi_model_without_our_name_is_missing_series() -> None:
    text = ex.vllm(extra_models=(ex.QWEN,))
    f = failed(read_exposition(text, "vllm", "llama-8b"), Reason.MISSING_SERIES)
    assert "llama-8b" in f.detail


def test_single_model_server_is_read_under_its_own_name() -> None:
    # vLLM labels with the HF id; the policy's name cannot spell it.
    assert ok(read_exposition(ex.vllm(), "vllm", "llama-8b")).waiting == 2


def test_multi_model_sglang_and_triton() -> None:
    text = ex.sglang(models=(ex.LLAMA, ex.QWEN))
    assert ok(read_exposition(text, "sglang", ex.QWEN)).waiting == 10
    triton = ex.triton(pending={"llama": 1, "mistral": 6})
    assert ok(read_exposition(triton, "triton", "mistral")).waiting == 6
    failed(read_exposition(triton, "triton", "other"), Reason.MISSING_SERIES)


def test_unlabelled_series_taken_when_label_absent() -> None:
    text = (
        "vllm:num_requests_waiting 3\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.1\n"
    )
    r = ok(read_exposition(text, "vllm", "anything"))
    assert (r.waiting, r.running, r.kv_usage) == (3, 1, 0.1)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-1"])
def test_bad_values_reject_the_scrape(value: str) -> None:
    text = ex.vllm().replace(
        f'vllm:num_requests_waiting{{engine="0",model_name="{ex.LLAMA}"}} 2.0',
        f'vllm:num_requests_waiting{{engine="0",model_name="{ex.LLAMA}"}} {value}',
    )
    assert text != ex.vllm()
    failed(read_exposition(text, "vllm", "m"), Reason.BAD_VALUE)


def test_nan_kv_usage_and_counter() -> None:
    failed(read_exposition(ex.vllm(kv=math.nan), "vllm", "m"), Reason.BAD_VALUE)
    failed(read_exposition(ex.vllm(queries=math.inf), "vllm", "m"), Reason.BAD_VALUE)
    failed(read_exposition(ex.vllm(hits=-5), "vllm", "m"), Reason.BAD_VALUE)


def test_kv_above_one_is_rejected_not_clamped() -> None:
    f = failed(read_exposition(ex.vllm(kv=1.7), "vllm", "m"), Reason.BAD_VALUE)
    assert "above 1" in f.detail
    failed(read_exposition(ex.sglang(usage=42.0), "sglang", "m"), Reason.BAD_VALUE)
    failed(read_exposition(ex.sglang(hit_rate=1.5), "sglang", "m"), Reason.BAD_VALUE)
    failed(read_exposition(ex.triton_trtllm(fraction=2), "triton", "m"), Reason.BAD_VALUE)
    failed(read_exposition(ex.trtllm_serve(util=1.01), "trtllm", "m"), Reason.BAD_VALUE)


def test_float_noise_above_one_is_clamped() -> None:
    assert ok(read_exposition(ex.vllm(kv=1.0000000001), "vllm", "m")).kv_usage == 1.0


def test_nan_in_a_series_we_do_not_read_is_ignored() -> None:
    text = ex.vllm() + "# TYPE vllm:some_other gauge\nvllm:some_other NaN\n"
    ok(read_exposition(text, "vllm", "m"))


@pytest.mark.parametrize(
    ("engine", "text"),
    [
        ("vllm", ex.sglang()),  # wrong engine configured
        ("sglang", ex.vllm()),
        ("triton", ex.tgi()),
        ("trtllm", ex.vllm()),
        ("tgi", ex.triton()),
        ("vllm", ""),
        ("vllm", ex.vllm_old().split("# HELP vllm:")[0]),  # process metrics only
    ],
)
def test_a_page_without_the_engines_series_is_missing_series(engine: str, text: str) -> None:
    failed(read_exposition(text, engine, "m"), Reason.MISSING_SERIES)


@pytest.mark.parametrize(
    ("engine", "text", "missing"),
    [
        (
            "vllm",
            ex.vllm().replace("vllm:kv_cache_usage_perc", "vllm:other_perc"),
            {"kv_usage"},
        ),
        ("tgi", "tgi_queue_size 1\n", {"running", "kv_usage", "prefix_hit_rate", "served_total"}),
        (
            "triton",
            ex.triton_trtllm().replace('"scheduled"', '"other"'),
            {"running", "prefix_hit_rate"},
        ),
    ],
)
def test_a_field_the_page_lacks_is_missing_not_a_failure(
    engine: str, text: str, missing: set[str]
) -> None:
    r = ok(read_exposition(text, engine, "m"))
    assert r.missing == missing
    for field in missing:
        assert getattr(r, field) is None


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>502 Bad Gateway</body></html>",
        '{"error": "not found"}',
        "tgi_queue_size 1\ntgi_batch_current_size\n",
        "tgi_queue_size one\ntgi_batch_current_size 2\n",
        'tgi_queue_size{a="b" 1\ntgi_batch_current_size 2\n',
        "\x00\x01\x02 binary",
    ],
)
def test_malformed_text_is_a_parse_failure(text: str) -> None:
    failed(read_exposition(text, "tgi", "m"), Reason.PARSE)


def test_truncated_vllm_page_is_a_parse_failure() -> None:
    text = ex.vllm()
    cut = text.index("vllm:kv_cache_usage_perc{") + len("vllm:kv_cache_usage_perc{engi")
    failed(read_exposition(text[:cut], "vllm", "m"), Reason.PARSE)


def test_adapt_turns_a_bug_into_internal_failure() -> None:
    class Broken(SampleIndex):
        def get(self, name: str) -> list[tuple[dict[str, str], float]]:  # type: ignore[override]
            raise RuntimeError("boom")

    failed(adapt("vllm", Broken(), "m"), Reason.INTERNAL)


# --- the line filter -----------------------------------------------------------------------


def test_only_wanted_lines_are_parsed() -> None:
    selected = "\n".join(select_lines(ex.vllm(), WANTED["vllm"]))
    assert "vllm:time_to_first_token_seconds" not in selected
    assert "# TYPE" not in selected
    assert f'vllm:num_requests_waiting{{engine="0",model_name="{ex.LLAMA}"}}' in selected
    index = parse(ex.vllm(), WANTED["vllm"])
    assert "vllm:prefix_cache_hits_total" in index
    assert "vllm:e2e_request_latency_seconds_bucket" not in index


def test_parse_raises_only_exposition_error() -> None:
    with pytest.raises(ExpositionError):
        parse("<html>", WANTED["tgi"])


# --- property: never raises ----------------------------------------------------------------

_names = st.sampled_from([*sorted(set().union(*WANTED.values())), "foo", "up"])
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "0x10", "", "1 2 3"]),
)
_labels = st.dictionaries(
    st.sampled_from(["model_name", "model", "engine", "request_type", "kv_cache_block_type"]),
    st.sampled_from(["m", "x", "waiting", "fraction", "scheduled", '"', "\\"]),
    max_size=3,
)


@st.composite
def _exposition(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(_names)
        labels = draw(_labels)
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(
            f"{name}{{{label_text}}} {draw(_value)}" if labels else f"{name} {draw(_value)}"
        )
        if draw(st.booleans()):
            lines.append(draw(st.text(max_size=20)))
    return "\n".join(lines)


@settings(max_examples=300, deadline=None)
@given(text=_exposition(), engine=st.sampled_from(sorted(WANTED)))
def test_adapters_never_raise(text: str, engine: str) -> None:
    result = read_exposition(text, engine, "m")
    assert isinstance(result, Reading | Failure)
    if isinstance(result, Failure):
        assert result.reason != Reason.INTERNAL, result
    else:
        for value in (result.waiting, result.running, result.kv_usage, result.prefix_hit_rate):
            assert value is None or (math.isfinite(value) and value >= 0)
        for fraction in (result.kv_usage, result.kv_usage_max, result.prefix_hit_rate):
            assert fraction is None or fraction <= 1
        if result.kv_usage is not None:
            assert result.kv_usage_max is not None and result.kv_usage <= result.kv_usage_max
        assert result.served_total is None or math.isfinite(result.served_total)
        assert result.missing < frozenset(LOAD_FIELDS)  # something was read


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), engine=st.sampled_from(sorted(WANTED)))
def test_arbitrary_text_never_raises(text: str, engine: str) -> None:
    assert isinstance(read_exposition(text, engine, "m"), Reading | Failure)


# --- the sample-line parser agrees with prometheus_client's ----------------------------------

_label_value = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@settings(max_examples=300, deadline=None)
@given(
    labels=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), _label_value, max_size=4
    ),
    value=st.one_of(
        st.floats(allow_nan=False).map(repr), st.sampled_from(["NaN", "+Inf", "-Inf", "1e3"])
    ),
    timestamp=st.booleans(),
    spaces=st.sampled_from(["", " "]),
)
def test_line_parser_agrees_with_prometheus_client(
    labels: dict[str, str], value: str, timestamp: bool, spaces: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    body = ",".join(f'{k}{spaces}={spaces}"{_escape(v)}"' for k, v in labels.items())
    line = f"tgi_queue_size{{{body}}} {value}" + (" 1712345678000" if timestamp else "")
    ours = parse(line + "\n", WANTED["tgi"]).get("tgi_queue_size")
    (theirs,) = [s for f in text_string_to_metric_families(line + "\n") for s in f.samples]
    assert [dict(lb) for lb, _ in ours] == [theirs.labels]
    ((_, v),) = ours
    assert (math.isnan(v) and math.isnan(theirs.value)) or v == theirs.value
