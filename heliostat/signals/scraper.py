"""The direct source: scrape each model server's own `/metrics`.

Each round fetches all endpoints of a model concurrently (one aiohttp session, kept-alive
connections), each bounded by its target's timeout and body cap, then hands the text to the
engine adapter. A failed endpoint keeps its last good values with `error` set.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from heliostat.signals.adapters import read_exposition
from heliostat.signals.http import EXPOSITION_ACCEPT, TEXT_TYPES, FetchError, fetch
from heliostat.signals.polling import EndpointState, PollingSource
from heliostat.signals.record import Failure, Reading, Reason


class Scraper(PollingSource):
    """Scrapes `ScrapeTarget`s directly.

    `Scraper(targets, registry, clock=time.time)`; `await scrape_once(model=None)`;
    `await run()` until cancelled; `update_targets(targets)`; `signals()`; `on_update`.
    """

    kind = "direct"

    async def _scrape_model(self, model: str, states: list[EndpointState]) -> None:
        session = self._session_for_loop()
        await asyncio.gather(*(self._scrape_endpoint(session, state) for state in states))

    async def _scrape_endpoint(self, session: aiohttp.ClientSession, state: EndpointState) -> None:
        target = state.target
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
        except Exception as exc:  # a bug must cost one endpoint one round, nothing more
            result = Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
        self._observe(time.perf_counter() - started)
        self._apply(state, result, self._clock())
