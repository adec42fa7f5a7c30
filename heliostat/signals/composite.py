"""Route each model's targets to the source its policy names, behind one `SignalSource`.

The policy chooses per model: `signals: {source: direct}` (default) or
`{source: prometheus, prometheus_url: ...}`. The control loop holds one `CompositeSource`;
this module keeps one `Scraper` for all direct targets and one `PrometheusSource` per
Prometheus URL, creating and retiring them as policies are reloaded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Self

from prometheus_client import CollectorRegistry

from heliostat.signals.offload import WorkerFetcher
from heliostat.signals.polling import Fetcher, PollingSource
from heliostat.signals.prometheus import PrometheusSource
from heliostat.signals.record import ScrapeTarget, Signal
from heliostat.signals.scraper import Scraper

_DIRECT = "direct"


class CompositeSource:
    """A `SignalSource` dispatching targets by `ScrapeTarget.source` / `prometheus_url`."""

    def __init__(
        self,
        targets: Iterable[ScrapeTarget],
        registry: CollectorRegistry | None,
        clock: Callable[[], float] = time.time,
        *,
        offload: bool = False,
    ) -> None:
        """`offload`: read (fetch and parse) in a worker process shared by all sources,
        off this event loop (`signals.offload`); otherwise on it."""
        self._registry = registry
        self._fetcher: Fetcher | None = WorkerFetcher() if offload else None
        self._clock = clock
        self._sources: dict[str, PollingSource] = {}
        self._retired: list[PollingSource] = []
        self._on_update: Callable[[str], Awaitable[None] | None] | None = None
        self._changed = asyncio.Event()
        self.update_targets(targets)

    @property
    def on_update(self) -> Callable[[str], Awaitable[None] | None] | None:
        return self._on_update

    @on_update.setter
    def on_update(self, hook: Callable[[str], Awaitable[None] | None] | None) -> None:
        self._on_update = hook
        for source in self._sources.values():
            source.on_update = hook

    def sources(self) -> Mapping[str, PollingSource]:
        """Current sources by `"direct"` or Prometheus URL."""
        return MappingProxyType(self._sources)

    def signals(self) -> Mapping[tuple[str, str], Signal]:
        merged: dict[tuple[str, str], Signal] = {}
        for source in self._sources.values():
            merged.update(source.signals())
        return MappingProxyType(merged)

    def update_targets(self, targets: Iterable[ScrapeTarget]) -> None:
        groups: dict[str, list[ScrapeTarget]] = {}
        for target in targets:
            where = target.prometheus_url if target.source == "prometheus" else _DIRECT
            assert where is not None  # ScrapeTarget checks prometheus_url is set
            groups.setdefault(where.rstrip("/") if where != _DIRECT else where, []).append(target)
        for where in list(self._sources):
            if where not in groups:
                self._retired.append(self._sources.pop(where))
        for where, group in groups.items():
            source = self._sources.get(where)
            if source is None:
                source = self._new_source(where, group)
                source.on_update = self._on_update
                self._sources[where] = source
            else:
                source.update_targets(group)
        self._changed.set()

    async def scrape_once(self, model: str | None = None) -> None:
        await asyncio.gather(*(s.scrape_once(model) for s in list(self._sources.values())))
        await self._close_retired()

    async def run(self) -> None:
        tasks: dict[PollingSource, asyncio.Task[None]] = {}
        try:
            while True:
                self._changed.clear()
                current = set(self._sources.values())
                for source in list(tasks):
                    if source not in current:
                        tasks.pop(source).cancel()
                for source in current - tasks.keys():
                    tasks[source] = asyncio.create_task(source.run(), name=f"{source.kind} source")
                await self._close_retired()
                # A source that ends on its own is a failure of this task: raise it, so the
                # supervisor logs, counts and restarts it rather than a scraper dying quietly.
                changed = asyncio.create_task(self._changed.wait())
                try:
                    await asyncio.wait(
                        [changed, *tasks.values()], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    changed.cancel()
                for task in tasks.values():
                    if task.done():
                        if not task.cancelled() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
                        raise RuntimeError(f"signal source {task.get_name()} stopped")
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            await self.close()

    async def start(self) -> None:
        """Start the worker process now, if reads are offloaded (see `WorkerFetcher.start`)."""
        if isinstance(self._fetcher, WorkerFetcher):
            await self._fetcher.start()

    async def close(self) -> None:
        """Close every source, and end the worker process (a later read starts another)."""
        for source in self._sources.values():
            await source.close()
        await self._close_retired()
        if self._fetcher is not None:
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

    def _new_source(self, where: str, targets: list[ScrapeTarget]) -> PollingSource:
        if where == _DIRECT:
            return Scraper(targets, self._registry, self._clock, fetcher=self._fetcher)
        return PrometheusSource(where, targets, self._registry, self._clock, fetcher=self._fetcher)

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for source in retired:
            await source.close()
