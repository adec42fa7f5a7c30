"""A continuous-batching engine model: what makes a simulated replica slow for the right reasons.

The model is vLLM v1's scheduler reduced to what routing decisions can observe:

* a FIFO waiting queue and at most ``max_num_seqs`` running requests;
* admission needs KV blocks for the whole request (prompt plus ``max_tokens``) from a shared
  :class:`~heliostat.sim.kvcache.BlockPool`; when the head of the queue does not fit, everyone
  behind it waits too (head-of-line, as vLLM's FCFS policy does), so KV pressure shows up as
  queueing. Reserving the output up front replaces vLLM's preemption with something simpler that
  still makes long outputs expensive;
* cached prompt blocks are not prefilled again; the rest is prefilled in chunks under a per-step
  token budget (``max_num_batched_tokens``) that decoding sequences share, so a long prefill
  slows everybody's decode a little rather than stalling it;
* one step costs ``base_step_ms + per_seq_ms * decoding + per_ctx_ktoken_ms * ctx/1000 +
  prefill_ms_per_token * prefill_tokens``, divided by ``speed`` and multiplied by ``slowdown``.

The engine is pure: it never sleeps or reads a clock. :meth:`Engine.schedule` plans a step and
says how long it takes; the caller lets that time pass (really, in
:mod:`heliostat.sim.driver`, or virtually, in :func:`simulate`) and then calls
:meth:`Engine.complete`, so tests can check queueing theory without waiting for it.

Default timings approximate a 70B-class model (Llama-3-70B, FP8 weights) on one H100-80GB:

=========================  ========  ==================================================
knob                       default   why
=========================  ========  ==================================================
``base_step_ms``           25.0      a forward pass streams ~70 GB of weights at ~3 TB/s
``per_seq_ms``             0.5       per-sequence sampling and MLP work in a decode step
``per_ctx_ktoken_ms``      0.1       attention reads ~320 KB of KV per context token
``prefill_ms_per_token``   0.25      ~4,000 prompt tokens/s of prefill compute
``max_num_batched_tokens`` 8192      vLLM's chunked-prefill budget per step
``max_num_seqs``           16        running slots (vLLM's own default is 256; 16 makes
                                     queueing appear at benchmark-sized loads)
``num_gpu_blocks``         2048      x 16 tokens = 32,768 tokens of KV (~10 GB FP16)
``block_size``             16        vLLM's default
=========================  ========  ==================================================

So a lone 1,000-token prompt sees a TTFT of about 275 ms and then ~26 ms per token; at
``speed=20`` that is ~14 ms and ~1.3 ms, quick enough for tests.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from heliostat.sim.kvcache import BlockPool
from heliostat.sim.tokens import block_hashes


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Capacity and timing knobs of one simulated GPU replica (see the module docstring)."""

    max_num_seqs: int = 16
    num_gpu_blocks: int = 2048
    block_size: int = 16
    speed: float = 1.0
    max_num_batched_tokens: int = 8192
    base_step_ms: float = 25.0
    per_seq_ms: float = 0.5
    per_ctx_ktoken_ms: float = 0.1
    prefill_ms_per_token: float = 0.25

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "num_gpu_blocks", "block_size", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.speed > 0:
            raise ValueError("speed must be > 0")
        for name in ("base_step_ms", "per_seq_ms", "per_ctx_ktoken_ms", "prefill_ms_per_token"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def step_seconds(
        self, decoding: int, prefill_tokens: int, context_tokens: int = 0, slowdown: float = 1.0
    ) -> float:
        """Wall time of one engine step, after ``speed`` and any fault ``slowdown``."""
        ms = (
            self.base_step_ms
            + self.per_seq_ms * decoding
            + self.per_ctx_ktoken_ms * context_tokens / 1000.0
            + self.prefill_ms_per_token * prefill_tokens
        )
        return ms * slowdown / self.speed / 1000.0


class RequestTooLarge(ValueError):
    """The request needs more KV blocks than the whole pool holds, so it could never run."""


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


class EventKind(enum.Enum):
    TOKEN = "token"
    FINISH = "finish"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """What a listener hears: token ``index`` was produced, or the request ended, at ``time``."""

    kind: EventKind
    time: float
    index: int = -1


Listener = Callable[[RequestEvent], None]

_ids = itertools.count(1)


@dataclass(eq=False)
class EngineRequest:
    """One generation request and its progress through the engine."""

    prompt: Sequence[int]
    max_tokens: int
    listener: Listener | None = None
    request_id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.WAITING
    arrival_time: float = 0.0
    admit_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    num_cached_tokens: int = 0
    num_computed_tokens: int = 0
    num_generated: int = 0
    blocks: tuple[int, ...] = ()
    hashes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.prompt) < 1:
            raise ValueError("prompt must have at least one token")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def prefilled(self) -> bool:
        return self.num_computed_tokens >= self.prompt_len

    @property
    def prefill_time(self) -> float | None:
        """Seconds from its admission to its first token (vLLM's request_prefill_time:
        scheduled to first token), None before both."""
        if self.first_token_time is None or self.admit_time is None:
            return None
        return self.first_token_time - self.admit_time

    @property
    def ttft(self) -> float | None:
        """Arrival to first token, in the caller's time unit."""
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.arrival_time

    @property
    def e2e(self) -> float | None:
        if self.finish_time is None:
            return None
        return self.finish_time - self.arrival_time

    def _emit(self, kind: EventKind, time: float, index: int = -1) -> None:
        if self.listener is not None:
            self.listener(RequestEvent(kind, time, index))


