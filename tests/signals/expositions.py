"""Exposition texts in each engine's documented format, for adapter and scraper tests.

Shapes follow the engines' published /metrics samples: HELP/TYPE lines, the label sets each
engine uses (vLLM `engine` + `model_name`, SGLang `model_name`, Triton `model` + `version`),
and the bulk of histograms a real server sends around the few series heliostat reads.
"""

from __future__ import annotations

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen3-32B"

_PROCESS = """\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 21451.0
python_gc_objects_collected_total{generation="1"} 3977.0
python_gc_objects_collected_total{generation="2"} 804.0
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="12",patchlevel="9",version="3.12.9"} 1.0
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 1.0744455168e+011
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.115667456e+09
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.74712351214e+09
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1843.52
"""

_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


def _histogram(name: str, help_: str, labels: str, buckets: tuple[float, ...], n: int) -> str:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    total = 0.0
    for i, le in enumerate(buckets):
        count = n * (i + 1) // len(buckets)
        total += le * count / 10
        lines.append(f'{name}_bucket{{{labels},le="{float(le)}"}} {float(count)}')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(n)}')
    lines.append(f"{name}_count{{{labels}}} {float(n)}")
    lines.append(f"{name}_sum{{{labels}}} {total}")
    return "\n".join(lines) + "\n"


def _vllm_histograms(labels: str, n: int) -> str:
    parts = []
    for name, help_ in (
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds."),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds."),
        ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase."),
        ("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase."),
        ("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase."),
        ("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase."),
        ("vllm:time_per_output_token_seconds", "Histogram of time per output token."),
    ):
        parts.append(_histogram(name, help_, labels, _LATENCY_BUCKETS, n))
    for name, help_ in (
        ("vllm:request_prompt_tokens", "Number of prefill tokens processed."),
        ("vllm:request_generation_tokens", "Number of generation tokens processed."),
        ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step."),
        ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter."),
    ):
        parts.append(_histogram(name, help_, labels, _TOKEN_BUCKETS, n))
    return "".join(parts)


def vllm(
    *,
    waiting: float = 2,
    running: float = 7,
    kv: float = 0.42,
    hits: float = 3.0e5,
    queries: float = 1.0e6,
    model_name: str = LLAMA,
    engines: tuple[str, ...] = ("0",),
    extra_models: tuple[str, ...] = (),
    num_gpu_blocks: str = "27690",
    block_size: str = "16",
) -> str:
    """A vLLM v1 /metrics page. Per-engine values are divided so the model's sums are as given.

    `extra_models` adds other models (with different numbers) to make a multi-model page.
    """
    out = [_PROCESS]
    models = [(model_name, 1.0), *[(m, 10.0) for m in extra_models]]

    def family(name: str, kind: str, help_: str, value: float, split: bool) -> None:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        for model, scale in models:
            for engine in engines:
                v = value * scale / (len(engines) if split else 1)
                out.append(f'{name}{{engine="{engine}",model_name="{model}"}} {v!r}\n')

    family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
           running, True)  # fmt: skip
    family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
           waiting, True)  # fmt: skip
    out.append(
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
    )
    for model, scale in models:
        for engine in engines:
            out.append(
                f'vllm:kv_cache_usage_perc{{engine="{engine}",model_name="{model}"}} '
                f"{kv * (0.5 if scale > 1 else 1.0)!r}\n"
            )
    family("vllm:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in number of queried tokens.", queries, True)  # fmt: skip
    family("vllm:prefix_cache_hits_total", "counter",
           "Prefix cache hits, in number of cached tokens.", hits, True)  # fmt: skip
    family("vllm:num_preemptions_total", "counter", "Cumulative number of preemption.", 3, True)
    family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", 9e6, True)
    family("vllm:generation_tokens_total", "counter", "Number of generation tokens.", 4e6, True)
    out.append(
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
        "# TYPE vllm:cache_config_info gauge\n"
    )
    for engine in engines:
        out.append(
            f'vllm:cache_config_info{{block_size="{block_size}",cache_dtype="auto",'
            f'calculate_kv_scales="False",cpu_offload_gb="0",enable_prefix_caching="True",'
            f'engine="{engine}",gpu_memory_utilization="0.9",is_attention_free="False",'
            f'num_cpu_blocks="None",num_gpu_blocks="{num_gpu_blocks}",'
            f'num_gpu_blocks_override="None",prefix_caching_hash_algo="builtin",'
            f'sliding_window="None",swap_space="4",swap_space_bytes="4294967296"}} 1.0\n'
        )
    for model, _ in models:
        for engine in engines:
            out.append(_vllm_histograms(f'engine="{engine}",model_name="{model}"', 1200))
    return "".join(out)


