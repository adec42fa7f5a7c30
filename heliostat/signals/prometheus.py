"""The Prometheus source: read the same signals from a Prometheus server's HTTP API.

For sites that already scrape their model servers with Prometheus and do not want a second
scraper hitting them. Per model and engine, one instant query fetches every wanted series of
every endpoint of the model:

    {__name__=~"vllm:num_requests_waiting|...|up", instance=~"10\\.0\\.0\\.1:8000|..."}

and, in the same query, the success counters' `rate()` (renamed `heliostat:served_rate`, since
`rate()` drops the metric name), over `max(1m, 4 x interval)` so the window always holds the
two samples `rate()` needs at common scrape intervals:

    ... or label_replace(label_replace(rate({__name__=~"vllm:request_success_total",
            instance=~...}[60s]), "__name__", "heliostat:served_rate", "", ""),
            "heliostat_series", "served_rate", "", "")

Series are matched to endpoints by their `instance` label, which must equal the target's
address (Prometheus's default for static targets). Each endpoint's samples then go through the
very same engine adapter as a direct scrape, so both sources agree on model selection, value
checks and prefix-cache rates; the served rate is Prometheus's own `rate()` of the selected
model's series (reset-aware, as direct scrapes are). `scraped_at` is the timestamp of the
endpoint's oldest sample, i.e. when Prometheus last scraped it, so staleness means the same
thing as for direct scrapes.
If `up` is 0 for an endpoint its previous values are kept with error `target_down`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from heliostat.signals.adapters import MODEL_LABEL, SUCCESS_COUNTERS, WANTED, adapt
from heliostat.signals.exposition import Labels, SampleIndex
from heliostat.signals.http import FetchError, fetch
from heliostat.signals.polling import EndpointState, Fetcher, PollingSource
from heliostat.signals.record import Failure, Reading, Reason, ScrapeTarget

DEFAULT_PROMETHEUS_MAX_BYTES = 16 * 1024 * 1024
_DROPPED_LABELS = frozenset({"__name__", "instance", "job", "heliostat_series"})

Sample = tuple[str, Labels, float, float]
"""(metric name, labels without instance/job, timestamp, value)."""


class QueryError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


SERVED_RATE = "heliostat:served_rate"
"""The name the combined query gives the success counters' rate() series."""
_MARKER = "heliostat_series"


def build_query(
    names: Iterable[str],
    addresses: Iterable[str],
    rate_of: Iterable[str] = (),
    window: float = 60.0,
) -> str:
    """Instant query of `names` at `addresses`, plus `rate()` of the `rate_of` counters."""
    addresses = sorted(addresses)
    query = _selector(names, addresses)
    rate_of = sorted(rate_of)
    if rate_of:
        rate = f"rate({_selector(rate_of, addresses)}[{max(1, round(window))}s])"
        # `or` matches label sets ignoring the metric name, and the counters themselves are in
        # the first operand: a marker label keeps their rates from being dropped as duplicates.
        named = f'label_replace({rate}, "__name__", "{SERVED_RATE}", "", "")'
        query += f' or label_replace({named}, "{_MARKER}", "served_rate", "", "")'
    return query


def _selector(names: Iterable[str], addresses: Iterable[str]) -> str:
    names_re = "|".join(re.escape(n) for n in sorted(names))
    instances_re = "|".join(re.escape(a) for a in addresses)
    return f"{{__name__=~{promql_string(names_re)},instance=~{promql_string(instances_re)}}}"


def rate_window(interval: float) -> float:
    """Seconds of history for rate(): at least two Prometheus samples of a counter, at the
    usual 15 s scrape interval four, and never shorter than four of our own intervals."""
    return max(60.0, 4.0 * interval)


