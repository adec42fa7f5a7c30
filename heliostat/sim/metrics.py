"""vLLM's Prometheus page as a real vLLM server prints it, fed by the simulated engines.

A scraper that reads the simulator must read a real vLLM too, so the page copies vLLM's names
and label sets (vllm-project/vllm, `vllm/v1/metrics/loggers.py`, PrometheusStatLogger):

- every series carries `model_name` and `engine`, one value per data-parallel engine core
  (`engines` > 1 is a data-parallel server: several engine cores behind one API server);
  prometheus_client prints labels sorted by name, as on vLLM's page;
- `vllm:request_success_total{finished_reason}` exists from start-up at 0 for each finish
  reason (stop, length, abort), as vLLM creates them all up front;
- `vllm:cache_config_info` is a gauge at 1 whose labels are the cache config fields and
  `engine`, and no model_name.

`names="v0"` prints the V0 engine's page instead (`vllm/engine/metrics.py`): `model_name`
only, `vllm:gpu_cache_usage_perc`, the `vllm:gpu_prefix_cache_hit_rate` gauge, success
counters created when a request first finishes with that reason, and no engine label (V0 had
no data parallelism).

Each replica owns a private :class:`~prometheus_client.CollectorRegistry`, so many replicas
share one process without their series mixing. prometheus_client adds ``_total`` to counter
names, so counters are declared without it and come out as vLLM spells them. Gauges are
sampled from the engines when the page is rendered, which is when vLLM's own values are
recent too. Times are wall-clock seconds as a client would measure them, i.e. already divided
by the replica's ``speed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from heliostat.sim.engine import Engine, EngineObserver, EngineRequest

MetricNames = Literal["v1", "v0"]

# vLLM v1's buckets, so histogram_quantile() over the simulator behaves like over vLLM.
PREFILL_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

FINISHED_REASONS: Final = ("stop", "length", "abort")
"""vLLM v1's FinishReason values as its metrics print them."""

SIM_FINISHED_REASON: Final = "length"
"""Every simulated request generates its max_tokens, so it finishes for its length."""


