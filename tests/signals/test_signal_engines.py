"""Every engine's adapter on pages shaped like the real ones (tests/signals/expositions.py names
each page's public source): current and older names, partial pages, derived values, success
counters, data-parallel engines and LoRA adapters."""

from __future__ import annotations

import pytest

from heliostat.signals import Failure, Reading, Reason, read_exposition
from heliostat.signals.adapters import UNREPORTED

from . import expositions as ex

NOTHING = frozenset[str]()


def ok(result: Reading | Failure) -> Reading:
    assert isinstance(result, Reading), result
    return result


# --- vLLM -----------------------------------------------------------------------------------


def test_vllm_v1_page() -> None:
    r = ok(read_exposition(ex.vllm(served={"stop": 1100, "length": 97, "abort": 3}), "vllm", "x"))
    assert (r.page, r.engines, r.read_as, r.missing) == ("vllm v1", 1, ex.LLAMA, NOTHING)
    assert (r.served_total, r.kv_usage, r.kv_usage_max) == (1200, 0.42, 0.42)
    assert r.lora is None


def test_vllm_success_counter_exists_at_zero_before_any_request() -> None:
    r = ok(read_exposition(ex.vllm(served={}), "vllm", "x"))
    assert r.served_total == 0 and "served_total" not in r.missing


def test_vllm_data_parallel_keeps_the_aggregate_and_the_fullest_engine() -> None:
    text = ex.vllm(waiting=6, running=10, engines=("0", "1"), kv_per_engine=(0.98, 0.10))
    r = ok(read_exposition(text, "vllm", "x"))
    assert (r.waiting, r.running, r.engines) == (6, 10, 2)
    assert r.kv_usage == pytest.approx(0.54)  # the server's aggregate, as before
    assert r.kv_usage_max == 0.98  # one engine is full: the control law can tell
    assert r.served_total == 1200  # summed over engines and finished reasons
    assert (r.num_gpu_blocks, r.block_size) == (2 * 27690, 16)  # the server's pool, per block


def test_vllm_v0_page() -> None:
    r = ok(read_exposition(ex.vllm_old(kv=0.3), "vllm", "x"))
    assert (r.page, r.engines, r.served_total, r.kv_usage_max) == ("vllm v0", 1, 422, 0.3)
    assert r.missing == NOTHING


def test_vllm_early_v1_page_has_no_success_counter_yet() -> None:
    r = ok(read_exposition(ex.vllm_early_v1(), "vllm", "x"))
    assert r.page == "vllm v1 (early names: gpu_cache_usage_perc)"
    assert r.missing == {"served_total"}


def test_multi_model_page_reads_each_models_counter() -> None:
    text = ex.vllm(extra_models=(ex.QWEN,))
    assert ok(read_exposition(text, "vllm", ex.LLAMA)).served_total == 1200
    assert ok(read_exposition(text, "vllm", ex.QWEN)).served_total == 12000


# --- LoRA adapters on vLLM ------------------------------------------------------------------


def test_undeclared_adapter_found_running_in_lora_stats() -> None:
    text = ex.vllm(lora=("2", "alpaca,underdog", ""))
    r = ok(read_exposition(text, "vllm", "alpaca"))
    assert (r.read_as, r.lora) == (ex.LLAMA, "running")  # the base model's numbers


def test_declared_adapter_waiting_and_idle() -> None:
    text = ex.vllm(lora=("2", "alpaca", "underdog"))
    waiting = ok(read_exposition(text, "vllm", ex.LLAMA, model="underdog", lora=True))
    assert (waiting.read_as, waiting.lora) == (ex.LLAMA, "waiting")
    idle = ok(read_exposition(text, "vllm", ex.LLAMA, model="other", lora=True))
    assert idle.lora == "idle"


def test_a_model_label_that_only_selects_is_not_an_adapter() -> None:
    # model_label names a model on a multi-model page; without `lora` nothing is claimed.
    text = ex.vllm(extra_models=(ex.QWEN,))
    assert ok(read_exposition(text, "vllm", ex.QWEN, model="qwen")).lora is None


def test_newest_lora_series_is_the_current_one() -> None:
    # The fixture's older series lists no adapters; only the newest says 'running'.
    assert ok(read_exposition(ex.vllm(lora=("1", "a", "")), "vllm", "a")).lora == "running"


def test_base_model_under_another_name_is_not_called_an_adapter() -> None:
    r = ok(read_exposition(ex.vllm(lora=("2", "alpaca", "")), "vllm", "llama-8b"))
    assert (r.read_as, r.lora) == (ex.LLAMA, None)
    base = ok(read_exposition(ex.vllm(lora=("2", "alpaca", "")), "vllm", ex.LLAMA))
    assert base.lora is None


def test_declared_adapter_on_an_engine_without_lora_stats_is_unreported() -> None:
    r = ok(read_exposition(ex.sglang(), "sglang", ex.LLAMA, model="alpaca", lora=True))
    assert (r.read_as, r.lora) == (ex.LLAMA, UNREPORTED)
    vllm = ok(read_exposition(ex.vllm(), "vllm", ex.LLAMA, model="alpaca", lora=True))
    assert vllm.lora == UNREPORTED  # LoRA not enabled on that server: it says nothing


# --- SGLang ---------------------------------------------------------------------------------


def test_sglang_current_page() -> None:
    r = ok(read_exposition(ex.sglang(served=5321), "sglang", "x"))
    assert (r.page, r.served_total, r.block_size, r.num_gpu_blocks) == ("sglang", 5321, 1, 425984)
    assert r.missing == NOTHING


