"""Engine adapters: pure functions from parsed samples to a `Reading`.

One adapter per engine, each knowing that engine's exact metric names (REFERENCE.md section 3).
They never raise: `adapt()` and `read_exposition()` return a `Failure` with a reason code for
missing series, NaN/inf/negative values, or fractions above 1. A scrape with one bad value is
rejected whole (reason `bad_value`) rather than clamped: a server reporting KV use 1.7 is
broken, and its other numbers are no more trustworthy than that one.

Model selection (multi-model servers): the adapter picks the model label value once per scrape,
from the engine's queue-depth series, so every value comes from the same model:
  1. the series labelled with the wanted name, if any;
  2. else the unlabelled series, if the server does not label (or also has unlabelled ones);
  3. else, if the server labels exactly one model, that one. vLLM labels with the served model
     name, usually a Hugging Face id such as `meta-llama/Llama-3.1-8B-Instruct`, which a policy
     name cannot spell, so a single-model server must still be read;
  4. else `missing_series` (several models, none of them ours).
Several series of the selected model (vLLM data-parallel `engine="0"`, `"1"`..., Triton model
versions) are summed for counts and counters and averaged for fractions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from heliostat.signals.exposition import ExpositionError, Labels, SampleIndex, parse
from heliostat.signals.record import Failure, Reading, Reason

# --- metric names (REFERENCE.md section 3) ---------------------------------------------------

VLLM_WAITING: Final = "vllm:num_requests_waiting"
VLLM_RUNNING: Final = "vllm:num_requests_running"
VLLM_KV: Final = "vllm:kv_cache_usage_perc"
VLLM_KV_OLD: Final = "vllm:gpu_cache_usage_perc"
VLLM_PREFIX_QUERIES: Final = "vllm:prefix_cache_queries_total"
VLLM_PREFIX_HITS: Final = "vllm:prefix_cache_hits_total"
VLLM_PREFIX_QUERIES_OLD: Final = "vllm:gpu_prefix_cache_queries_total"
VLLM_PREFIX_HITS_OLD: Final = "vllm:gpu_prefix_cache_hits_total"
VLLM_PREFIX_RATE_OLD: Final = "vllm:gpu_prefix_cache_hit_rate"
VLLM_CACHE_CONFIG: Final = "vllm:cache_config_info"
VLLM_SUCCESS: Final = "vllm:request_success_total"

SGLANG_WAITING: Final = "sglang:num_queue_reqs"
SGLANG_RUNNING: Final = "sglang:num_running_reqs"
SGLANG_KV: Final = "sglang:token_usage"
SGLANG_HIT_RATE: Final = "sglang:cache_hit_rate"
SGLANG_PAGE_SIZE: Final = "sglang:page_size"
SGLANG_NUM_PAGES: Final = "sglang:num_pages"

TRITON_PENDING: Final = "nv_inference_pending_request_count"
TRT_REQUESTS: Final = "nv_trt_llm_request_metrics"
TRT_KV_BLOCKS: Final = "nv_trt_llm_kv_cache_block_metrics"

TRTLLM_WAITING: Final = "trtllm_num_requests_waiting"
TRTLLM_RUNNING: Final = "trtllm_num_requests_running"
TRTLLM_KV: Final = "trtllm_kv_cache_utilization"
TRTLLM_HIT_RATE: Final = "trtllm_kv_cache_hit_rate"

TGI_QUEUE: Final = "tgi_queue_size"
TGI_BATCH: Final = "tgi_batch_current_size"

WANTED: Final[Mapping[str, frozenset[str]]] = {
    "vllm": frozenset(
        {
            VLLM_WAITING,
            VLLM_RUNNING,
            VLLM_KV,
            VLLM_KV_OLD,
            VLLM_PREFIX_QUERIES,
            VLLM_PREFIX_HITS,
            VLLM_PREFIX_QUERIES_OLD,
            VLLM_PREFIX_HITS_OLD,
            VLLM_PREFIX_RATE_OLD,
            VLLM_CACHE_CONFIG,
            VLLM_SUCCESS,
        }
    ),
    "sglang": frozenset(
        {
            SGLANG_WAITING,
            SGLANG_RUNNING,
            SGLANG_KV,
            SGLANG_HIT_RATE,
            SGLANG_PAGE_SIZE,
            SGLANG_NUM_PAGES,
        }
    ),
    "triton": frozenset({TRITON_PENDING, TRT_REQUESTS, TRT_KV_BLOCKS}),
    "trtllm": frozenset({TRTLLM_WAITING, TRTLLM_RUNNING, TRTLLM_KV, TRTLLM_HIT_RATE}),
    "tgi": frozenset({TGI_QUEUE, TGI_BATCH}),
}
"""Sample names each engine's adapter reads; the scraper parses only these lines."""

