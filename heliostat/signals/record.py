"""The records the signal layer hands to the rest of heliostat.

`ScrapeTarget` says what to read and how; `Signal` is the latest thing we know about one
endpoint. A `Signal` keeps the last good values when a scrape fails (with `error` and
`consecutive_failures` set), because the control loop, not the scraper, decides how long old
numbers may still steer traffic: it asks `is_stale()` with the policy's `stale_after`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from heliostat.samples import Engine, SourceKind

ENGINES: Final[frozenset[str]] = frozenset(engine.value for engine in Engine)

DEFAULT_METRICS_PATHS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "vllm": "/metrics",
        "sglang": "/metrics",
        "triton": "/metrics",
        # trtllm-serve's /metrics answers JSON iteration statistics (`[]` when idle); its
        # Prometheus text is at /prometheus/metrics.
        "trtllm": "/prometheus/metrics",
        "tgi": "/metrics",
    }
)
"""Where each engine serves Prometheus text; `signals.metrics_path` overrides it per model."""

LOAD_FIELDS: Final = ("waiting", "running", "kv_usage", "prefix_hit_rate", "served_total")
"""The load fields of a `Signal` an engine may or may not export; `missing` names the absent."""

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024


JSON_NOT_EXPOSITION: Final = "JSON where Prometheus text was expected: set signals.metrics_path"
"""The detail of a scrape that got JSON: trtllm-serve's /metrics is JSON statistics."""


