"""The anchor: llm-d's endpoint picker defaults, re-implemented from their documented behaviour.

The Gateway API Inference Extension's endpoint picker (EPP), as llm-d ships it, picks one
endpoint per request in the request path (Envoy ext_proc). Its documented default scheduling
profile (REFERENCE.md section 4, and the project's docs) is three scorers and a max-score
picker:

- queue scorer, weight 2: each candidate's waiting requests (`vllm:num_requests_waiting`),
  min-max normalised over the candidates, so the shortest queue scores 1 and the longest 0
  (all equal: all 1);
- KV-cache-utilisation scorer, weight 2: `1 - vllm:kv_cache_usage_perc`;
- prefix-cache scorer, weight 3 (the approximate one): the prompt is cut into blocks of 64
  characters, chained hashes of the first 256 blocks are looked up in an LRU index of the
  blocks recently routed to each endpoint, and the score is the share of the prompt's blocks
  matched from its start; the chosen endpoint's index then records the prompt's blocks;
- max-score picker: the highest weighted sum wins; ties at random (here: ties go to the
  nearer region first, then at random, since the candidates span regions).

Metrics come from scraping every replica's `/metrics` every 50 ms (heliostat's own vLLM
adapter reads them). Metrics older than 200 ms count as saturated: that endpoint's queue and
KV scores are 0, as for a full replica. The saturation detector itself (queue/5, kv/0.8)
gates admission of sheddable requests in llm-d; every request here is interactive, so it never
sheds, and it is only reported.

Two things are adapted to a multi-region fleet, and both are stated in the result:
- candidates: the endpoints of the gateway's own region and of the regions within the model's
  network budget (the same set heliostat may use). The scorers do not see RTT, as the anchor
  does not; only exact ties prefer the nearer region;
- the LRU index holds as many 64-character blocks per endpoint as the simulated replica's KV
  pool holds characters of prompt (the documented default, 31,250, sizes a real GPU).

Never copied from any implementation: written from the documented behaviour only.

The picker runs inside the load generator's event loop: `prepare` scores and adds the header
naming the endpoint to the request at send time, inside the client's measured time, so the
decision's cost is in the TTFT. The ext_proc round trip a real EPP adds (~3 ms, REFERENCE.md)
is not charged: this is generous to the anchor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from heliostat.signals.adapters import read_exposition
from heliostat.signals.http import EXPOSITION_ACCEPT, TEXT_TYPES, FetchError, fetch, new_session
from heliostat.signals.record import Reading
from heliostat.sim.loadgen import Shot

QUEUE_WEIGHT = 2.0
KV_WEIGHT = 2.0
PREFIX_WEIGHT = 3.0
HASH_BLOCK_CHARS = 64
MAX_PREFIX_BLOCKS = 256
DEFAULT_LRU_BLOCKS = 31_250
REFRESH_S = 0.05
STALE_AFTER_S = 0.2
SATURATION_QUEUE = 5.0
SATURATION_KV = 0.8
SCRAPE_TIMEOUT_S = 0.2
PICKED_ENDPOINT_HEADER = "x-gateway-destination-endpoint"

_ROOT = 0x11D0_E9C4


def prompt_text(body: Mapping[str, Any]) -> str:
    """What the picker hashes: the completion prompt, or the chat messages in order."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        if isinstance(message, Mapping):
            content = message.get("content")
            parts.append(f"{message.get('role', '')}:{content if isinstance(content, str) else ''}")
    return "\n".join(parts)


def block_hashes(
    text: str, block_chars: int = HASH_BLOCK_CHARS, max_blocks: int = MAX_PREFIX_BLOCKS
) -> list[int]:
    """Chained hashes of the text's full blocks: block i's hash stands for the text up to it."""
    hashes: list[int] = []
    parent = _ROOT
    for start in range(0, min(len(text), block_chars * max_blocks) - block_chars + 1, block_chars):
        parent = hash((parent, text[start : start + block_chars]))
        hashes.append(parent)
    return hashes


