"""Exposition texts shaped like each engine's real /metrics page, for adapter and scraper tests.

Each page builder names, in its docstring, the public source whose shape it follows (the
engine's own metrics code or documentation): metric names, HELP/TYPE lines, the label sets (in
the order the exporters print them: sorted by name, `as_printed`), the series present from the start
(vLLM's success counter at 0 for every finished_reason), and the bulk of histograms a real
server sends around the few series heliostat reads. Values are invented; shapes are not.
"""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}( .*)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def as_printed(text: str) -> str:
    """Labels in the order the engines' exporters print them: prometheus_client (vLLM, SGLang,
    trtllm-serve) and Triton's prometheus-cpp sort them by name."""
    lines = []
    for line in text.splitlines(keepends=True):
        m = _SAMPLE.match(line.rstrip("\n"))
        if m is None:
            lines.append(line)
            continue
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(_LABEL.findall(m.group(2))))
        lines.append(f"{m.group(1)}{{{labels}}}{m.group(3)}\n")
    return "".join(lines)


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


_VLLM_FINISHED_REASONS = ("stop", "length", "abort")  # str(FinishReason), vllm/v1/engine


def _vllm_cache_config(block_size: str, num_gpu_blocks: str, engine: str | None) -> str:
    """`vllm:cache_config_info`: every CacheConfig field a label (metrics_info()), then the
    engine index; no model_name."""
    labels = (
        f'block_size="{block_size}",cache_dtype="auto",calculate_kv_scales="False",'
        f'cpu_offload_gb="0",enable_prefix_caching="True",gpu_memory_utilization="0.9",'
        f'is_attention_free="False",num_cpu_blocks="None",num_gpu_blocks="{num_gpu_blocks}",'
        f'num_gpu_blocks_override="None",prefix_caching_hash_algo="builtin",'
        f'sliding_window="None",swap_space="4",swap_space_bytes="4294967296"'
    )
    if engine is not None:
        labels += f',engine="{engine}"'
    return f"vllm:cache_config_info{{{labels}}} 1.0\n"


def _vllm_success(
    models: list[tuple[str, float]], engines: tuple[str, ...], served: dict[str, float]
) -> str:
    """`vllm:request_success_total` samples (the family's HELP/TYPE come before)."""
    out = []
    for model, scale in models:
        for engine in engines:
            for reason in _VLLM_FINISHED_REASONS:
                v = served.get(reason, 0.0) * scale / len(engines)
                out.append(
                    f'vllm:request_success_total{{model_name="{model}",engine="{engine}",'
                    f'finished_reason="{reason}"}} {v!r}\n'
                )
    return "".join(out)


