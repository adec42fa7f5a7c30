"""Engine adapters: pure functions from parsed samples to a `Reading`.

One adapter per engine, each knowing that engine's exact metric names, current and older
(README, "Engines"). They never raise: `adapt()` and `read_exposition()` return a `Failure`
with a reason code for a page with none of the engine's series, NaN/inf/negative values, or
fractions above 1. A scrape with one bad value is rejected whole (reason `bad_value`) rather
than clamped: a server reporting KV use 1.7 is broken, and its other numbers are no more
trustworthy than that one.

Partial pages are normal, not failures. trtllm-serve builds of mid-2025 export only a success
counter and latency histograms, some later ones KV use and hit rate but no queue, Triton has
only a queue, TGI no KV use. An adapter returns what the page has and names the rest in
`Reading.missing`; the control law uses what is there. Only a page with none of the engine's
load series for the model is `missing_series` (a wrong engine, or the wrong path).

Model selection (multi-model servers): the adapter picks the model label value once per scrape,
from the engine's load series, so every value comes from the same model:
  1. the series labelled with the wanted name, if any;
  2. else the unlabelled series, if the server does not label (or also has unlabelled ones);
  3. else, if the server labels exactly one model, that one. vLLM labels with the served model
     name, usually a Hugging Face id such as `meta-llama/Llama-3.1-8B-Instruct`, which a policy
     name cannot spell, so a single-model server must still be read (old trtllm-serve builds
     label every series `model_name="undefined"`);
  4. else `missing_series` (several models, none of them ours).
Several series of the selected model are several engines (vLLM data-parallel `engine="0"`,
`"1"`..., SGLang dp ranks, Triton model versions): counts and counters are summed, KV use is
averaged (`kv_usage`, the server's aggregate) and its maximum kept (`kv_usage_max`, the fullest
engine), so the control law can tell a full server from one full engine.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from heliostat.signals.exposition import ExpositionError, Labels, SampleIndex, parse
from heliostat.signals.record import JSON_NOT_EXPOSITION, LOAD_FIELDS, Failure, Reading, Reason

# --- metric names ----------------------------------------------------------------------------

# vLLM (vllm/v1/metrics/loggers.py; V0 vllm/engine/metrics.py)
VLLM_WAITING: Final = "vllm:num_requests_waiting"
VLLM_RUNNING: Final = "vllm:num_requests_running"
VLLM_KV: Final = "vllm:kv_cache_usage_perc"
VLLM_KV_OLD: Final = "vllm:gpu_cache_usage_perc"
VLLM_PREFIX_QUERIES: Final = "vllm:prefix_cache_queries_total"
VLLM_PREFIX_HITS: Final = "vllm:prefix_cache_hits_total"
VLLM_PREFIX_QUERIES_OLD: Final = "vllm:gpu_prefix_cache_queries_total"
VLLM_PREFIX_HITS_OLD: Final = "vllm:gpu_prefix_cache_hits_total"
VLLM_PREFIX_RATE_OLD: Final = "vllm:gpu_prefix_cache_hit_rate"
VLLM_PREFILL_SUM: Final = "vllm:request_prefill_time_seconds_sum"
VLLM_PREFILL_COUNT: Final = "vllm:request_prefill_time_seconds_count"
VLLM_SUCCESS: Final = "vllm:request_success_total"
VLLM_CACHE_CONFIG: Final = "vllm:cache_config_info"
VLLM_LORA: Final = "vllm:lora_requests_info"

# SGLang (python/sglang/srt/metrics/collector.py, later observability/metrics_collector.py)
SGLANG_WAITING: Final = "sglang:num_queue_reqs"
SGLANG_RUNNING: Final = "sglang:num_running_reqs"
SGLANG_KV: Final = "sglang:token_usage"
SGLANG_HIT_RATE: Final = "sglang:cache_hit_rate"
SGLANG_SUCCESS: Final = "sglang:num_requests_total"
SGLANG_PAGE_SIZE: Final = "sglang:page_size"
SGLANG_NUM_PAGES: Final = "sglang:num_pages"
SGLANG_CACHE_CONFIG: Final = "sglang:cache_config_info"  # before 0.5.11: page_size, num_pages

# Triton (docs/user_guide/metrics.md) and its TensorRT-LLM backend (tensorrtllm_backend README)
TRITON_PENDING: Final = "nv_inference_pending_request_count"
TRITON_SUCCESS: Final = "nv_inference_request_success"
TRT_REQUESTS: Final = "nv_trt_llm_request_metrics"
TRT_KV_BLOCKS: Final = "nv_trt_llm_kv_cache_block_metrics"

# trtllm-serve (tensorrt_llm/metrics/collector.py), /prometheus/metrics
TRTLLM_WAITING: Final = "trtllm_num_requests_waiting"
TRTLLM_RUNNING: Final = "trtllm_num_requests_running"
TRTLLM_KV: Final = "trtllm_kv_cache_utilization"
TRTLLM_HIT_RATE: Final = "trtllm_kv_cache_hit_rate"
TRTLLM_SUCCESS: Final = "trtllm_request_success_total"
TRTLLM_SUCCESS_OLD: Final = "request_success_total"  # mid-2025 builds: no trtllm_ prefix
TRTLLM_USED_BLOCKS: Final = "trtllm_kv_cache_used_blocks"
TRTLLM_MAX_BLOCKS: Final = "trtllm_kv_cache_max_blocks"
TRTLLM_TOKENS_PER_BLOCK: Final = "trtllm_kv_cache_tokens_per_block"
TRTLLM_MAX_ACTIVE: Final = "trtllm_max_num_active_requests"

# TGI (docs/source/reference/metrics.md); its counters carry no _total suffix
TGI_QUEUE: Final = "tgi_queue_size"
TGI_BATCH: Final = "tgi_batch_current_size"
TGI_SUCCESS: Final = "tgi_request_success"

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
            VLLM_SUCCESS,
            VLLM_CACHE_CONFIG,
            VLLM_LORA,
            VLLM_PREFILL_SUM,
            VLLM_PREFILL_COUNT,
        }
    ),
    "sglang": frozenset(
        {
            SGLANG_WAITING,
            SGLANG_RUNNING,
            SGLANG_KV,
            SGLANG_HIT_RATE,
            SGLANG_SUCCESS,
            SGLANG_PAGE_SIZE,
            SGLANG_NUM_PAGES,
            SGLANG_CACHE_CONFIG,
        }
    ),
    "triton": frozenset({TRITON_PENDING, TRITON_SUCCESS, TRT_REQUESTS, TRT_KV_BLOCKS}),
    "trtllm": frozenset(
        {
            TRTLLM_WAITING,
            TRTLLM_RUNNING,
            TRTLLM_KV,
            TRTLLM_HIT_RATE,
            TRTLLM_SUCCESS,
            TRTLLM_SUCCESS_OLD,
            TRTLLM_USED_BLOCKS,
            TRTLLM_MAX_BLOCKS,
            TRTLLM_TOKENS_PER_BLOCK,
            TRTLLM_MAX_ACTIVE,
        }
    ),
    "tgi": frozenset({TGI_QUEUE, TGI_BATCH, TGI_SUCCESS}),
}
"""Sample names each engine's adapter reads; the scraper parses only these lines."""