class Reason:
    """Short error codes; stable strings because they label metrics and the debug view."""

    TIMEOUT: Final = "timeout"
    CONNECT: Final = "connect"
    PROTOCOL: Final = "protocol"
    HTTP_STATUS: Final = "http_status"
    CONTENT_TYPE: Final = "content_type"
    REDIRECT: Final = "redirect"
    TOO_LARGE: Final = "too_large"
    PARSE: Final = "parse"
    BAD_VALUE: Final = "bad_value"
    MISSING_SERIES: Final = "missing_series"
    TARGET_DOWN: Final = "target_down"
    """Prometheus source only: Prometheus's own scrape of the endpoint failed (`up` is 0)."""
    QUERY: Final = "query"
    """Prometheus source only: the query API answered with an error status."""
    INTERNAL: Final = "internal"
    """A bug on our side; caught so one endpoint cannot stop the loop."""


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One endpoint of one model, and how to read its metrics.

    `model_label` is the value of the engine's model label (`model_name` for vLLM, SGLang and
    trtllm-serve, `model` for Triton) to select on multi-model servers; it defaults to `model`.
    A server that labels a single model under another name (vLLM's `model_name` is usually the
    Hugging Face id, which policy names cannot spell) is still read: see `adapters.py`.
    A LoRA adapter (`lora`) sets `model_label` to its base model's name (`signals.base_model`):
    its load is read from the base model's series, and `Signal.lora` says so.

    `metrics_path` None means the engine's own path (`DEFAULT_METRICS_PATHS`).
    """

    model: str
    address: str
    engine: Engine = Engine.VLLM
    metrics_path: str | None = None
    interval: float = 2.0
    timeout: float = 0.5
    stale_after: float = 6.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    model_label: str | None = None
    source: SourceKind = SourceKind.DIRECT
    prometheus_url: str | None = None
    lora: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; expected one of {sorted(ENGINES)}")
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"address {self.address!r} is not host:port")
        if self.metrics_path is not None and not self.metrics_path.startswith("/"):
            raise ValueError(f"metrics_path {self.metrics_path!r} must start with '/'")
        for name in ("interval", "timeout", "stale_after"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if self.source == "prometheus" and not self.prometheus_url:
            raise ValueError("prometheus_url is required when source is prometheus")

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.address)

    @property
    def selector(self) -> str:
        """The model label value to select on a multi-model server."""
        return self.model_label if self.model_label is not None else self.model

    @property
    def path(self) -> str:
        """The path scraped: the policy's, else the engine's default."""
        if self.metrics_path is not None:
            return self.metrics_path
        return DEFAULT_METRICS_PATHS[self.engine]

    @property
    def url(self) -> str:
        return f"http://{self.address}{self.path}"


@dataclass(frozen=True, slots=True)
class Reading:
    """What one successful scrape says, before counters are turned into rates.

    Produced by the pure engine adapters; `prefix_hits_total`/`prefix_queries_total` are raw
    counters (vLLM), `prefix_hit_rate` is an engine-computed gauge (SGLang, trtllm-serve).

    A reading may be partial: an engine (or an older build of it) that does not export a field
    leaves it None and names it in `missing`; only a page with none of the engine's series for
    the model is a failed scrape.

    - `served_total`: the engine's success counter for the model, summed over its label sets
      (finished_reason, engine, version), raw as scraped.
    - `served_rate`: completed requests per second when the source computes rates itself (the
      Prometheus source's `rate()`); None from the engine adapters, whose counters become rates
      between scrapes (`rates.py`).
    - `kv_usage_max`: the fullest engine's KV use on a multi-engine page (data-parallel vLLM,
      SGLang dp ranks, Triton model versions); equal to `kv_usage` with one engine.
    - `page`: the shape of page the adapter recognised ("vllm v1", "sglang <0.5.11", ...).
    - `engines`: how many engines (series of the model) the page has.
    - `read_as`: the model label value the numbers were read under (None: unlabelled).
    - `max_num_seqs`, `num_gpu_blocks`: the server's slots and KV blocks, summed over engines;
      `block_size` one engine's.
    - `prefill_seconds_total`, `prefill_requests_total`: vLLM's prefill-time histogram's
      sum and count (seconds from a request's scheduling to its first token), raw.
    - `lora`: on vLLM with LoRA, whether the policy model (an adapter) is `running`,
      `waiting` or `idle` per `vllm:lora_requests_info`; None without that series or when the
      policy model is the base model itself.
    """

    engine: str
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    prefix_hit_rate: float | None = None
    prefix_hits_total: float | None = None
    prefix_queries_total: float | None = None
    max_num_seqs: int | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    served_total: float | None = None
    served_rate: float | None = None
    kv_usage_max: float | None = None
    missing: frozenset[str] = frozenset()
    page: str | None = None
    engines: int | None = None
    read_as: str | None = None
    lora: str | None = None
    # vLLM's `vllm:request_prefill_time_seconds` histogram: its _sum and _count, raw.
    prefill_seconds_total: float | None = None
    prefill_requests_total: float | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a scrape produced no reading: a `Reason` code and a short human detail."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """The latest known state of one endpoint of one model.

    Values an engine does not report stay None (Triton has no KV use, TGI no prefix cache)
    and are named in `missing`: a partial signal is a healthy one. `scraped_at` is the
    wall-clock time (`time.time()` or the source's clock) of the last successful scrape, None
    if there never was one. On failure the previous values are kept and `error` (a `Reason`
    code), `error_detail` and `consecutive_failures` say what is going on; a success clears them.

    `served_total` is the engine's success counter (raw); `served_rate` the requests completed
    per second between the last two successful scrapes (reset-aware; None until two scrapes).
    `kv_usage_max` is the fullest engine's KV use (see `Reading` for it and the page fields).
    """

    model: str
    address: str
    engine: str
    waiting: float | None = None
    running: float | None = None
    kv_usage: float | None = None
    prefix_hit_rate: float | None = None
    max_num_seqs: int | None = None
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    scraped_at: float | None = None
    error: str | None = None
    consecutive_failures: int = 0
    served_total: float | None = None
    served_rate: float | None = None
    kv_usage_max: float | None = None
    missing: frozenset[str] = frozenset()
    page: str | None = None
    engines: int | None = None
    read_as: str | None = None
    lora: str | None = None
    error_detail: str | None = None
    # The mean prefill time of its requests of late (seconds; `rates.prefill_time`): None
    # when the engine does not export it or nothing was prefilled yet.
    prefill_s: float | None = None

    def age(self, now: float) -> float | None:
        """Seconds since the last successful scrape (never negative), None if never scraped."""
        if self.scraped_at is None:
            return None
        return max(0.0, now - self.scraped_at)

    def is_stale(self, now: float, stale_after: float) -> bool:
        """True when there is no data younger than `stale_after` seconds to act on."""
        age = self.age(now)
        return age is None or age > stale_after

    @property
    def ok(self) -> bool:
        return self.scraped_at is not None and self.error is None

    def failed(self, reason: str, detail: str | None = None) -> Signal:
        return dataclasses.replace(
            self,
            error=reason,
            error_detail=detail or None,
            consecutive_failures=self.consecutive_failures + 1,
        )

    def with_reading(
        self,
        reading: Reading,
        prefix_hit_rate: float | None,
        at: float,
        served_rate: float | None = None,
        prefill_s: float | None = None,
    ) -> Signal:
        return dataclasses.replace(
            self,
            engine=reading.engine,
            waiting=reading.waiting,
            running=reading.running,
            kv_usage=reading.kv_usage,
            prefix_hit_rate=prefix_hit_rate,
            max_num_seqs=reading.max_num_seqs,
            num_gpu_blocks=reading.num_gpu_blocks,
            block_size=reading.block_size,
            scraped_at=at,
            error=None,
            consecutive_failures=0,
            served_total=reading.served_total,
            served_rate=served_rate,
            kv_usage_max=reading.kv_usage_max,
            missing=reading.missing,
            page=reading.page,
            engines=reading.engines,
            read_as=reading.read_as,
            lora=reading.lora,
            error_detail=None,
            prefill_s=prefill_s,
        )


def empty_signal(target: ScrapeTarget) -> Signal:
    """The record of an endpoint that has not been scraped yet (always stale)."""
    return Signal(model=target.model, address=target.address, engine=target.engine)