class EngineObserver:
    """Hooks for metrics and statistics; the default does nothing."""

    def on_admit(self, req: EngineRequest) -> None:
        """The request got its blocks; ``num_cached_tokens`` is known now."""

    def on_first_token(self, req: EngineRequest) -> None:
        """Prefill finished and produced the first token."""

    def on_finish(self, req: EngineRequest) -> None:
        """All ``max_tokens`` were generated."""


@dataclass(frozen=True, slots=True)
class Step:
    """A planned batch: who decodes, who prefills how much, and how long it takes."""

    decode: tuple[EngineRequest, ...]
    prefill: tuple[tuple[EngineRequest, int], ...]
    duration: float

    @property
    def batch_size(self) -> int:
        return len(self.decode) + len(self.prefill)


class Engine:
    """Scheduler, block pool and prefix cache of one replica, driven step by step."""

    def __init__(self, config: EngineConfig, observer: EngineObserver | None = None) -> None:
        self.config = config
        self.observer = observer or EngineObserver()
        self.pool = BlockPool(config.num_gpu_blocks, config.block_size)
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.slowdown = 1.0
        """Extra factor on step time (the ``slow`` fault)."""
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.peak_in_flight = 0
        """The most requests it held at once (waiting and running), since `restart_peak`."""
        # vllm:request_prefill_time_seconds' sum and count (requests past their prefill).
        self.prefill_seconds = 0.0
        self.prefilled = 0

    # -- queries -------------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def blocks_needed(self, prompt_len: int, max_tokens: int) -> int:
        return -(-(prompt_len + max_tokens) // self.config.block_size)

    # -- lifecycle -----------------------------------------------------------------------------

    def submit(self, req: EngineRequest, now: float) -> None:
        """Queue a request; raises :class:`RequestTooLarge` if it can never fit."""
        if self.blocks_needed(req.prompt_len, req.max_tokens) > self.config.num_gpu_blocks:
            raise RequestTooLarge(
                f"request needs {req.prompt_len + req.max_tokens} tokens of KV cache, "
                f"the replica has {self.config.num_gpu_blocks * self.config.block_size}"
            )
        req.arrival_time = now
        req.status = Status.WAITING
        req.hashes = block_hashes(req.prompt, self.config.block_size)
        self.waiting.append(req)
        # Only a submit adds a request: the peak is seen here.
        self.peak_in_flight = max(self.peak_in_flight, len(self.waiting) + len(self.running))

    def restart_peak(self) -> int:
        """The peak held so far; from now on the peak is what it holds now and after."""
        peak = self.peak_in_flight
        self.peak_in_flight = len(self.waiting) + len(self.running)
        return peak

    def abort(self, req: EngineRequest, now: float) -> None:
        """Drop a request wherever it is (client went away, or a reset), freeing its blocks."""
        if req.status is Status.WAITING:
            self.waiting.remove(req)
        elif req.status is Status.RUNNING:
            self.running.remove(req)
            self.pool.free(req.blocks)
            req.blocks = ()
        else:
            return
        req.status = Status.ABORTED
        req.finish_time = now
        req._emit(EventKind.ABORT, now)

    def abort_all(self, now: float) -> None:
        for req in [*self.running, *self.waiting]:
            self.abort(req, now)

    def _admit(self, now: float) -> None:
        bs = self.config.block_size
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            req = self.waiting[0]
            # Leave at least one prompt token to compute: the last position's logits are needed.
            max_hits = (req.prompt_len - 1) // bs
            alloc = self.pool.allocate(
                req.hashes, self.blocks_needed(req.prompt_len, req.max_tokens), max_hits
            )
            if alloc is None:
                return  # head-of-line: nobody overtakes the request that does not fit
            self.waiting.popleft()
            req.blocks = alloc.blocks
            req.num_cached_tokens = alloc.hit_blocks * bs
            req.num_computed_tokens = req.num_cached_tokens
            req.status = Status.RUNNING
            req.admit_time = now
            self.prefix_queries += req.prompt_len
            self.prefix_hits += req.num_cached_tokens
            self.running.append(req)
            self.observer.on_admit(req)

    def schedule(self, now: float) -> Step | None:
        """Admit what fits and plan the next step; None when there is nothing to run."""
        self._admit(now)
        decode = tuple(r for r in self.running if r.prefilled)
        budget = self.config.max_num_batched_tokens - len(decode)
        prefill: list[tuple[EngineRequest, int]] = []
        for req in self.running:
            if budget <= 0:
                break
            if not req.prefilled:
                chunk = min(req.prompt_len - req.num_computed_tokens, budget)
                prefill.append((req, chunk))
                budget -= chunk
        if not decode and not prefill:
            return None
        context = sum(r.prompt_len + r.num_generated for r in decode)
        duration = self.config.step_seconds(
            len(decode), sum(c for _, c in prefill), context, self.slowdown
        )
        return Step(decode=decode, prefill=tuple(prefill), duration=duration)

    def complete(self, step: Step, now: float) -> None:
        """Apply a step's results at time ``now``: tokens, first tokens, finished requests."""
        for req in step.decode:
            if req.status is Status.RUNNING:
                self._produce(req, now)
        for req, chunk in step.prefill:
            if req.status is not Status.RUNNING:
                continue
            req.num_computed_tokens += chunk
            if req.prefilled:
                full = req.prompt_len // self.config.block_size
                self.pool.commit(req.blocks[:full], req.hashes[:full])
                req.first_token_time = now
                if req.admit_time is not None:
                    self.prefill_seconds += now - req.admit_time
                    self.prefilled += 1
                self.observer.on_first_token(req)
                self._produce(req, now)

    def _produce(self, req: EngineRequest, now: float) -> None:
        index = req.num_generated
        req.num_generated += 1
        req._emit(EventKind.TOKEN, now, index)
        if req.num_generated >= req.max_tokens:
            self.running.remove(req)
            self.pool.free(req.blocks)
            req.blocks = ()
            req.status = Status.FINISHED
            req.finish_time = now
            self.observer.on_finish(req)
            req._emit(EventKind.FINISH, now)


def simulate(
    engine: Engine,
    arrivals: Iterable[tuple[float, EngineRequest]],
    *,
    until: float | None = None,
    on_step: Callable[[float, Engine], None] | None = None,
) -> float:
    """Run the engine in virtual time over ``(arrival_time, request)`` pairs; returns the end time.

    Requests are submitted when the virtual clock reaches their arrival time (arrivals during a
    step wait for the next one, as on a real server). ``on_step`` sees the engine after every step,
    which is how tests watch the queue grow and drain. Stops when all work is done or at ``until``.
    """
    pending: list[tuple[float, int, EngineRequest]] = [
        (t, i, r) for i, (t, r) in enumerate(arrivals)
    ]
    heapq.heapify(pending)
    now = 0.0
    while pending or engine.has_work():
        if until is not None and now >= until:
            break
        while pending and pending[0][0] <= now:
            t, _, req = heapq.heappop(pending)
            engine.submit(req, t)
        step = engine.schedule(now)
        if step is None:
            if not pending:
                break
            now = pending[0][0]
            continue
        now += step.duration
        engine.complete(step, now)
        if on_step is not None:
            on_step(now, engine)
    return now