def vllm_old(
    *, waiting: float = 1, running: float = 4, kv: float = 0.3, hit_rate: float | None = 0.25
) -> str:
    """A vLLM V0 page: `gpu_cache_usage_perc` and the `gpu_prefix_cache_hit_rate` gauge."""
    text = (
        _PROCESS + "# HELP vllm:num_requests_running Number of requests currently running on GPU.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="{LLAMA}"}} {running}\n'
        "# HELP vllm:num_requests_swapped Number of requests swapped to CPU.\n"
        "# TYPE vllm:num_requests_swapped gauge\n"
        f'vllm:num_requests_swapped{{model_name="{LLAMA}"}} 0.0\n'
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{model_name="{LLAMA}"}} {waiting}\n'
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        f'vllm:gpu_cache_usage_perc{{model_name="{LLAMA}"}} {kv}\n'
        "# HELP vllm:cpu_cache_usage_perc CPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:cpu_cache_usage_perc gauge\n"
        f'vllm:cpu_cache_usage_perc{{model_name="{LLAMA}"}} 0.0\n'
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",'
        'gpu_memory_utilization="0.9",num_cpu_blocks="2048",num_gpu_blocks="7452",'
        'sliding_window="None",swap_space_bytes="4294967296"} 1.0\n'
    )
    if hit_rate is not None:
        text += (
            "# HELP vllm:gpu_prefix_cache_hit_rate GPU prefix cache block hit rate.\n"
            "# TYPE vllm:gpu_prefix_cache_hit_rate gauge\n"
            f'vllm:gpu_prefix_cache_hit_rate{{model_name="{LLAMA}"}} {hit_rate}\n'
        )
    return text + _vllm_histograms(f'model_name="{LLAMA}"', 300)


def vllm_early_v1(*, hits: float = 50.0, queries: float = 200.0) -> str:
    """Early vLLM V1: `gpu_cache_usage_perc` and `gpu_prefix_cache_{queries,hits}` counters."""
    m = f'engine="0",model_name="{LLAMA}"'
    return (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f"vllm:num_requests_running{{{m}}} 3.0\n"
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        f"vllm:num_requests_waiting{{{m}}} 0.0\n"
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        f"vllm:gpu_cache_usage_perc{{{m}}} 0.125\n"
        "# HELP vllm:gpu_prefix_cache_queries_total GPU prefix cache queries, in terms of "
        "number of queried tokens.\n"
        "# TYPE vllm:gpu_prefix_cache_queries_total counter\n"
        f"vllm:gpu_prefix_cache_queries_total{{{m}}} {queries}\n"
        "# HELP vllm:gpu_prefix_cache_hits_total GPU prefix cache hits, in terms of number of "
        "cached tokens.\n"
        "# TYPE vllm:gpu_prefix_cache_hits_total counter\n"
        f"vllm:gpu_prefix_cache_hits_total{{{m}}} {hits}\n"
    )


def sglang(
    *,
    queue: float = 5,
    running: float = 12,
    usage: float = 0.28,
    hit_rate: float = 0.0075,
    models: tuple[str, ...] = (LLAMA,),
) -> str:
    """SGLang (--enable-metrics), as in its production-metrics docs."""
    out = [_PROCESS]
    for name, kind, help_, value in (
        ("sglang:prompt_tokens_total", "counter", "Number of prefill tokens processed.", 8.1e6),
        ("sglang:generation_tokens_total", "counter", "Number of generation tokens.", 7.5e6),
        ("sglang:token_usage", "gauge", "The token usage", usage),
        ("sglang:cache_hit_rate", "gauge", "The cache hit rate", hit_rate),
        ("sglang:num_running_reqs", "gauge", "The number of running requests", running),
        ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue", queue),
        ("sglang:gen_throughput", "gauge", "The generation throughput (token/s)", 355.1),
        ("sglang:page_size", "gauge", "The page size of the KV cache", 1),
        ("sglang:num_pages", "gauge", "The number of pages of the KV cache", 425984),
    ):
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        for i, model in enumerate(models):
            v = value if i == 0 or kind == "counter" else value * 2
            out.append(f'{name}{{model_name="{model}"}} {v}\n')
    for model in models:
        out.append(
            _histogram(
                "sglang:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                f'model_name="{model}"',
                _LATENCY_BUCKETS,
                800,
            )
        )
    return "".join(out)


