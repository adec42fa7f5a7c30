"""The one interface the control loop sees, whatever reads the signals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from heliostat.signals.record import ScrapeTarget, Signal


@runtime_checkable
class SignalSource(Protocol):
    """Implemented by `Scraper`, `PrometheusSource` and `CompositeSource`.

    `on_update` is called with a model name after each round of that model, so the control
    loop can recompute that model's weights from `signals()`.
    """

    on_update: Callable[[str], Awaitable[None] | None] | None

    def signals(self) -> Mapping[tuple[str, str], Signal]: ...

    def update_targets(self, targets: Iterable[ScrapeTarget]) -> None: ...

    async def scrape_once(self, model: str | None = None) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...