SUCCESS_COUNTERS: Final[Mapping[str, tuple[str, ...]]] = {
    "vllm": (VLLM_SUCCESS,),
    "sglang": (SGLANG_SUCCESS,),
    "triton": (TRITON_SUCCESS,),
    "trtllm": (TRTLLM_SUCCESS, TRTLLM_SUCCESS_OLD),
    "tgi": (TGI_SUCCESS,),
}
"""Each policy engine's success counter names (the Prometheus source asks `rate()` of them)."""

MODEL_LABEL: Final[Mapping[str, str | None]] = {
    "vllm": "model_name",
    "sglang": "model_name",
    "triton": "model",
    "trtllm": "model_name",
    "tgi": None,
}
"""The label that names the model on each policy engine's page (TGI serves one, unlabelled)."""

UNREPORTED: Final = "unreported"
"""`Reading.lora` of a declared LoRA adapter whose engine reports nothing per adapter."""

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
        """Also accept series without the model label (cache_config_info carries none)."""
        return self.key is None or self.key not in labels or labels.get(self.key) == self.value


def _has(labels: Labels, extra: Labels | None) -> bool:
    return extra is None or all(labels.get(k) == v for k, v in extra.items())


class _Page:
    """One scrape's samples seen through the selected model: the adapters' vocabulary."""

    def __init__(
        self, index: SampleIndex, anchors: Iterable[str], key: str | None, want: str
    ) -> None:
        self.index = index
        self.sel = self._resolve(anchors, key, want)

    def _resolve(self, anchors: Iterable[str], key: str | None, want: str) -> _Selector:
        series = [labels for name in anchors for labels, _ in self.index.get(name)]
        if not series:
            raise _Reject(Reason.MISSING_SERIES, "none of the engine's series on the page")
        if key is None:
            return _Selector(None, None)
        values = {labels[key] for labels in series if key in labels}
        if want in values:
            return _Selector(key, want)
        if any(key not in labels for labels in series):
            return _Selector(key, None)
        if len(values) == 1:
            return _Selector(key, next(iter(values)))
        shown = ", ".join(sorted(values)[:5])
        raise _Reject(Reason.MISSING_SERIES, f"no {key}={want!r} among {shown}")

    def has(self, name: str) -> bool:
        return name in self.index

    def values(self, name: str, extra: Labels | None = None) -> list[float]:
        sel = self.sel
        values = [
            v for labels, v in self.index.get(name) if sel.matches(labels) and _has(labels, extra)
        ]
        for value in values:
            if not math.isfinite(value) or value < 0:
                raise _Reject(Reason.BAD_VALUE, f"{name} = {value}")
        return values

    def series(self, name: str, extra: Labels | None = None) -> list[tuple[Labels, float]]:
        """The model's (labels, value) pairs of `name`, values checked as in `values`."""
        sel = self.sel
        pairs = [(lb, v) for lb, v in self.index.get(name) if sel.matches(lb) and _has(lb, extra)]
        for _, value in pairs:
            if not math.isfinite(value) or value < 0:
                raise _Reject(Reason.BAD_VALUE, f"{name} = {value}")
        return pairs

    def count(self, *names: str, extra: Labels | None = None) -> float | None:
        """Sum of the model's series of the first name present (gauges of requests, counters)."""
        for name in names:
            values = self.values(name, extra)
            if values:
                return math.fsum(values)
        return None

    def fractions(self, name: str, extra: Labels | None = None) -> list[float]:
        """The model's 0-1 series of `name`, one per engine."""
        values = self.values(name, extra)
        for value in values:
            if value > 1.0 + _FRACTION_SLACK:
                raise _Reject(Reason.BAD_VALUE, f"{name} = {value} (above 1)")
        return [min(1.0, v) for v in values]

    def gauge_int(
        self, name: str, extra: Labels | None = None, *, each: bool = False
    ) -> int | None:
        """A capacity: summed over engines (slots, blocks), or `each` engine's (a block size)."""
        values = self.values(name, extra)
        if not values:
            return None
        value = max(values) if each else math.fsum(values)
        return int(value) if value >= 1 else None

    def info_ints(self, name: str, key: str, *, each: bool = False) -> int | None:
        """A number carried in a label of the model's (or no model's) `*_info` series, summed
        over engines, or `each` engine's."""
        values = [
            number
            for labels, _ in self.index.get(name)
            if self.sel.matches_loosely(labels)
            and (number := _label_int(labels.get(key))) is not None
        ]
        if not values:
            return None
        return max(values) if each else sum(values)

    def engines(self, *names: str) -> int | None:
        """How many series of the model the first present name has: its engines."""
        for name in names:
            n = sum(1 for labels, _ in self.index.get(name) if self.sel.matches(labels))
            if n:
                return n
        return None


