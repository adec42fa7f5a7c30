"""The direct source: scrape each model server's own `/metrics`.

Each round fetches all endpoints of a model concurrently, each bounded by its target's timeout
and body cap, then hands the text to the engine adapter. A failed endpoint keeps its last good
values with `error` set. The fetch and parse (`read_endpoint`) run wherever the source's
`Fetcher` runs them: on this event loop, or in the scrape worker process (`signals.worker`).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from heliostat.signals.adapters import read_exposition
from heliostat.signals.http import EXPOSITION_ACCEPT, TEXT_TYPES, FetchError, fetch
from heliostat.signals.polling import EndpointState, PollingSource
from heliostat.signals.record import Failure, Reading, Reason, ScrapeTarget


async def read_endpoint(
    session: aiohttp.ClientSession, target: ScrapeTarget
) -> tuple[Reading | Failure, float]:
    """Fetch and parse one endpoint's page: (its reading or failure, seconds it took).

    Never raises: a bug must cost one endpoint one round, nothing more.
    """
    started = time.perf_counter()
    result: Reading | Failure
    try:
        fetched = await fetch(
            session,
            target.url,
            timeout=target.timeout,
            max_bytes=target.max_body_bytes,
            accept=EXPOSITION_ACCEPT,
            content_types=TEXT_TYPES,
        )
        text = fetched.body.decode("utf-8")
        result = read_exposition(
            text,
            target.engine,
            target.selector,
            openmetrics=fetched.content_type == "application/openmetrics-text",
            model=target.model,
            lora=target.lora,
        )
    except FetchError as exc:
        result = Failure(exc.reason, exc.detail)
    except UnicodeDecodeError as exc:
        result = Failure(Reason.PARSE, f"body is not UTF-8 at byte {exc.start}")
    except Exception as exc:
        result = Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
    return result, time.perf_counter() - started


class Scraper(PollingSource):
    """Scrapes `ScrapeTarget`s directly.

    `Scraper(targets, registry, clock=time.time, fetcher=None)`; `await scrape_once(model=None)`;
    `await run()` until cancelled; `update_targets(targets)`; `signals()`; `on_update`.
    """

    kind = "direct"

    async def _scrape_model(self, model: str, states: list[EndpointState]) -> None:
        await asyncio.gather(*(self._scrape_endpoint(state) for state in states))

    async def _scrape_endpoint(self, state: EndpointState) -> None:
        result, seconds = await self._fetcher.direct(state.target)
        self._observe(seconds)
        self._apply(state, result, self._clock())