class PrefixIndex:
    """Which prompt blocks were recently routed to which endpoint, LRU-bounded per endpoint."""

    def __init__(self, capacity_per_endpoint: int) -> None:
        if capacity_per_endpoint < 1:
            raise ValueError("capacity_per_endpoint must be >= 1")
        self.capacity = capacity_per_endpoint
        self._blocks: dict[str, OrderedDict[int, None]] = {}

    def matched(self, endpoint: str, hashes: Sequence[int]) -> int:
        """Blocks of `hashes` found for `endpoint` from the start; the first miss ends it."""
        known = self._blocks.get(endpoint)
        if not known:
            return 0
        count = 0
        for h in hashes:
            if h not in known:
                break
            count += 1
        return count

    def record(self, endpoint: str, hashes: Sequence[int]) -> None:
        """The request went to `endpoint`: its blocks are now the most recently used there."""
        known = self._blocks.setdefault(endpoint, OrderedDict())
        for h in hashes:
            known[h] = None
            known.move_to_end(h)
        while len(known) > self.capacity:
            known.popitem(last=False)

    def size(self, endpoint: str) -> int:
        return len(self._blocks.get(endpoint, ()))


@dataclass(frozen=True, slots=True)
class Metrics:
    """One endpoint's last scrape, and when it landed (monotonic seconds)."""

    waiting: float
    kv_usage: float
    at: float


@dataclass(frozen=True, slots=True)
class Candidate:
    address: str
    region: str
    rtt_ms: float


def is_stale(metrics: Metrics | None, now: float) -> bool:
    return metrics is None or now - metrics.at > STALE_AFTER_S


def saturated(metrics: Metrics | None, now: float) -> bool:
    """llm-d's saturation detector: stale metrics, or max(queue/5, kv/0.8) >= 1."""
    if metrics is None or is_stale(metrics, now):
        return True
    return max(metrics.waiting / SATURATION_QUEUE, metrics.kv_usage / SATURATION_KV) >= 1.0


def scores(
    candidates: Sequence[Candidate],
    metrics: Mapping[str, Metrics | None],
    prefix_share: Mapping[str, float],
    now: float,
) -> dict[str, float]:
    """The weighted sum of the three scorers per candidate address."""
    fresh = {
        c.address: m
        for c in candidates
        if (m := metrics.get(c.address)) is not None and not is_stale(m, now)
    }
    queues = [m.waiting for m in fresh.values()]
    low, high = (min(queues), max(queues)) if queues else (0.0, 0.0)
    result: dict[str, float] = {}
    for c in candidates:
        m = fresh.get(c.address)
        if m is None:  # stale or never scraped: saturated, scores as a full replica
            queue_score = kv_score = 0.0
        else:
            queue_score = 1.0 if high == low else (high - m.waiting) / (high - low)
            kv_score = 1.0 - min(1.0, max(0.0, m.kv_usage))
        result[c.address] = (
            QUEUE_WEIGHT * queue_score
            + KV_WEIGHT * kv_score
            + PREFIX_WEIGHT * prefix_share.get(c.address, 0.0)
        )
    return result


def choose(candidates: Sequence[Candidate], scored: Mapping[str, float], rng: random.Random) -> str:
    """Max score; ties go to the nearer region, then at random."""
    best = max(scored[c.address] for c in candidates)
    tied = [c for c in candidates if best - scored[c.address] <= 1e-9]
    nearest = min(c.rtt_ms for c in tied)
    return rng.choice([c.address for c in tied if c.rtt_ms == nearest])


@dataclass
class PickerStats:
    decisions: int = 0
    decision_s: list[float] = dataclasses.field(default_factory=list)
    candidates_seen: int = 0
    stale_candidates: int = 0
    all_saturated: int = 0
    scrapes: int = 0
    scrape_errors: int = 0