def test_sglang_before_0_5_11_has_page_size_and_count_in_cache_config_info_labels() -> None:
    r = ok(read_exposition(ex.sglang(cache_config_info=True), "sglang", "x"))
    assert (r.block_size, r.num_gpu_blocks) == (64, 11147)
    assert r.page == "sglang <0.5.11 (cache_config_info labels)"


def test_sglang_dp_ranks_are_engines() -> None:
    r = ok(read_exposition(ex.sglang(queue=6, running=10, dp_usage=(0.9, 0.2)), "sglang", "x"))
    assert (r.waiting, r.running, r.engines, r.kv_usage_max) == (6, 10, 2, 0.9)
    assert r.kv_usage == pytest.approx(0.55)
    assert (r.block_size, r.num_gpu_blocks) == (1, 2 * 425984)


# --- Triton and its TensorRT-LLM backend ----------------------------------------------------


def test_triton_queue_and_success_counter_only() -> None:
    r = ok(read_exposition(ex.triton(pending={"llama": 4}, success=900), "triton", "llama"))
    assert (r.page, r.waiting, r.served_total) == ("triton", 4, 900)
    assert r.missing == {"running", "kv_usage", "prefix_hit_rate"}


def test_triton_trtllm_current_backend() -> None:
    r = ok(read_exposition(ex.triton_trtllm(fraction=0.5), "triton", "llama"))
    assert (r.page, r.read_as, r.kv_usage, r.served_total) == (
        "triton tensorrt-llm",
        "tensorrt_llm",
        0.5,
        2210,
    )


def test_older_triton_trtllm_backend_kv_from_block_counts() -> None:
    text = ex.triton_trtllm(waiting=None, fraction=None, scheduled=4, active=9, used=4680)
    r = ok(read_exposition(text, "triton", "llama"))
    assert r.kv_usage == r.kv_usage_max == pytest.approx(4680 / 6239)
    assert (r.waiting, r.running) == (5, 4)
    assert r.page is not None and "KV = used / max blocks" in r.page
    assert r.missing == {"prefix_hit_rate"}


def test_block_counts_above_capacity_are_a_bad_value() -> None:
    text = ex.triton_trtllm(fraction=None, used=7000, max_blocks=6239)
    f = read_exposition(text, "triton", "llama")
    assert isinstance(f, Failure) and f.reason == Reason.BAD_VALUE


# --- trtllm-serve ---------------------------------------------------------------------------


def test_trtllm_serve_current_page() -> None:
    r = ok(read_exposition(ex.trtllm_serve(util=0.62, served=(900, 43)), "trtllm", "x"))
    assert (r.page, r.waiting, r.running, r.kv_usage, r.served_total) == (
        "trtllm-serve",
        2,
        6,
        0.62,
        943,
    )
    assert (r.max_num_seqs, r.num_gpu_blocks, r.block_size) == (2048, 16384, 32)
    assert r.missing == NOTHING


def test_trtllm_serve_without_queue_keeps_kv_and_hit_rate() -> None:
    r = ok(read_exposition(ex.trtllm_serve_no_queue(util=0.37, hit_rate=0.55), "trtllm", "x"))
    assert (r.kv_usage, r.prefix_hit_rate, r.served_total) == (0.37, 0.55, 77)
    assert r.missing == {"waiting", "running"}
    assert r.read_as == "undefined"


def test_trtllm_serve_mid_2025_reads_only_the_unprefixed_success_counter() -> None:
    r = ok(read_exposition(ex.trtllm_serve_mid_2025(served=12), "trtllm", "x"))
    assert r.served_total == 12
    assert r.missing == {"waiting", "running", "kv_usage", "prefix_hit_rate"}
    assert r.page == "trtllm-serve (unprefixed names of mid-2025)"


def test_trtllm_serve_kv_from_block_counts_when_utilization_is_absent() -> None:
    text = ex.trtllm_serve(util=0.25).replace("trtllm_kv_cache_utilization", "x_removed")
    assert ok(read_exposition(text, "trtllm", "x")).kv_usage == pytest.approx(4096 / 16384)


def test_json_statistics_served_as_text_name_the_fix() -> None:
    for body in (ex.TRTLLM_SERVE_JSON_METRICS, "[]"):
        f = read_exposition(body, "trtllm", "x")
        assert isinstance(f, Failure) and f.reason == Reason.PARSE
        assert f.detail == "JSON where Prometheus text was expected: set signals.metrics_path"


# --- TGI ------------------------------------------------------------------------------------


def test_tgi_success_counter() -> None:
    r = ok(read_exposition(ex.tgi(success=148), "tgi", "x"))
    assert (r.page, r.served_total, r.engines) == ("tgi", 148, 1)
    assert r.missing == {"kv_usage", "prefix_hit_rate"}


def test_vllm_prefill_histogram_sum_and_count_are_read() -> None:
    text = ex.vllm()
    line = {
        part.split("{")[0]: float(part.rsplit(" ", 1)[1])
        for part in text.splitlines()
        if part.startswith("vllm:request_prefill_time_seconds_")
    }
    r = ok(read_exposition(text, "vllm", "x"))
    assert r.prefill_seconds_total == pytest.approx(line["vllm:request_prefill_time_seconds_sum"])
    assert r.prefill_requests_total == line["vllm:request_prefill_time_seconds_count"]
    assert r.prefill_requests_total is not None and r.prefill_requests_total > 0


def test_an_engine_without_a_prefill_histogram_reports_none() -> None:
    r = ok(read_exposition(ex.vllm_early_v1(), "vllm", "x"))
    assert (r.prefill_seconds_total, r.prefill_requests_total) == (None, None)