def triton(*, pending: dict[str, float] | None = None) -> str:
    """Plain Triton: per model/version inference counters and the pending-request gauge."""
    pending = pending if pending is not None else {"llama": 4}
    out = []
    for name, kind, help_ in (
        ("nv_inference_request_success", "counter", "Number of successful inference requests"),
        ("nv_inference_request_failure", "counter", "Number of failed inference requests"),
        ("nv_inference_count", "counter", "Number of inferences performed"),
        ("nv_inference_exec_count", "counter", "Number of model executions performed"),
        ("nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests"),
    ):
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        for model, value in pending.items():
            v = value if kind == "gauge" else 1234.0
            out.append(f'{name}{{model="{model}",version="1"}} {v}\n')
    out.append(
        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n"
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-7e8d1f4a-1c2b-4d3e-9f8a-0b1c2d3e4f5a"} 0.78\n'
    )
    return "".join(out)


def triton_trtllm(
    *,
    waiting: float | None = 3,
    scheduled: float = 4,
    active: float = 7,
    fraction: float = 0.5,
    model: str = "tensorrt_llm",
) -> str:
    """Triton with the TensorRT-LLM backend (batch manager statistics, `nv_trt_llm_*`)."""
    kinds = [("context", 1), ("scheduled", scheduled), ("max", 512), ("active", active)]
    if waiting is not None:
        kinds.insert(0, ("waiting", waiting))
    out = [triton(pending={"ensemble": 0, "preprocessing": 0, model: 0, "postprocessing": 0})]
    out.append(
        "# HELP nv_trt_llm_request_metrics TRT LLM request metrics\n"
        "# TYPE nv_trt_llm_request_metrics gauge\n"
    )
    for kind, value in kinds:
        out.append(
            f'nv_trt_llm_request_metrics{{model="{model}",request_type="{kind}",version="1"}} '
            f"{value}\n"
        )
    out.append(
        "# HELP nv_trt_llm_runtime_memory_metrics TRT LLM runtime memory metrics\n"
        "# TYPE nv_trt_llm_runtime_memory_metrics gauge\n"
        f'nv_trt_llm_runtime_memory_metrics{{memory_type="pinned",model="{model}",version="1"}} 0\n'
        f'nv_trt_llm_runtime_memory_metrics{{memory_type="gpu",model="{model}",version="1"}} '
        "1610236\n"
        "# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics\n"
        "# TYPE nv_trt_llm_kv_cache_block_metrics gauge\n"
    )
    for kind, value in (
        ("tokens_per", 64),
        ("used", 1),
        ("free", 6239),
        ("max", 6239),
        ("fraction", fraction),
    ):
        out.append(
            f'nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type="{kind}",model="{model}",'
            f'version="1"}} {value}\n'
        )
    return "".join(out)


def trtllm_serve(
    *, waiting: float = 2, running: float = 6, util: float = 0.62, hit_rate: float = 0.4
) -> str:
    """`trtllm-serve` /prometheus/metrics, labelled by model_name and engine_type."""
    m = 'engine_type="trtllm",model_name="llama-8b"'
    return (
        "# HELP trtllm_num_requests_waiting Number of requests waiting.\n"
        "# TYPE trtllm_num_requests_waiting gauge\n"
        f"trtllm_num_requests_waiting{{{m}}} {waiting}\n"
        "# HELP trtllm_num_requests_running Number of requests running.\n"
        "# TYPE trtllm_num_requests_running gauge\n"
        f"trtllm_num_requests_running{{{m}}} {running}\n"
        "# HELP trtllm_kv_cache_utilization KV cache utilization of the GPU pool.\n"
        "# TYPE trtllm_kv_cache_utilization gauge\n"
        f"trtllm_kv_cache_utilization{{{m}}} {util}\n"
        "# HELP trtllm_kv_cache_hit_rate KV cache hit rate.\n"
        "# TYPE trtllm_kv_cache_hit_rate gauge\n"
        f"trtllm_kv_cache_hit_rate{{{m}}} {hit_rate}\n"
        "# HELP trtllm_request_success_total Count of successfully processed requests.\n"
        "# TYPE trtllm_request_success_total counter\n"
        f'trtllm_request_success_total{{{m},finished_reason="stop"}} 912.0\n'
    )


def tgi(*, queue: float = 3, batch: float = 8) -> str:
    """TGI's router metrics (no labels on the gauges)."""
    return (
        "# TYPE tgi_batch_current_max_tokens gauge\n"
        "tgi_batch_current_max_tokens 3812\n"
        "# TYPE tgi_batch_current_size gauge\n"
        f"tgi_batch_current_size {batch}\n"
        "# TYPE tgi_queue_size gauge\n"
        f"tgi_queue_size {queue}\n"
        "# TYPE tgi_request_count counter\n"
        "tgi_request_count 150\n"
        "# TYPE tgi_request_duration histogram\n"
        'tgi_request_duration_bucket{le="0.5"} 12\n'
        'tgi_request_duration_bucket{le="1"} 90\n'
        'tgi_request_duration_bucket{le="+Inf"} 150\n'
        "tgi_request_duration_sum 187.5\n"
        "tgi_request_duration_count 150\n"
    )