_FRACTION_SLACK: Final = 1e-6
"""Float noise allowed above 1.0 before a fraction counts as a bad value (then clamped)."""


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Selector:
    """Which series belong to the wanted model (see the module docstring)."""

    key: str | None
    value: str | None  # None: the unlabelled series

    def matches(self, labels: Labels) -> bool:
        if self.key is None:
            return True
        if self.value is None:
            return self.key not in labels
        return labels.get(self.key) == self.value

    def matches_loosely(self, labels: Labels) -> bool:
        """Also accept series without the model label (vLLM's cache_config_info has none)."""
        return self.key is None or self.key not in labels or labels.get(self.key) == self.value


def _resolve(
    index: SampleIndex, anchor: str, key: str | None, want: str, extra: Labels | None = None
) -> _Selector:
    series = [labels for labels, _ in index.get(anchor) if _has(labels, extra)]
    if not series:
        raise _Reject(Reason.MISSING_SERIES, f"no {anchor} series")
    if key is None:
        return _Selector(None, None)
    values = {labels[key] for labels in series if key in labels}
    unlabelled = any(key not in labels for labels in series)
    if want in values:
        return _Selector(key, want)
    if unlabelled:
        return _Selector(key, None)
    if len(values) == 1:
        return _Selector(key, next(iter(values)))
    shown = ", ".join(sorted(values)[:5])
    raise _Reject(Reason.MISSING_SERIES, f"{anchor}: no {key}={want!r} among {shown}")


def _has(labels: Labels, extra: Labels | None) -> bool:
    return extra is None or all(labels.get(k) == v for k, v in extra.items())


def _values(index: SampleIndex, name: str, sel: _Selector, extra: Labels | None) -> list[float]:
    values = [v for labels, v in index.get(name) if sel.matches(labels) and _has(labels, extra)]
    for value in values:
        if not math.isfinite(value) or value < 0:
            raise _Reject(Reason.BAD_VALUE, f"{name} = {value}")
    return values


def _count(
    index: SampleIndex,
    name: str,
    sel: _Selector,
    *,
    extra: Labels | None = None,
    required: bool = True,
) -> float | None:
    """Sum of the model's series (gauges of requests, or counters)."""
    values = _values(index, name, sel, extra)
    if values:
        return math.fsum(values)
    if required:
        raise _Reject(Reason.MISSING_SERIES, f"no {name} series for the model")
    return None


def _fraction(
    index: SampleIndex,
    name: str,
    sel: _Selector,
    *,
    extra: Labels | None = None,
    required: bool = True,
) -> float | None:
    """Mean of the model's series, each a 0-1 fraction."""
    values = _values(index, name, sel, extra)
    if not values:
        if required:
            raise _Reject(Reason.MISSING_SERIES, f"no {name} series for the model")
        return None
    for value in values:
        if value > 1.0 + _FRACTION_SLACK:
            raise _Reject(Reason.BAD_VALUE, f"{name} = {value} (above 1)")
    return min(1.0, math.fsum(values) / len(values))


def _gauge_int(
    index: SampleIndex, name: str, sel: _Selector, *, extra: Labels | None = None
) -> int | None:
    value = _count(index, name, sel, extra=extra, required=False)
    return int(value) if value is not None and value >= 1 else None