def _vllm_lora(max_lora: str, running_adapters: str, waiting_adapters: str) -> str:
    """`vllm:lora_requests_info` as a LoRA-enabled server prints it: an older idle series and
    the current one."""
    return (
        "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
        "# TYPE vllm:lora_requests_info gauge\n"
        f'vllm:lora_requests_info{{max_lora="{max_lora}",running_lora_adapters="",'
        f'waiting_lora_adapters=""}} 1.747123001416e+09\n'
        f'vllm:lora_requests_info{{max_lora="{max_lora}",'
        f'running_lora_adapters="{running_adapters}",'
        f'waiting_lora_adapters="{waiting_adapters}"}} 1.747123512846e+09\n'
    )


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
    kv_per_engine: tuple[float, ...] | None = None,
    served: dict[str, float] | None = None,
    lora: tuple[str, str, str] | None = None,
) -> str:
    """A vLLM v1 /metrics page (vllm-project/vllm, vllm/v1/metrics/loggers.py,
    PrometheusStatLogger).

    Every series carries `model_name` and `engine` (one value per data-parallel engine core);
    `vllm:request_success_total` exists from start-up for each finished_reason (stop, length,
    abort); `vllm:cache_config_info` has the cache config fields and `engine`, no model_name.
    Per-engine counts are divided so the model's sums are as given; `kv_per_engine` gives each
    engine its own KV use (else all have `kv`). `served` is the success count per
    finished_reason, split over the engines. `lora` = (max_lora, running, waiting) adds
    `vllm:lora_requests_info` as a LoRA-enabled server prints it (two updates: an older idle
    series and the current one). `extra_models` adds other models with different numbers to make
    a multi-model page (several servers behind one exporter).
    """
    served = served if served is not None else {"stop": 1100.0, "length": 97.0, "abort": 3.0}
    kvs = kv_per_engine if kv_per_engine is not None else tuple(kv for _ in engines)
    assert len(kvs) == len(engines)
    out = [_PROCESS]
    models = [(model_name, 1.0), *[(m, 10.0) for m in extra_models]]

    def family(name: str, kind: str, help_: str, value: float, split: bool) -> None:
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        for model, scale in models:
            for engine in engines:
                v = value * scale / (len(engines) if split else 1)
                out.append(f'{name}{{model_name="{model}",engine="{engine}"}} {v!r}\n')

    family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
           running, True)  # fmt: skip
    family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
           waiting, True)  # fmt: skip
    out.append(
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
    )
    for model, scale in models:
        for engine, engine_kv in zip(engines, kvs, strict=True):
            out.append(
                f'vllm:kv_cache_usage_perc{{model_name="{model}",engine="{engine}"}} '
                f"{engine_kv * (0.5 if scale > 1 else 1.0)!r}\n"
            )
    family("vllm:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in terms of number of queried tokens.", queries,
           True)  # fmt: skip
    family("vllm:prefix_cache_hits_total", "counter",
           "Prefix cache hits, in terms of number of cached tokens.", hits, True)  # fmt: skip
    family("vllm:num_preemptions_total", "counter",
           "Cumulative number of preemption from the engine.", 3, True)  # fmt: skip
    family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", 9e6, True)
    family("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
           4e6, True)  # fmt: skip
    out.append(
        "# HELP vllm:request_success_total Count of successfully processed requests.\n"
        "# TYPE vllm:request_success_total counter\n"
    )
    out.append(_vllm_success(models, engines, served))
    out.append(
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
        "# TYPE vllm:cache_config_info gauge\n"
    )
    for engine in engines:
        out.append(_vllm_cache_config(block_size, num_gpu_blocks, engine))
    if lora is not None:
        out.append(_vllm_lora(*lora))
    for model, _ in models:
        for engine in engines:
            out.append(_vllm_histograms(f'model_name="{model}",engine="{engine}"', 1200))
    return as_printed("".join(out))


def vllm_old(
    *, waiting: float = 1, running: float = 4, kv: float = 0.3, hit_rate: float | None = 0.25
) -> str:
    """A vLLM V0 page (vllm-project/vllm, vllm/engine/metrics.py; the V0 list in
    docs/source/design/v1/metrics.md): `model_name` only, `gpu_cache_usage_perc`, the
    `gpu_prefix_cache_hit_rate` gauge, `request_success_total` by finished_reason."""
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
        "# HELP vllm:request_success_total Count of successfully processed requests.\n"
        "# TYPE vllm:request_success_total counter\n"
        f'vllm:request_success_total{{finished_reason="stop",model_name="{LLAMA}"}} 410.0\n'
        f'vllm:request_success_total{{finished_reason="length",model_name="{LLAMA}"}} 12.0\n'
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
    return as_printed(text + _vllm_histograms(f'model_name="{LLAMA}"', 300))


