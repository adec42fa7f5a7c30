"""What the control law is told about one endpoint: a sample of its load, and where it came from.

The signal layer (`heliostat.signals`) scrapes engines over HTTP or asks Prometheus; the control
law (`heliostat.balance`) must stay pure and importable without aiohttp, asyncio or
prometheus_client. So the law reads its input through `Sample`, a read-only protocol declared
here on the ground floor, and `heliostat.signals.Signal` is one record that satisfies it (the
benchmark's and planet model's fakes are others). `Engine` and `SourceKind` are declared once,
here, for the policy schema and the scrape targets alike.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class Engine(StrEnum):
    """The model server behind an endpoint; decides which metric names are scraped.

    `triton` also covers Triton's TensorRT-LLM backend (detected from its `nv_trt_llm_*`
    series); `trtllm` is `trtllm-serve`.
    """

    VLLM = "vllm"
    SGLANG = "sglang"
    TRITON = "triton"
    TRTLLM = "trtllm"
    TGI = "tgi"


class SourceKind(StrEnum):
    """Where a model's samples come from: its servers directly, or a Prometheus server."""

    DIRECT = "direct"
    PROMETHEUS = "prometheus"


class Sample(Protocol):
    """The latest known load of one endpoint of one model, as the control law reads it.

    Values an engine does not report are None (a partial sample is a healthy one).
    `scraped_at` is the time of the last successful read (None: never); on failure the last
    good values are kept and `error` and `consecutive_failures` say so, because the law, not
    the reader, decides how long old numbers may still steer traffic (`is_stale`).
    """

    @property
    def waiting(self) -> float | None: ...
    @property
    def running(self) -> float | None: ...
    @property
    def kv_usage(self) -> float | None: ...
    @property
    def max_num_seqs(self) -> int | None: ...
    @property
    def prefix_hit_rate(self) -> float | None: ...
    @property
    def prefill_s(self) -> float | None: ...
    @property
    def served_total(self) -> float | None: ...
    @property
    def served_rate(self) -> float | None: ...
    @property
    def scraped_at(self) -> float | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def consecutive_failures(self) -> int: ...

    def age(self, now: float) -> float | None:
        """Seconds since the last successful read (never negative), None if never read."""
        ...

    def is_stale(self, now: float, stale_after: float) -> bool:
        """True when there is no data younger than `stale_after` seconds to act on."""
        ...