def parse_vector(body: bytes) -> dict[str, list[Sample]]:
    """An instant-query answer -> samples by instance; raises `QueryError` on bad input."""
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QueryError(Reason.PARSE, f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise QueryError(Reason.PARSE, "answer is not a JSON object")
    if payload.get("status") != "success":
        raise QueryError(Reason.QUERY, str(payload.get("error", "status is not success"))[:200])
    data = payload.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise QueryError(Reason.PARSE, "answer is not an instant vector")
    result = data.get("result")
    if not isinstance(result, list):
        raise QueryError(Reason.PARSE, "result is not a list")
    by_instance: dict[str, dict[str, list[Sample]]] = {}
    for item in result:
        try:
            metric = item["metric"]
            timestamp, value = item["value"]
            name, instance = metric["__name__"], metric["instance"]
            labels = {str(k): str(v) for k, v in metric.items() if k not in _DROPPED_LABELS}
            sample = (str(name), labels, float(timestamp), float(value))
            job = str(metric.get("job", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise QueryError(Reason.PARSE, f"malformed sample: {str(item)[:100]}") from exc
        by_instance.setdefault(str(instance), {}).setdefault(job, []).append(sample)
    return {instance: _one_job(jobs) for instance, jobs in by_instance.items()}


def _one_job(jobs: dict[str, list[Sample]]) -> list[Sample]:
    """Samples of one scrape job: an address scraped by two jobs would otherwise count twice.

    Prefers a job whose scrape succeeded (`up` == 1), then the first by name.
    """
    if len(jobs) == 1:
        return next(iter(jobs.values()))

    def up(samples: list[Sample]) -> bool:
        return any(name == "up" and value == 1 for name, _, _, value in samples)

    return jobs[min(jobs, key=lambda job: (not up(jobs[job]), job))]


class PrometheusSource(PollingSource):
    """Reads `ScrapeTarget`s from the Prometheus server at `url` (same API as `Scraper`).

    Each model's query uses the smallest `interval` and largest `timeout` of its targets.
    """

    kind = "prometheus"
    # Instant queries are stamped with the query time, not the sample's scrape time, so deltas
    # between our queries would be noise; Prometheus computes rate() itself.
    rates_served = True

    def __init__(
        self,
        url: str,
        targets: Iterable[ScrapeTarget],
        registry: CollectorRegistry | None,
        clock: Callable[[], float] = time.time,
        *,
        max_body_bytes: int = DEFAULT_PROMETHEUS_MAX_BYTES,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_body_bytes = max_body_bytes
        super().__init__(targets, registry, clock, fetcher=fetcher)

    async def _scrape_model(self, model: str, states: list[EndpointState]) -> None:
        by_engine: dict[str, list[EndpointState]] = {}
        for state in states:
            by_engine.setdefault(state.target.engine, []).append(state)
        for engine, group in by_engine.items():
            results, seconds = await self._fetcher.prometheus(
                self.url, self.max_body_bytes, engine, [s.target for s in group]
            )
            self._observe(seconds)
            for state, (result, at) in zip(group, results, strict=True):
                self._apply(state, result, self._clock() if at is None else at)


async def query_engine(
    session: aiohttp.ClientSession,
    url: str,
    max_body_bytes: int,
    engine: str,
    targets: list[ScrapeTarget],
) -> tuple[list[tuple[Reading | Failure, float | None]], float]:
    """One query for `targets` (all of `engine`): per target its result and the time to apply
    it at (a reading's scrape time; None: now), and the seconds the query took. Never raises."""
    query = build_query(
        WANTED[engine] | {"up"},
        (t.address for t in targets),
        SUCCESS_COUNTERS[engine],
        rate_window(min(t.interval for t in targets)),
    )
    started = time.perf_counter()
    try:
        fetched = await fetch(
            session,
            f"{url}/api/v1/query",
            method="POST",
            data={"query": query},
            timeout=max(t.timeout for t in targets),
            max_bytes=max_body_bytes,
            accept="application/json",
            content_types=frozenset({"application/json"}),
        )
        by_instance = parse_vector(fetched.body)
    except (FetchError, QueryError) as exc:
        failure = Failure(exc.reason, exc.detail)
        return [(failure, None) for _ in targets], time.perf_counter() - started
    except Exception as exc:  # a bug costs this query one round, nothing more
        failure = Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}")
        return [(failure, None) for _ in targets], time.perf_counter() - started
    seconds = time.perf_counter() - started
    results: list[tuple[Reading | Failure, float | None]] = []
    for target in targets:
        samples = by_instance.get(target.address, [])
        try:
            results.append(read_samples(target, samples))
        except Exception as exc:  # one endpoint's bad data must not stop the others
            results.append((Failure(Reason.INTERNAL, f"{type(exc).__name__}: {exc}"), 0.0))
    return results, seconds


def read_samples(target: ScrapeTarget, samples: list[Sample]) -> tuple[Reading | Failure, float]:
    """One endpoint's samples from a query answer -> (its reading or failure, scrape time)."""
    if not samples:
        return Failure(Reason.MISSING_SERIES, f"Prometheus has no series of {target.address}"), 0
    up = [value for name, _, _, value in samples if name == "up"]
    if up and not any(value == 1 for value in up):
        return Failure(Reason.TARGET_DOWN, "up == 0 in Prometheus"), 0
    metrics = [sample for sample in samples if sample[0] not in ("up", SERVED_RATE)]
    index = SampleIndex.from_samples((name, labels, value) for name, labels, _, value in metrics)
    scraped_at = min((ts for _, _, ts, _ in metrics), default=0.0)
    result = adapt(target.engine, index, target.selector, target.model, lora=target.lora)
    if isinstance(result, Reading):
        rates = [(labels, value) for name, labels, _, value in samples if name == SERVED_RATE]
        result = dataclasses.replace(result, served_rate=_served_rate(result, rates))
    return result, scraped_at


def _served_rate(reading: Reading, rates: list[tuple[Labels, float]]) -> float | None:
    """The sum of the rate() series of the model the reading was read as (None: no series).

    The model label of the policy engine selects, as the adapter did for the instant values;
    a Triton TRT-LLM page labels its success counter with `model` like plain Triton.
    """
    engine = "triton" if reading.engine == "triton-trtllm" else reading.engine
    key = MODEL_LABEL.get(engine)
    chosen = [
        value
        for labels, value in rates
        if key is None
        or (
            labels.get(key) == reading.read_as if reading.read_as is not None else key not in labels
        )
    ]
    if not chosen or not all(math.isfinite(v) and v >= 0 for v in chosen):
        return None
    return math.fsum(chosen)