class Picker:
    """The per-request picker: scrape loop, prefix index, scoring, and the send-time hook."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        candidate_regions: Callable[[str], Sequence[str]],
        rtt_ms: Callable[[str, str], float],
        *,
        model: str,
        lru_blocks: int = DEFAULT_LRU_BLOCKS,
        seed: int = 1,
        origins: Sequence[str] = (),
    ) -> None:
        """`origins`: the regions requests come from (default: the endpoints' regions); an
        edge region, with users and no endpoints, is one."""
        self.endpoints = dict(endpoints)  # address -> region
        self.model = model
        self.index = PrefixIndex(lru_blocks)
        self.metrics: dict[str, Metrics | None] = dict.fromkeys(self.endpoints)
        self.stats = PickerStats()
        self._rng = random.Random(seed)
        self._candidates = {
            origin: [
                Candidate(address, region, rtt_ms(origin, region))
                for region in candidate_regions(origin)
                for address, r in self.endpoints.items()
                if r == region
            ]
            for origin in {*self.endpoints.values(), *origins}
        }
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- deciding ---------------------------------------------------------------------------

    def pick(self, body: Mapping[str, Any], origin: str) -> str:
        candidates = self._candidates[origin]
        now = time.monotonic()
        hashes = block_hashes(prompt_text(body))
        share = {
            c.address: self.index.matched(c.address, hashes) / len(hashes) if hashes else 0.0
            for c in candidates
        }
        scored = scores(candidates, self.metrics, share, now)
        chosen = choose(candidates, scored, self._rng)
        self.index.record(chosen, hashes)
        self.stats.decisions += 1
        stale = sum(1 for c in candidates if is_stale(self.metrics[c.address], now))
        self.stats.stale_candidates += stale
        self.stats.candidates_seen += len(candidates)
        if all(saturated(self.metrics[c.address], now) for c in candidates):
            self.stats.all_saturated += 1
        return chosen

    def prepare(self, shot: Shot) -> Shot:
        """loadgen's send-time hook: decide, and name the endpoint in a header."""
        began = time.perf_counter()
        chosen = self.pick(shot.body, shot.label)
        self.stats.decision_s.append(time.perf_counter() - began)
        return dataclasses.replace(shot, headers={**shot.headers, PICKED_ENDPOINT_HEADER: chosen})

    # -- scraping ---------------------------------------------------------------------------

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Start scraping; return once every endpoint has fresh metrics."""
        self._session = new_session()
        self._task = asyncio.create_task(self._scrape_forever(), name="picker-scrape")
        deadline = time.monotonic() + ready_timeout
        while any(is_stale(m, time.monotonic()) for m in self.metrics.values()):
            if time.monotonic() > deadline:
                missing = [a for a, m in self.metrics.items() if m is None]
                raise RuntimeError(f"picker: no metrics from {missing} within {ready_timeout}s")
            await asyncio.sleep(REFRESH_S)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _scrape_forever(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            await asyncio.gather(*(self._scrape(a) for a in self.endpoints))
            deadline = max(deadline + REFRESH_S, loop.time())
            await asyncio.sleep(deadline - loop.time())

    async def _scrape(self, address: str) -> None:
        assert self._session is not None
        self.stats.scrapes += 1
        try:
            fetched = await fetch(
                self._session,
                f"http://{address}/metrics",
                timeout=SCRAPE_TIMEOUT_S,
                max_bytes=1 << 20,
                accept=EXPOSITION_ACCEPT,
                content_types=TEXT_TYPES,
            )
        except FetchError:
            self.stats.scrape_errors += 1
            return
        reading = read_exposition(fetched.body.decode(errors="replace"), "vllm", self.model)
        if not isinstance(reading, Reading) or reading.waiting is None:
            self.stats.scrape_errors += 1
            return
        self.metrics[address] = Metrics(
            waiting=reading.waiting, kv_usage=reading.kv_usage or 0.0, at=time.monotonic()
        )

    def describe_stats(self) -> dict[str, Any]:
        decisions = sorted(self.stats.decision_s)
        n = len(decisions)
        return {
            "decisions": self.stats.decisions,
            "decision_ms_mean": round(1000 * sum(decisions) / n, 3) if n else 0.0,
            "decision_ms_p99": round(1000 * decisions[min(n - 1, int(0.99 * n))], 3) if n else 0.0,
            "stale_candidate_share": round(
                self.stats.stale_candidates / max(1, self.stats.candidates_seen), 4
            ),
            "all_candidates_saturated": self.stats.all_saturated,
            "scrapes": self.stats.scrapes,
            "scrape_errors": self.stats.scrape_errors,
        }


def describe() -> dict[str, Any]:
    """The picker's parameters for the result's "setup" key."""
    return {
        "scorers": {
            "queue": QUEUE_WEIGHT,
            "kv_cache_utilization": KV_WEIGHT,
            "prefix": PREFIX_WEIGHT,
        },
        "hash_block_chars": HASH_BLOCK_CHARS,
        "max_prefix_blocks": MAX_PREFIX_BLOCKS,
        "refresh_ms": REFRESH_S * 1000,
        "stale_after_ms": STALE_AFTER_S * 1000,
        "saturation": {"queue": SATURATION_QUEUE, "kv": SATURATION_KV},
        "candidates": "own region + regions within the network budget; ties to the nearer",
        "route": f"header {PICKED_ENDPOINT_HEADER} -> per-endpoint cluster (cluster_header)",
        "ext_proc_round_trip_charged": False,
    }