class ReplicaMetrics:
    """The metric families of one replica (one or several engines), fed by engine events."""

    def __init__(
        self,
        model: str,
        block_size: int,
        num_gpu_blocks: int,
        *,
        engines: int = 1,
        names: MetricNames = "v1",
    ) -> None:
        if engines < 1:
            raise ValueError("a replica has at least one engine")
        if names == "v0" and engines != 1:
            raise ValueError("vLLM V0 had no data parallelism: names='v0' needs engines=1")
        self.model = model
        self.names = names
        self.num_engines = engines
        self._engines: Sequence[Engine] = ()
        self.registry = CollectorRegistry()
        r = self.registry
        v1 = names == "v1"
        lbl = ["model_name", "engine"] if v1 else ["model_name"]
        self._labels = [
            {"model_name": model, "engine": str(i)} if v1 else {"model_name": model}
            for i in range(engines)
        ]
        self.running = Gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches."
            if v1
            else "Number of requests currently running on GPU.",
            lbl,
            registry=r,
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", lbl,
            registry=r,
        )  # fmt: skip
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc" if v1 else "vllm:gpu_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage."
            if v1
            else "GPU KV-cache usage. 1 means 100 percent usage.",
            lbl,
            registry=r,
        )
        self.prefix_queries: Counter | None = None
        self.prefix_hits: Counter | None = None
        self.prefix_hit_rate: Gauge | None = None
        if v1:
            self.prefix_queries = Counter(
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                lbl,
                registry=r,
            )
            self.prefix_hits = Counter(
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                lbl,
                registry=r,
            )
        else:
            self.prefix_hit_rate = Gauge(
                "vllm:gpu_prefix_cache_hit_rate", "GPU prefix cache block hit rate.", lbl,
                registry=r,
            )  # fmt: skip
        self.preemptions = Counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", lbl,
            registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", lbl, registry=r
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", lbl, registry=r
        )
        self.success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*lbl, "finished_reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            lbl,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        # vLLM's request_latency_buckets; the law reads its sum and count only.
        self.prefill_time = Histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            lbl,
            buckets=PREFILL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            lbl,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        config = {
            "block_size": str(block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": "0.9",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(num_gpu_blocks),
            "sliding_window": "None",
        }
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            [*config, "engine"] if v1 else list(config),
            registry=r,
        )
        for index in range(engines if v1 else 1):
            info.labels(**config, **({"engine": str(index)} if v1 else {})).set(1)
        # Touch every labelled child so a fresh replica exposes zeros rather than nothing:
        # a scraper must be able to tell "idle" from "not a vLLM". V1 creates its success
        # counters for every finish reason up front; V0 creates each on first use.
        for labels in self._labels:
            for metric in (
                self.waiting,
                self.running,
                self.kv_usage,
                self.prefix_queries,
                self.prefix_hits,
                self.prefix_hit_rate,
                self.preemptions,
                self.prompt_tokens,
                self.generation_tokens,
                self.ttft,
                self.prefill_time,
                self.e2e,
            ):
                if metric is not None:
                    metric.labels(**labels)
            if v1:
                for reason in FINISHED_REASONS:
                    self.success.labels(**labels, finished_reason=reason)

    def observer(self, index: int = 0) -> EngineObserver:
        """The observer that counts engine `index`'s events under its `engine` label."""
        return _EngineMetrics(self, index)

    def attach(self, engines: Sequence[Engine]) -> None:
        """The engines whose gauges `render` samples (engine `i` is `engine="i"`)."""
        if len(engines) != self.num_engines:
            raise ValueError(f"expected {self.num_engines} engines, got {len(engines)}")
        self._engines = tuple(engines)

    def refresh(self, waiting: int, running: int, kv_usage: float, engine: int = 0) -> None:
        """Set one engine's gauges by hand, for a fixed page without engines attached (the
        benchmarks serve one); a replica's page samples its engines in `render` instead."""
        labels = self._labels[engine]
        self.waiting.labels(**labels).set(waiting)
        self.running.labels(**labels).set(running)
        self.kv_usage.labels(**labels).set(kv_usage)

    def render(self) -> bytes:
        """The /metrics page, with every engine's gauges sampled now."""
        for labels, engine in zip(self._labels, self._engines, strict=False):
            self.waiting.labels(**labels).set(engine.num_waiting)
            self.running.labels(**labels).set(engine.num_running)
            self.kv_usage.labels(**labels).set(engine.pool.usage)
            if self.prefix_hit_rate is not None:
                queries = engine.prefix_queries
                # V0 printed -1 until something was queried (prefix caching looked off).
                rate = engine.prefix_hits / queries if queries else -1.0
                self.prefix_hit_rate.labels(**labels).set(rate)
        return generate_latest(self.registry)


class _EngineMetrics(EngineObserver):
    """One engine's events, counted under its labels."""

    def __init__(self, metrics: ReplicaMetrics, index: int) -> None:
        self.m = metrics
        self.labels = metrics._labels[index]

    def on_admit(self, req: EngineRequest) -> None:
        if self.m.prefix_queries is not None and self.m.prefix_hits is not None:
            self.m.prefix_queries.labels(**self.labels).inc(req.prompt_len)
            self.m.prefix_hits.labels(**self.labels).inc(req.num_cached_tokens)

    def on_first_token(self, req: EngineRequest) -> None:
        self.m.prompt_tokens.labels(**self.labels).inc(req.prompt_len)
        if req.ttft is not None:
            self.m.ttft.labels(**self.labels).observe(req.ttft)
        if req.prefill_time is not None:
            self.m.prefill_time.labels(**self.labels).observe(req.prefill_time)

    def on_finish(self, req: EngineRequest) -> None:
        self.m.generation_tokens.labels(**self.labels).inc(req.num_generated)
        self.m.success.labels(**self.labels, finished_reason=SIM_FINISHED_REASON).inc()
        if req.e2e is not None:
            self.m.e2e.labels(**self.labels).observe(req.e2e)
