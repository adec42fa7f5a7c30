"""Open-loop load against gateways: seeded Poisson arrivals, streamed requests, per-request
records. Tests, benchmarks and the demo all measure with this one generator.

Open loop on purpose: a closed loop slows down when the system does, hiding overload.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from heliostat.wire import REPLICA_ID_HEADER, REPLICA_REGION_HEADER


@dataclass(frozen=True, slots=True)
class Shot:
    """One request to send: when (seconds from the start), where, and what."""

    at: float
    url: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    label: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    shot: Shot
    status: int
    replica: str | None
    replica_region: str | None
    headers: Mapping[str, str]
    started: float
    ttft: float | None  # seconds to the first streamed byte of content
    latency: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.ok]

    def by_region(self, label: str | None = None) -> Counter[str]:
        return Counter(
            r.replica_region or f"status-{r.status}"
            for r in self.results
            if label is None or r.shot.label == label
        )

    def statuses(self, label: str | None = None) -> Counter[int]:
        return Counter(r.status for r in self.results if label is None or r.shot.label == label)


def poisson_times(
    rate: float, duration: float, rng: random.Random, start: float = 0.0
) -> list[float]:
    times: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= start + duration:
            return times
        times.append(t)


def completion_body(
    model: str, *, prompt_tokens: int = 64, max_tokens: int = 16, stream: bool = True
) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": "heliostat load",
        "prompt_tokens": prompt_tokens,
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def run(
    shots: Sequence[Shot],
    *,
    timeout: float = 30.0,
    on_result: Callable[[Result], None] | None = None,
    connector_limit: int = 512,
    prepare: Callable[[Shot], Shot] | None = None,
) -> Report:
    """Send every shot at its time (never waiting for earlier ones) and collect results.

    `prepare` rewrites a shot at send time, inside the measured time (a benchmark's in-path
    router adds the header naming its pick there, so its decision counts in the TTFT).
    """
    report = Report()
    connector = aiohttp.TCPConnector(limit=connector_limit, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        origin = time.monotonic()

        async def fire(shot: Shot) -> None:
            delay = origin + shot.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            result = await _send(session, shot, prepare)
            report.results.append(result)
            if on_result is not None:
                on_result(result)

        await asyncio.gather(*(fire(shot) for shot in sorted(shots, key=lambda s: s.at)))
    report.results.sort(key=lambda r: r.started)
    return report


def carries_token(line: bytes) -> bool:
    """Whether an SSE line brings generated text: the first such line is the first token.

    A chat stream opens with an empty assistant delta before any token is generated (vLLM
    does the same), so "the first data line" would measure the time to that, not the TTFT.
    """
    if not line.startswith(b"data: ") or b"[DONE]" in line:
        return False
    try:
        chunk = json.loads(line[6:])
    except ValueError:
        return True  # not OpenAI JSON: any payload counts
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return True
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return bool(text)


async def _send(
    session: aiohttp.ClientSession, shot: Shot, prepare: Callable[[Shot], Shot] | None = None
) -> Result:
    started = time.monotonic()
    if prepare is not None:
        shot = prepare(shot)
    ttft: float | None = None
    try:
        async with session.post(shot.url, json=dict(shot.body), headers=dict(shot.headers)) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            if resp.status == 200 and shot.body.get("stream"):
                async for line in resp.content:
                    if ttft is None and carries_token(line):
                        ttft = time.monotonic() - started
            else:
                await resp.read()
                if resp.status == 200:
                    ttft = time.monotonic() - started
            return Result(
                shot=shot,
                status=resp.status,
                replica=headers.get(REPLICA_ID_HEADER),
                replica_region=headers.get(REPLICA_REGION_HEADER),
                headers=headers,
                started=started,
                ttft=ttft,
                latency=time.monotonic() - started,
            )
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        return Result(
            shot=shot,
            status=0,
            replica=None,
            replica_region=None,
            headers={},
            started=started,
            ttft=None,
            latency=time.monotonic() - started,
            error=type(exc).__name__,
        )
