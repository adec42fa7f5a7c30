"""What both signal sources share: targets, per-endpoint state, the round loop, publishing.

A subclass only says how to read one model's endpoints (`_scrape_model`). Everything else
lives here: each model is read every `interval` (its own task, so a slow model cannot delay
another), a policy reload keeps the state (last signal, counters) of unchanged targets, results
are published as one immutable snapshot per round, and `on_update` is called after each round.
Nothing that goes wrong while reading can end the loop.

All methods must be called from the event loop that runs the source.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import ClassVar, Protocol, Self

from prometheus_client import CollectorRegistry

from heliostat.signals.metrics import SignalMetrics
from heliostat.signals.rates import (
    CounterState,
    PrefillState,
    ServedState,
    prefill_time,
    prefix_hit_rate,
    served_rate,
)
from heliostat.signals.record import Failure, Reading, ScrapeTarget, Signal, empty_signal

log = logging.getLogger(__name__)

Key = tuple[str, str]
UpdateHook = Callable[[str], Awaitable[None] | None]


@dataclass(slots=True)
class EndpointState:
    """Mutable per-endpoint bookkeeping; only its `signal` is ever shown outside."""

    target: ScrapeTarget
    signal: Signal
    counters: CounterState | None = None
    served: ServedState | None = None
    prefill: PrefillState | None = None

    def accept(self, reading: Reading, at: float, *, rated: bool = False) -> None:
        """Take a successful reading; `rated`: the source computed `served_rate` itself."""
        rate, self.counters = prefix_hit_rate(self.counters, reading)
        prefill, self.prefill = prefill_time(self.prefill, reading, at)
        if rated:
            served = reading.served_rate
        else:
            served, self.served = served_rate(self.served, reading.served_total, at)
        if self.signal.error is not None:
            log.info(
                "scrape_recovered",
                extra={
                    "model": self.target.model,
                    "endpoint": self.target.address,
                    "failed_scrapes": self.signal.consecutive_failures,
                },
            )
        if reading.missing and reading.missing != self.signal.missing:
            log.info(
                "scrape_metrics_missing",
                extra={
                    "model": self.target.model,
                    "endpoint": self.target.address,
                    "page": reading.page,
                    "missing": sorted(reading.missing),
                    "detail": "using what it has",
                },
            )
        self.signal = self.signal.with_reading(reading, rate, at, served, prefill)

    def reject(self, failure: Failure, *, warn: bool = True) -> None:
        """Record a failed scrape; `warn`: log it (a change of reason, not every failed
        round). The planet records without (its report counts a lost region's hundreds)."""
        if warn and self.signal.error != failure.reason:
            log.warning(
                "scrape_failed",
                extra={
                    "model": self.target.model,
                    "endpoint": self.target.address,
                    "reason": failure.reason,
                    "error": failure.detail,
                },
            )
        self.signal = self.signal.failed(failure.reason, failure.detail)


class Fetcher(Protocol):
    """Where a source's reads (HTTP fetch and parse) run: `offload.LocalFetcher` on this
    event loop, `offload.WorkerFetcher` in a worker process. Neither method raises: whatever
    goes wrong comes back as a `Failure` of the endpoint(s) concerned."""

    async def direct(self, target: ScrapeTarget) -> tuple[Reading | Failure, float]:
        """`scraper.read_endpoint`: one endpoint's result and the seconds it took."""
        ...

    async def prometheus(
        self, url: str, max_body_bytes: int, engine: str, targets: list[ScrapeTarget]
    ) -> tuple[list[tuple[Reading | Failure, float | None]], float]:
        """`prometheus.query_engine`: per target (result, time to apply it at; None: now)."""
        ...

    async def close(self) -> None: ...


def _same_series(a: ScrapeTarget, b: ScrapeTarget) -> bool:
    """Whether state read under `a` is still meaningful under `b` (timing may change)."""
    return (a.engine, a.path, a.selector, a.source, a.prometheus_url) == (
        b.engine,
        b.path,
        b.selector,
        b.source,
        b.prometheus_url,
    )


class PollingSource(ABC):
    """Base of `Scraper` and `PrometheusSource`; implements the `SignalSource` protocol."""

    kind: ClassVar[str]
    """Label of this source in `heliostat_scrape_duration_seconds`."""
    rates_served: ClassVar[bool] = False
    """True when the source's readings carry `served_rate` (Prometheus's rate()); otherwise
    it is computed here from the success counter between scrapes."""

    def __init__(
        self,
        targets: Iterable[ScrapeTarget],
        registry: CollectorRegistry | None,
        clock: Callable[[], float] = time.time,
        *,
        fetcher: Fetcher | None = None,
    ) -> None:
        self._clock = clock
        # Given: shared and closed by its owner (CompositeSource); otherwise this source's own.
        self._owns_fetcher = fetcher is None
        if fetcher is None:
            from heliostat.signals.offload import LocalFetcher  # here: offload imports us

            fetcher = LocalFetcher()
        self._fetcher: Fetcher = fetcher
        self._states: dict[Key, EndpointState] = {}
        self._snapshot: Mapping[Key, Signal] = MappingProxyType({})
        self._changed = asyncio.Event()
        self.on_update: UpdateHook | None = None
        """Called with the model name after each round of that model (sync or async)."""
        self._metrics = SignalMetrics.for_registry(registry) if registry is not None else None
        self.update_targets(targets)
        if self._metrics is not None:
            self._metrics.track(self)

    # --- public API ----------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def targets(self) -> list[ScrapeTarget]:
        return [state.target for state in self._states.values()]

    def signals(self) -> Mapping[Key, Signal]:
        """Latest signal of every target, keyed by (model, address); a read-only snapshot."""
        return self._snapshot

    def update_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        """Replace the target set; unchanged endpoints keep their signal and counters."""
        new: dict[Key, EndpointState] = {}
        for target in targets:
            if target.key in new:
                raise ValueError(f"duplicate target {target.key}")
            old = self._states.get(target.key)
            if old is not None and _same_series(old.target, target):
                new[target.key] = EndpointState(target, old.signal, old.counters, old.served)
            else:
                new[target.key] = EndpointState(target, empty_signal(target))
        self._states = new
        self._publish()
        self._changed.set()

    async def scrape_once(self, model: str | None = None) -> None:
        """One round for `model` (or all models at once); never raises."""
        models = [model] if model is not None else sorted(self._models())
        await asyncio.gather(*(self._round(m) for m in models))

    async def run(self) -> None:
        """Read every model on its interval until cancelled; follows `update_targets`."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                self._changed.clear()
                wanted = self._models()
                for model in list(tasks):
                    if model not in wanted or tasks[model].done():
                        tasks.pop(model).cancel()
                for model in sorted(wanted - tasks.keys()):
                    tasks[model] = asyncio.create_task(
                        self._model_loop(model), name=f"heliostat-signals-{self.kind}-{model}"
                    )
                await self._changed.wait()
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this source owns its fetcher (a later scrape opens a new
        one); a shared fetcher is its owner's to close."""
        if self._owns_fetcher:
            await self._fetcher.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- for subclasses ------------------------------------------------------------------

    @abstractmethod
    async def _scrape_model(self, model: str, states: list[EndpointState]) -> None:
        """Read every endpoint in `states` and `_apply` a result to each."""

    def _apply(self, state: EndpointState, result: Reading | Failure, at: float) -> None:
        if isinstance(result, Failure):
            state.reject(result)
            if self._metrics is not None:
                self._metrics.errors.labels(result.reason).inc()
        else:
            state.accept(result, at, rated=self.rates_served)

    def _observe(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.duration.labels(self.kind).observe(seconds)

    # --- internals -----------------------------------------------------------------------

    def _models(self) -> set[str]:
        return {key[0] for key in self._states}

    def _interval(self, model: str) -> float | None:
        intervals = [s.target.interval for s in self._states.values() if s.target.model == model]
        return min(intervals) if intervals else None

    def _publish(self) -> None:
        self._snapshot = MappingProxyType({key: s.signal for key, s in self._states.items()})

    async def _round(self, model: str) -> None:
        states = [s for s in self._states.values() if s.target.model == model]
        if not states:
            return
        try:
            await self._scrape_model(model, states)
        except Exception:
            log.exception("signals_round_failed", extra={"model": model})
        self._publish()
        hook = self.on_update
        if hook is not None:
            try:
                result = hook(model)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("signals_hook_failed", extra={"model": model})

    async def _model_loop(self, model: str) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self._round(model)
            except Exception:  # _round catches everything; this is the last line of defence
                log.exception("signals_round_crashed", extra={"model": model})
            interval = self._interval(model)
            if interval is None:
                return
            now = loop.time()
            next_at = max(next_at + interval, now)  # after an overrun, do not burst
            await asyncio.sleep(next_at - now)