def _label_int(text: str | None) -> int | None:
    """Numbers carried in labels (cache_config_info); `None` before vLLM's profile run."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _mean_max(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    most = max(values)
    return min(most, math.fsum(values) / len(values)), most  # min: float noise of the mean


def _blocks_fraction(
    used: Sequence[tuple[Labels, float]],
    total: Sequence[tuple[Labels, float]],
    kind: str | None,
) -> list[float]:
    """Per engine used/max from block counts, pairing series by their other labels."""
    capacity = {_without(labels, kind): value for labels, value in total}
    fractions = []
    for labels, value in used:
        cap = capacity.get(_without(labels, kind))
        if cap is not None and cap > 0:
            if value > cap * (1.0 + _FRACTION_SLACK):
                raise _Reject(Reason.BAD_VALUE, f"{value:g} blocks used of {cap:g}")
            fractions.append(min(1.0, value / cap))
    return fractions


def _without(labels: Labels, key: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != key))


def _first(*values: object) -> object:
    return next((v for v in values if v is not None), None)


def _reading(engine: str, page: _Page, shape: str, **values: object) -> Reading:
    """A `Reading` of the values found, with `missing` naming the load fields that were not."""
    found = {
        "waiting": values.get("waiting"),
        "running": values.get("running"),
        "kv_usage": values.get("kv_usage"),
        "prefix_hit_rate": _first(values.get("prefix_hit_rate"), values.get("prefix_hits_total")),
        "served_total": values.get("served_total"),
    }
    missing = frozenset(name for name in LOAD_FIELDS if found[name] is None)
    if len(missing) == len(LOAD_FIELDS):
        raise _Reject(Reason.MISSING_SERIES, "none of the engine's load series for the model")
    return Reading(
        engine=engine,
        missing=missing,
        page=shape,
        read_as=page.sel.value,
        **values,  # type: ignore[arg-type]
    )


# --- adapters --------------------------------------------------------------------------------


def adapt_vllm(
    index: SampleIndex, want: str, model: str | None = None, lora: bool = False
) -> Reading:
    """vLLM v1 (per-engine `engine` label), falling back to the V0 / early-V1 names."""
    page = _Page(
        index,
        (VLLM_WAITING, VLLM_RUNNING, VLLM_KV, VLLM_KV_OLD, VLLM_SUCCESS, VLLM_PREFIX_QUERIES),
        "model_name",
        want,
    )
    kv_name = VLLM_KV if page.has(VLLM_KV) else VLLM_KV_OLD
    kv, kv_max = _mean_max(page.fractions(kv_name))
    hits = queries = rate = None
    for hits_name, queries_name in (
        (VLLM_PREFIX_HITS, VLLM_PREFIX_QUERIES),
        (VLLM_PREFIX_HITS_OLD, VLLM_PREFIX_QUERIES_OLD),
    ):
        hits, queries = page.count(hits_name), page.count(queries_name)
        if hits is not None and queries is not None:
            break
        hits = queries = None
    if hits is None:
        old = [v for lb, v in index.get(VLLM_PREFIX_RATE_OLD) if page.sel.matches(lb)]
        # V0 reported -1 when prefix caching was off: that means "not reported", not bad data.
        if old and all(v != -1 for v in old):
            rate, _ = _mean_max(page.fractions(VLLM_PREFIX_RATE_OLD))
    v1 = any(
        "engine" in labels for name in (VLLM_WAITING, kv_name) for labels, _ in index.get(name)
    )
    shape = "vllm v1" if v1 else "vllm v0"
    if v1 and kv_name == VLLM_KV_OLD:
        shape = "vllm v1 (early names: gpu_cache_usage_perc)"
    return _reading(
        "vllm",
        page,
        shape,
        waiting=page.count(VLLM_WAITING),
        running=page.count(VLLM_RUNNING),
        kv_usage=kv,
        kv_usage_max=kv_max,
        prefix_hit_rate=rate,
        prefix_hits_total=hits,
        prefix_queries_total=queries,
        prefill_seconds_total=page.count(VLLM_PREFILL_SUM),
        prefill_requests_total=page.count(VLLM_PREFILL_COUNT),
        num_gpu_blocks=page.info_ints(VLLM_CACHE_CONFIG, "num_gpu_blocks"),
        block_size=page.info_ints(VLLM_CACHE_CONFIG, "block_size", each=True),
        served_total=page.count(VLLM_SUCCESS),
        engines=page.engines(VLLM_WAITING, kv_name, VLLM_RUNNING),
        lora=_lora_state(index, model if model is not None else want, lora, page.sel.value),
    )


def _lora_state(index: SampleIndex, model: str, declared: bool, read_as: str | None) -> str | None:
    """Where vLLM's LoRA stats put the policy model: `running`, `waiting` or `idle`.

    `vllm:lora_requests_info` is a gauge whose value is the time of its last update and whose
    labels list the adapters with running and waiting requests (comma-separated); every new
    combination is a new series, so the newest (largest value) is the current one. A model the
    policy declares an adapter is `idle` when listed nowhere; an undeclared one counts as an
    adapter only when listed (else it may be the base model under another name). None without
    LoRA stats, or when the model is the base model itself.
    """
    series = [(lb, v) for lb, v in index.get(VLLM_LORA) if math.isfinite(v)]
    if model == read_as or not series:
        return None
    labels, _ = max(series, key=lambda item: item[1])

    def names(key: str) -> set[str]:
        return {name.strip() for name in labels.get(key, "").split(",") if name.strip()}

    if model in names("running_lora_adapters"):
        return "running"
    if model in names("waiting_lora_adapters"):
        return "waiting"
    return "idle" if declared else None


def adapt_sglang(
    index: SampleIndex, want: str, model: str | None = None, lora: bool = False
) -> Reading:
    """SGLang: gauges and one request counter; its cache hit rate is already a rate.

    Page size and count are gauges from 0.5.11 on, labels of `sglang:cache_config_info` before.
    """
    page = _Page(
        index,
        (SGLANG_WAITING, SGLANG_RUNNING, SGLANG_KV, SGLANG_HIT_RATE, SGLANG_SUCCESS),
        "model_name",
        want,
    )
    kv, kv_max = _mean_max(page.fractions(SGLANG_KV))
    hit, _ = _mean_max(page.fractions(SGLANG_HIT_RATE))
    block_size = page.gauge_int(SGLANG_PAGE_SIZE, each=True)
    num_pages = page.gauge_int(SGLANG_NUM_PAGES)
    shape = "sglang"
    if block_size is None and num_pages is None and page.has(SGLANG_CACHE_CONFIG):
        block_size = page.info_ints(SGLANG_CACHE_CONFIG, "page_size", each=True)
        num_pages = page.info_ints(SGLANG_CACHE_CONFIG, "num_pages")
        shape = "sglang <0.5.11 (cache_config_info labels)"
    return _reading(
        "sglang",
        page,
        shape,
        waiting=page.count(SGLANG_WAITING),
        running=page.count(SGLANG_RUNNING),
        kv_usage=kv,
        kv_usage_max=kv_max,
        prefix_hit_rate=hit,
        served_total=page.count(SGLANG_SUCCESS),
        num_gpu_blocks=num_pages,
        block_size=block_size,
        engines=page.engines(SGLANG_KV, SGLANG_WAITING),
    )


def adapt_triton(
    index: SampleIndex, want: str, model: str | None = None, lora: bool = False
) -> Reading:
    """Plain Triton: a queue depth and a success counter (exec_count counts batches)."""
    page = _Page(index, (TRITON_PENDING, TRITON_SUCCESS), "model", want)
    return _reading(
        "triton",
        page,
        "triton",
        waiting=page.count(TRITON_PENDING),
        served_total=page.count(TRITON_SUCCESS),
        engines=page.engines(TRITON_PENDING),
    )


def adapt_triton_trtllm(
    index: SampleIndex, want: str, model: str | None = None, lora: bool = False
) -> Reading:
    """Triton's TensorRT-LLM backend (batch manager statistics, `nv_trt_llm_*`).

    Backends older than the `waiting` request type report only `active` (in the batch manager)
    and `scheduled` (in this iteration); their difference is the queue. Backends older than
    the `fraction` block type report `used`, `free`, `max` and `tokens_per` blocks; KV use is
    then used / max.
    """
    # The model is chosen on the backend's own series: Triton's generic counters also label
    # the ensemble, preprocessing and postprocessing models that wrap it.
    page = _Page(index, (TRT_REQUESTS, TRT_KV_BLOCKS), "model", want)

    def requests(kind: str) -> float | None:
        return page.count(TRT_REQUESTS, extra={"request_type": kind})

    def blocks(kind: str) -> Labels:
        return {"kv_cache_block_type": kind}

    running = requests("scheduled")
    waiting = requests("waiting")
    notes = []
    if waiting is None:
        active = requests("active")
        if active is not None and running is not None:
            waiting = max(0.0, active - running)
            notes.append("queue = active - scheduled")
    fractions = page.fractions(TRT_KV_BLOCKS, extra=blocks("fraction"))
    if not fractions:
        fractions = _blocks_fraction(
            page.series(TRT_KV_BLOCKS, blocks("used")),
            page.series(TRT_KV_BLOCKS, blocks("max")),
            "kv_cache_block_type",
        )
        if fractions:
            notes.append("KV = used / max blocks")
    kv, kv_max = _mean_max(fractions)
    shape = "triton tensorrt-llm" + (f" (older backend: {'; '.join(notes)})" if notes else "")
    return _reading(
        "triton-trtllm",
        page,
        shape,
        waiting=waiting,
        running=running,
        kv_usage=kv,
        kv_usage_max=kv_max,
        served_total=page.count(TRITON_SUCCESS),
        max_num_seqs=page.gauge_int(TRT_REQUESTS, extra={"request_type": "max"}),
        num_gpu_blocks=page.gauge_int(TRT_KV_BLOCKS, extra=blocks("max")),
        block_size=page.gauge_int(TRT_KV_BLOCKS, extra=blocks("tokens_per"), each=True),
        engines=len(
            {_without(lb, "kv_cache_block_type") for lb, _ in page.series(TRT_KV_BLOCKS)}
            or {_without(lb, "request_type") for lb, _ in page.series(TRT_REQUESTS)}
        )
        or None,
    )


def adapt_trtllm_serve(
    index: SampleIndex, want: str, model: str | None = None, lora: bool = False
) -> Reading:
    """`trtllm-serve` /prometheus/metrics; its KV-cache hit rate is a gauge.

    Current builds export queue, running, KV use and block counts with the `trtllm_` prefix;
    earlier ones only some of them (no queue depth), and mid-2025 builds only an unprefixed
    `request_success_total` beside latency histograms, labelled `model_name="undefined"`.
    """
    page = _Page(
        index,
        (
            TRTLLM_WAITING,
            TRTLLM_RUNNING,
            TRTLLM_KV,
            TRTLLM_HIT_RATE,
            TRTLLM_SUCCESS,
            TRTLLM_SUCCESS_OLD,
            TRTLLM_USED_BLOCKS,
        ),
        "model_name",
        want,
    )
    fractions = page.fractions(TRTLLM_KV)
    if not fractions:
        fractions = _blocks_fraction(
            page.series(TRTLLM_USED_BLOCKS), page.series(TRTLLM_MAX_BLOCKS), None
        )
    kv, kv_max = _mean_max(fractions)
    hit, _ = _mean_max(page.fractions(TRTLLM_HIT_RATE))
    prefixed = any(page.has(n) for n in WANTED["trtllm"] if n.startswith("trtllm_"))
    shape = "trtllm-serve" if prefixed else "trtllm-serve (unprefixed names of mid-2025)"
    return _reading(
        "trtllm",
        page,
        shape,
        waiting=page.count(TRTLLM_WAITING),
        running=page.count(TRTLLM_RUNNING),
        kv_usage=kv,
        kv_usage_max=kv_max,
        prefix_hit_rate=hit,
        served_total=page.count(TRTLLM_SUCCESS, TRTLLM_SUCCESS_OLD),
        max_num_seqs=page.gauge_int(TRTLLM_MAX_ACTIVE),
        num_gpu_blocks=page.gauge_int(TRTLLM_MAX_BLOCKS),
        block_size=page.gauge_int(TRTLLM_TOKENS_PER_BLOCK, each=True),
        engines=page.engines(TRTLLM_KV, TRTLLM_USED_BLOCKS, TRTLLM_WAITING),
    )


def adapt_tgi(
    index: SampleIndex, want: str, model: str | None = None, lora: bool = False
) -> Reading:
    """TGI serves one model and labels nothing; it has no KV-use or prefix-cache gauge."""
    page = _Page(index, (TGI_QUEUE, TGI_BATCH, TGI_SUCCESS), None, want)
    return _reading(
        "tgi",
        page,
        "tgi",
        waiting=page.count(TGI_QUEUE),
        running=page.count(TGI_BATCH),
        served_total=page.count(TGI_SUCCESS),
        engines=1,
    )


Adapter = Callable[[SampleIndex, str, str | None, bool], Reading]

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
    if engine == "triton" and (TRT_REQUESTS in index or TRT_KV_BLOCKS in index):
        return adapt_triton_trtllm
    return ADAPTERS[engine]


def adapt(
    engine: str,
    index: SampleIndex,
    want: str,
    model: str | None = None,
    *,
    lora: bool = False,
) -> Reading | Failure:
    """Run the engine's adapter; every problem becomes a `Failure`, nothing raises.

    `want` is the model label value to select (`ScrapeTarget.selector`); `model` the policy
    model's own name (default `want`), `lora` whether the policy declares it a LoRA adapter
    read on its base model's series (`want`).
    """
    try:
        reading = adapter_for(engine, index)(index, want, model, lora)
        if lora and reading.lora is None and reading.read_as != model:
            # A declared adapter on an engine whose page says nothing per adapter.
            reading = dataclasses.replace(reading, lora=UNREPORTED)
        return reading
    except _Reject as reject:
        return Failure(reject.reason, reject.detail)
    except Exception as exc:  # a bug here must not stop the scrape loop
        return Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")


def read_exposition(
    text: str,
    engine: str,
    want: str,
    *,
    openmetrics: bool = False,
    model: str | None = None,
    lora: bool = False,
) -> Reading | Failure:
    """Exposition text -> `Reading`, or a `Failure` (`parse`, `bad_value`, `missing_series`)."""
    try:
        index = parse(text, WANTED[engine], openmetrics=openmetrics)
    except ExpositionError as exc:
        if text.lstrip()[:1] in ("[", "{"):
            return Failure(Reason.PARSE, JSON_NOT_EXPOSITION)
        return Failure(Reason.PARSE, str(exc))
    except Exception as exc:
        return Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
    return adapt(engine, index, want, model, lora=lora)
