"""vLLM v1's Prometheus metrics, with the exact names heliostat's scraper reads.

Each replica owns a private :class:`~prometheus_client.CollectorRegistry`, so many replicas share
one process without their series mixing. prometheus_client adds ``_total`` to counter names, so
counters are declared without it and come out as vLLM spells them. Gauges are refreshed from the
engine at scrape time, which is when vLLM's own values are sampled too. Times are wall-clock
seconds as a client would measure them, i.e. already divided by the replica's ``speed``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from heliostat.sim.engine import EngineObserver, EngineRequest

# vLLM v1's buckets, so histogram_quantile() over the simulator behaves like over vLLM.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


class ReplicaMetrics(EngineObserver):
    """The metric families of one replica, fed by engine events."""

    def __init__(self, model: str, block_size: int, num_gpu_blocks: int) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        r = self.registry
        lbl = ["model_name"]
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", lbl, registry=r
        )
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", lbl, registry=r
        )
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            lbl,
            registry=r,
        )
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of tokens.",
            lbl,
            registry=r,
        )
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", lbl, registry=r
        )
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
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            lbl,
            buckets=E2E_BUCKETS,
            registry=r,
        )
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig.",
            ["model_name", "block_size", "num_gpu_blocks", "enable_prefix_caching"],
            registry=r,
        )
        info.labels(
            model_name=model,
            block_size=str(block_size),
            num_gpu_blocks=str(num_gpu_blocks),
            enable_prefix_caching="True",
        ).set(1)
        # Touch every labelled child so a fresh replica exposes zeros rather than nothing:
        # a scraper must be able to tell "idle" from "not a vLLM".
        for metric in (
            self.waiting,
            self.running,
            self.kv_usage,
            self.prefix_queries,
            self.prefix_hits,
            self.prompt_tokens,
            self.generation_tokens,
            self.ttft,
            self.e2e,
        ):
            metric.labels(model_name=model)

    def refresh(self, waiting: int, running: int, kv_usage: float) -> None:
        """Sample the engine's gauges (called just before rendering)."""
        self.waiting.labels(model_name=self.model).set(waiting)
        self.running.labels(model_name=self.model).set(running)
        self.kv_usage.labels(model_name=self.model).set(kv_usage)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- EngineObserver ------------------------------------------------------------------------

    def on_admit(self, req: EngineRequest) -> None:
        self.prefix_queries.labels(model_name=self.model).inc(req.prompt_len)
        self.prefix_hits.labels(model_name=self.model).inc(req.num_cached_tokens)

    def on_first_token(self, req: EngineRequest) -> None:
        self.prompt_tokens.labels(model_name=self.model).inc(req.prompt_len)
        if req.ttft is not None:
            self.ttft.labels(model_name=self.model).observe(req.ttft)

    def on_finish(self, req: EngineRequest) -> None:
        self.generation_tokens.labels(model_name=self.model).inc(req.num_generated)
        self.success.labels(model_name=self.model, finished_reason="length").inc()
        if req.e2e is not None:
            self.e2e.labels(model_name=self.model).observe(req.e2e)