def _label_int(text: str | None) -> int | None:
    """vLLM's cache_config_info puts numbers in labels; `None` before the profile run."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


# --- adapters --------------------------------------------------------------------------------


def adapt_vllm(index: SampleIndex, want: str) -> Reading:
    """vLLM v1, falling back to the V0 / early-V1 names removed from current vLLM."""
    sel = _resolve(index, VLLM_WAITING, "model_name", want)
    kv_name = VLLM_KV if VLLM_KV in index else VLLM_KV_OLD
    hits = queries = rate = None
    for hits_name, queries_name in (
        (VLLM_PREFIX_HITS, VLLM_PREFIX_QUERIES),
        (VLLM_PREFIX_HITS_OLD, VLLM_PREFIX_QUERIES_OLD),
    ):
        hits = _count(index, hits_name, sel, required=False)
        queries = _count(index, queries_name, sel, required=False)
        if hits is not None and queries is not None:
            break
        hits = queries = None
    if hits is None:
        old = [v for labels, v in index.get(VLLM_PREFIX_RATE_OLD) if sel.matches(labels)]
        # V0 reported -1 when prefix caching was off: that means "not reported", not bad data.
        if old and all(v != -1 for v in old):
            rate = _fraction(index, VLLM_PREFIX_RATE_OLD, sel)
    block_size = num_blocks = None
    for labels, _ in index.get(VLLM_CACHE_CONFIG):
        if sel.matches_loosely(labels):
            block_size = _label_int(labels.get("block_size"))
            num_blocks = _label_int(labels.get("num_gpu_blocks"))
            break
    return Reading(
        engine="vllm",
        waiting=_count(index, VLLM_WAITING, sel),
        running=_count(index, VLLM_RUNNING, sel),
        kv_usage=_fraction(index, kv_name, sel),
        prefix_hit_rate=rate,
        prefix_hits_total=hits,
        prefix_queries_total=queries,
        served_total=_count(index, VLLM_SUCCESS, sel, required=False),
        num_gpu_blocks=num_blocks,
        block_size=block_size,
    )


def adapt_sglang(index: SampleIndex, want: str) -> Reading:
    """SGLang: gauges only; its cache hit rate is already a rate."""
    sel = _resolve(index, SGLANG_WAITING, "model_name", want)
    return Reading(
        engine="sglang",
        waiting=_count(index, SGLANG_WAITING, sel),
        running=_count(index, SGLANG_RUNNING, sel),
        kv_usage=_fraction(index, SGLANG_KV, sel),
        prefix_hit_rate=_fraction(index, SGLANG_HIT_RATE, sel, required=False),
        num_gpu_blocks=_gauge_int(index, SGLANG_NUM_PAGES, sel),
        block_size=_gauge_int(index, SGLANG_PAGE_SIZE, sel),
    )


def adapt_triton(index: SampleIndex, want: str) -> Reading:
    """Plain Triton: only a queue depth (exec_count is a counter of batches, not 'running')."""
    sel = _resolve(index, TRITON_PENDING, "model", want)
    return Reading(engine="triton", waiting=_count(index, TRITON_PENDING, sel))


def adapt_triton_trtllm(index: SampleIndex, want: str) -> Reading:
    """Triton's TensorRT-LLM backend (batch manager statistics, `nv_trt_llm_*`).

    Backends older than the `waiting` request type report only `active` (in the batch manager)
    and `scheduled` (in this iteration); their difference is the queue.
    """
    sel = _resolve(index, TRT_REQUESTS, "model", want)

    def requests(kind: str, required: bool = True) -> float | None:
        return _count(index, TRT_REQUESTS, sel, extra={"request_type": kind}, required=required)

    def blocks(kind: str) -> Labels:
        return {"kv_cache_block_type": kind}

    running = requests("scheduled")
    waiting = requests("waiting", required=False)
    if waiting is None:
        active = requests("active")
        assert active is not None and running is not None
        waiting = max(0.0, active - running)
    return Reading(
        engine="triton-trtllm",
        waiting=waiting,
        running=running,
        kv_usage=_fraction(index, TRT_KV_BLOCKS, sel, extra=blocks("fraction"), required=False),
        max_num_seqs=_gauge_int(index, TRT_REQUESTS, sel, extra={"request_type": "max"}),
        num_gpu_blocks=_gauge_int(index, TRT_KV_BLOCKS, sel, extra=blocks("max")),
        block_size=_gauge_int(index, TRT_KV_BLOCKS, sel, extra=blocks("tokens_per")),
    )


def adapt_trtllm_serve(index: SampleIndex, want: str) -> Reading:
    """`trtllm-serve`; its KV-cache hit rate is a gauge."""
    sel = _resolve(index, TRTLLM_WAITING, "model_name", want)
    return Reading(
        engine="trtllm",
        waiting=_count(index, TRTLLM_WAITING, sel),
        running=_count(index, TRTLLM_RUNNING, sel),
        kv_usage=_fraction(index, TRTLLM_KV, sel),
        prefix_hit_rate=_fraction(index, TRTLLM_HIT_RATE, sel, required=False),
    )


def adapt_tgi(index: SampleIndex, want: str) -> Reading:
    """TGI serves one model and labels nothing; it has no KV-use or prefix-cache gauge."""
    sel = _resolve(index, TGI_QUEUE, None, want)
    return Reading(
        engine="tgi",
        waiting=_count(index, TGI_QUEUE, sel),
        running=_count(index, TGI_BATCH, sel),
    )


Adapter = Callable[[SampleIndex, str], Reading]

ADAPTERS: Final[Mapping[str, Adapter]] = {
    "vllm": adapt_vllm,
    "sglang": adapt_sglang,
    "triton": adapt_triton,
    "triton-trtllm": adapt_triton_trtllm,
    "trtllm": adapt_trtllm_serve,
    "tgi": adapt_tgi,
}


def adapter_for(engine: str, index: SampleIndex) -> Adapter:
    """The adapter of a policy engine name; `triton` turns TRT-LLM when its series exist."""
    if engine == "triton" and TRT_REQUESTS in index:
        return adapt_triton_trtllm
    return ADAPTERS[engine]


def adapt(engine: str, index: SampleIndex, want: str) -> Reading | Failure:
    """Run the engine's adapter; every problem becomes a `Failure`, nothing raises."""
    try:
        return adapter_for(engine, index)(index, want)
    except _Reject as reject:
        return Failure(reject.reason, reject.detail)
    except Exception as exc:  # a bug here must not stop the scrape loop
        return Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")


def read_exposition(
    text: str, engine: str, want: str, *, openmetrics: bool = False
) -> Reading | Failure:
    """Exposition text -> `Reading`, or a `Failure` (`parse`, `bad_value`, `missing_series`)."""
    try:
        index = parse(text, WANTED[engine], openmetrics=openmetrics)
    except ExpositionError as exc:
        return Failure(Reason.PARSE, str(exc))
    except Exception as exc:
        return Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
    return adapt(engine, index, want)