def vllm_early_v1(*, hits: float = 50.0, queries: float = 200.0) -> str:
    """Early vLLM V1 (0.8/0.9, vllm/v1/metrics/loggers.py then): `gpu_cache_usage_perc` and the
    `gpu_prefix_cache_{queries,hits}` counters, already per engine."""
    m = f'model_name="{LLAMA}",engine="0"'
    return as_printed(
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


def _sglang_value(name: str, value: float, rank_usage: float, *, first: bool, ranks: int) -> float:
    """One scheduler gauge's value for a model and dp rank: KV use per rank (halved for the
    other models), queue and running split over the ranks, the rest scaled per model."""
    scale = 1 if first else 2
    if name == "sglang:token_usage":
        return rank_usage * (1 if first else 0.5)
    if name in ("sglang:num_running_reqs", "sglang:num_queue_reqs"):
        return value * scale / ranks
    return value * scale


def sglang(
    *,
    queue: float = 5,
    running: float = 12,
    usage: float = 0.28,
    hit_rate: float = 0.0075,
    models: tuple[str, ...] = (LLAMA,),
    served: float = 5321,
    dp_usage: tuple[float, ...] | None = None,
    cache_config_info: bool = False,
) -> str:
    """SGLang with --enable-metrics (sgl-project/sglang, python/sglang/srt/observability/
    metrics_collector.py; before that python/sglang/srt/metrics/collector.py).

    Scheduler gauges carry model_name, engine_type, tp_rank, pp_rank, moe_ep_rank and, with data
    parallelism, dp_rank (`dp_usage` gives one KV use per dp rank; queue and running are split
    over them); the tokenizer's `sglang:num_requests_total` carries model_name only. From 0.5.11
    page size and count are gauges; `cache_config_info=True` gives a page from before, where they
    are labels of `sglang:cache_config_info{page_size,num_pages}` (no model_name).
    """
    out = [_PROCESS]
    ranks = dp_usage if dp_usage is not None else (usage,)

    def sched(model: str, dp: int | None) -> str:
        labels = (
            f'model_name="{model}",engine_type="unified",tp_rank="0",pp_rank="0",moe_ep_rank="0"'
        )
        return labels + (f',dp_rank="{dp}"' if dp is not None else "")

    for name, kind, help_, value in (
        ("sglang:num_running_reqs", "gauge", "The number of running requests.", running),
        ("sglang:num_used_tokens", "gauge", "The number of used tokens.", 123.0),
        ("sglang:token_usage", "gauge", "The token usage.", usage),
        ("sglang:gen_throughput", "gauge", "The generation throughput (token/s).", 355.1),
        ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.", queue),
        ("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.", hit_rate),
    ):
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        for i, model in enumerate(models):
            for dp, rank_usage in enumerate(ranks):
                rank = dp if dp_usage is not None else None
                v = _sglang_value(name, value, rank_usage, first=i == 0, ranks=len(ranks))
                out.append(f"{name}{{{sched(model, rank)}}} {float(v)}\n")
    if not cache_config_info:
        for name, help_, value in (
            ("sglang:page_size", "KV cache page size in tokens.", 1),
            ("sglang:num_pages", "Number of KV cache pages.", 425984),
        ):
            out.append(f"# HELP {name} {help_}\n# TYPE {name} gauge\n")
            for model in models:
                for dp, _ in enumerate(ranks):
                    rank = dp if dp_usage is not None else None
                    out.append(f"{name}{{{sched(model, rank)}}} {float(value)}\n")
    else:
        out.append(
            "# HELP sglang:cache_config_info Cache configuration information.\n"
            "# TYPE sglang:cache_config_info gauge\n"
            'sglang:cache_config_info{page_size="64",num_pages="11147"} 1.0\n'
        )
    for name, help_, value in (
        ("sglang:prompt_tokens_total", "Number of prefill tokens processed.", 8.1e6),
        ("sglang:generation_tokens_total", "Number of generation tokens processed.", 7.5e6),
        ("sglang:num_requests_total", "Number of requests processed.", served),
        ("sglang:num_aborted_requests_total", "Number of requests aborted.", 2.0),
    ):
        out.append(f"# HELP {name} {help_}\n# TYPE {name} counter\n")
        for i, model in enumerate(models):
            out.append(f'{name}{{model_name="{model}"}} {float(value * (1 if i == 0 else 3))}\n')
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
    return as_printed("".join(out))


def triton(*, pending: dict[str, float] | None = None, success: float = 1234.0) -> str:
    """Plain Triton (triton-inference-server/server, docs/user_guide/metrics.md): per model and
    version, inference counters and the pending-request gauge; GPU gauges per gpu_uuid."""
    pending = pending if pending is not None else {"llama": 4}
    out = []
    for name, kind, help_ in (
        ("nv_inference_request_success", "counter",
         "Number of successful inference requests, all batch sizes"),
        ("nv_inference_request_failure", "counter",
         "Number of failed inference requests, all batch sizes"),
        ("nv_inference_count", "counter",
         "Number of inferences performed (does not include cached requests)"),
        ("nv_inference_exec_count", "counter",
         "Number of model executions performed (does not include cached requests)"),
        ("nv_inference_pending_request_count", "gauge",
         "Instantaneous number of pending requests awaiting execution per-model."),
    ):  # fmt: skip
        out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
        for model, value in pending.items():
            v = value if kind == "gauge" else (success if "success" in name else 7.0)
            out.append(f'{name}{{model="{model}",version="1"}} {v}\n')
    out.append(
        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n"
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-7e8d1f4a-1c2b-4d3e-9f8a-0b1c2d3e4f5a"} 0.78\n'
    )
    return as_printed("".join(out))


def triton_trtllm(
    *,
    waiting: float | None = 3,
    scheduled: float = 4,
    active: float = 7,
    fraction: float | None = 0.5,
    used: float = 3042,
    max_blocks: float = 6239,
    model: str = "tensorrt_llm",
) -> str:
    """Triton with the TensorRT-LLM backend (triton-inference-server/tensorrtllm_backend,
    README.md "Triton Metrics"): batch manager statistics `nv_trt_llm_*` per model and version,
    beside Triton's own series for the ensemble, pre- and postprocessing models.

    Current backends have `request_type="waiting"` and `kv_cache_block_type="fraction"`; older
    ones (`waiting=None, fraction=None`) only active/scheduled/context/max requests and
    tokens_per/used/free/max blocks, as the README's example of those releases shows.
    """
    kinds = [("context", 1), ("scheduled", scheduled), ("max", 512), ("active", active)]
    if waiting is not None:
        kinds.insert(0, ("waiting", waiting))
    out = [
        triton(
            pending={"ensemble": 0, "preprocessing": 0, model: 0, "postprocessing": 0},
            success=2210.0,
        )
    ]
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
    blocks: list[tuple[str, float]] = [
        ("tokens_per", 64),
        ("used", used),
        ("free", max_blocks - used),
        ("max", max_blocks),
    ]
    if fraction is not None:
        blocks.insert(0, ("fraction", fraction))
    for kind, value in blocks:
        out.append(
            f'nv_trt_llm_kv_cache_block_metrics{{kv_cache_block_type="{kind}",model="{model}",'
            f'version="1"}} {value:g}\n'
        )
    out.append(
        "# HELP nv_trt_llm_inflight_batcher_metrics TRT LLM inflight_batcher-specific metrics\n"
        "# TYPE nv_trt_llm_inflight_batcher_metrics gauge\n"
        f'nv_trt_llm_inflight_batcher_metrics{{inflight_batcher_specific_metric="micro_batch_id",'
        f'model="{model}",version="1"}} 0\n'
    )
    return as_printed("".join(out))


def trtllm_serve(
    *,
    waiting: float = 2,
    running: float = 6,
    util: float = 0.62,
    hit_rate: float = 0.4,
    model_name: str = "meta-llama/Llama-3.1-8B-Instruct",
    served: tuple[float, float] = (912.0, 31.0),
) -> str:
    """`trtllm-serve` /prometheus/metrics (NVIDIA/TensorRT-LLM, tensorrt_llm/metrics/collector.py,
    MetricsCollector; path per examples/serve/prometheus_metrics.py): `trtllm_` names labelled
    model_name and engine_type, `trtllm_request_success_total` also by finished_reason."""
    m = f'model_name="{model_name}",engine_type="trtllm"'
    return as_printed(
        "# HELP trtllm_request_success_total Count of successfully processed requests.\n"
        "# TYPE trtllm_request_success_total counter\n"
        f'trtllm_request_success_total{{{m},finished_reason="stop"}} {served[0]}\n'
        f'trtllm_request_success_total{{{m},finished_reason="length"}} {served[1]}\n'
        + _histogram(
            "trtllm_time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            m,
            _LATENCY_BUCKETS,
            943,
        )
        + "# HELP trtllm_kv_cache_hit_rate KV cache hit rate\n"
        "# TYPE trtllm_kv_cache_hit_rate gauge\n"
        f"trtllm_kv_cache_hit_rate{{{m}}} {hit_rate}\n"
        "# HELP trtllm_kv_cache_utilization KV cache utilization\n"
        "# TYPE trtllm_kv_cache_utilization gauge\n"
        f"trtllm_kv_cache_utilization{{{m}}} {util}\n"
        "# HELP trtllm_num_requests_running Number of active requests\n"
        "# TYPE trtllm_num_requests_running gauge\n"
        f"trtllm_num_requests_running{{{m}}} {running}\n"
        "# HELP trtllm_num_requests_waiting Number of queued requests\n"
        "# TYPE trtllm_num_requests_waiting gauge\n"
        f"trtllm_num_requests_waiting{{{m}}} {waiting}\n"
        "# HELP trtllm_max_num_active_requests Maximum number of active requests\n"
        "# TYPE trtllm_max_num_active_requests gauge\n"
        f"trtllm_max_num_active_requests{{{m}}} 2048.0\n"
        "# HELP trtllm_kv_cache_max_blocks Maximum number of KV cache blocks\n"
        "# TYPE trtllm_kv_cache_max_blocks gauge\n"
        f"trtllm_kv_cache_max_blocks{{{m}}} 16384.0\n"
        "# HELP trtllm_kv_cache_used_blocks Number of used KV cache blocks\n"
        "# TYPE trtllm_kv_cache_used_blocks gauge\n"
        f"trtllm_kv_cache_used_blocks{{{m}}} {round(16384 * util)}.0\n"
        "# HELP trtllm_kv_cache_tokens_per_block Tokens per KV cache block\n"
        "# TYPE trtllm_kv_cache_tokens_per_block gauge\n"
        f"trtllm_kv_cache_tokens_per_block{{{m}}} 32.0\n"
    )


def trtllm_serve_no_queue(*, util: float = 0.37, hit_rate: float = 0.55) -> str:
    """A trtllm-serve build between the mid-2025 and current collectors (NVIDIA/TensorRT-LLM,
    tensorrt_llm/metrics/collector.py history): `trtllm_` names, the iteration-level KV gauges
    (utilization, hit rate) and the success counter, but no num_requests_waiting/running."""
    m = 'model_name="undefined",engine_type="undefined"'
    return as_printed(
        "# HELP trtllm_request_success_total Count of successfully processed requests.\n"
        "# TYPE trtllm_request_success_total counter\n"
        f'trtllm_request_success_total{{{m},finished_reason="stop"}} 77.0\n'
        + _histogram(
            "trtllm_e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            m,
            _LATENCY_BUCKETS,
            77,
        )
        + "# HELP trtllm_kv_cache_hit_rate KV cache hit rate\n"
        "# TYPE trtllm_kv_cache_hit_rate gauge\n"
        f"trtllm_kv_cache_hit_rate{{{m}}} {hit_rate}\n"
        "# HELP trtllm_kv_cache_utilization KV cache utilization\n"
        "# TYPE trtllm_kv_cache_utilization gauge\n"
        f"trtllm_kv_cache_utilization{{{m}}} {util}\n"
    )


def trtllm_serve_mid_2025(*, served: float = 12.0) -> str:
    """trtllm-serve of mid-2025 (NVIDIA/TensorRT-LLM, tensorrt_llm/metrics/collector.py then:
    no prefix, a success counter and four latency histograms; tensorrt_llm/serve/
    openai_server.py labels them model_name="undefined", engine_type="undefined"). No queue,
    no KV use: only the served count can be read."""
    m = 'engine_type="undefined",model_name="undefined"'
    out = [
        "# HELP request_success_total Count of successfully processed requests.\n"
        "# TYPE request_success_total counter\n"
        f'request_success_total{{{m},finished_reason="stop"}} {served}\n'
    ]
    for name, help_ in (
        ("e2e_request_latency_seconds", "Histogram of end to end request latency in seconds."),
        ("time_to_first_token_seconds", "Histogram of time to first token in seconds."),
        ("time_per_output_token_seconds", "Histogram of time per output token in seconds."),
        ("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request."),
    ):
        out.append(_histogram(name, help_, m, _LATENCY_BUCKETS, int(served)))
    return as_printed("".join(out))


TRTLLM_SERVE_JSON_METRICS = (
    '[{"cpuMemUsage":0,"gpuMemUsage":2147483648,"iter":41,"iterLatencyMS":12.5,'
    '"kvCacheStats":{"freeNumBlocks":16000,"maxNumBlocks":16384,"tokensPerBlock":32,'
    '"usedNumBlocks":384},"numActiveRequests":3,"numQueuedRequests":0}]'
)
"""What trtllm-serve's /metrics answers (JSON iteration statistics, `[]` when idle), served as
application/json (NVIDIA/TensorRT-LLM, tensorrt_llm/serve/openai_server.py get_iteration_stats)."""


def tgi(*, queue: float = 3, batch: float = 8, success: float = 148) -> str:
    """TGI's router metrics (huggingface/text-generation-inference, docs/source/reference/
    metrics.md): no labels on the gauges, counters without a _total suffix."""
    return (
        "# TYPE tgi_batch_current_max_tokens gauge\n"
        "tgi_batch_current_max_tokens 3812\n"
        "# TYPE tgi_batch_current_size gauge\n"
        f"tgi_batch_current_size {batch}\n"
        "# TYPE tgi_queue_size gauge\n"
        f"tgi_queue_size {queue}\n"
        "# TYPE tgi_request_count counter\n"
        "tgi_request_count 150\n"
        "# TYPE tgi_request_success counter\n"
        f"tgi_request_success {success}\n"
        '# TYPE tgi_request_failure counter\ntgi_request_failure{err="validation"} 2\n'
        "# TYPE tgi_request_duration histogram\n"
        'tgi_request_duration_bucket{le="0.5"} 12\n'
        'tgi_request_duration_bucket{le="1"} 90\n'
        'tgi_request_duration_bucket{le="+Inf"} 150\n'
        "tgi_request_duration_sum 187.5\n"
        "tgi_request_duration_count 150\n"
    )
