"""The planet's one connection to heliostat's control law, and to its signal records.

`serve` ticks the law in `ControlLoop.tick` (`heliostat/runtime/control.py`): when a scrape
round lands it calls `compute(policy, signals, previous_state, now, drained)` and publishes
the views. The planet does the same, in virtual time, through `ControlLaw.tick`: this is the
only call of `heliostat.balance.compute` in the package, so a change of its signature (the
gateways' load reports of issue 10, say) is one edit here.

Signals are kept exactly as `serve` keeps them, with the signal layer's own per-endpoint
record (`heliostat.signals.polling.EndpointState`: a scrape's reading accepted, or a failure
counted, the last good values kept): only the reading comes from a simulated replica instead
of an exposition page.

What the planet can already report, beyond what today's law reads:

- each replica's success counter (`vllm:request_success_total`) and KV use, in the reading
  fields the new signals carry (`served_total`, `kv_usage_max`) when `Reading` has them;
- what each region's gateways did per cluster and upstream locality since the last tick,
  as Envoy's load reporting service would tell it (`GatewayLoads`), handed to `tick` and
  ignored until the law takes it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from heliostat.balance import ControlState, Views, compute
from heliostat.policy import Policy
from heliostat.signals.polling import EndpointState
from heliostat.signals.record import Failure, Reading, ScrapeTarget, Signal

Key = tuple[str, str]  # (model, address), the key of signals and drains

_READING_FIELDS = frozenset(f.name for f in dataclasses.fields(Reading))
# The fields `Signal.with_reading` is known to set from a reading without prefix counters.
# While `Reading` and `Signal` have exactly these, a scrape of a whole replica group takes
# a fast path with the same result; any new field (the rate signals of issue 10) sends every
# scrape through the signal layer's own `EndpointState.accept` again.
_KNOWN_READING = frozenset(
    {
        "engine",
        "waiting",
        "running",
        "kv_usage",
        "prefix_hit_rate",
        "prefix_hits_total",
        "prefix_queries_total",
        "max_num_seqs",
        "num_gpu_blocks",
        "block_size",
    }
)
_KNOWN_SIGNAL = frozenset(
    {
        "model",
        "address",
        "engine",
        "waiting",
        "running",
        "kv_usage",
        "prefix_hit_rate",
        "max_num_seqs",
        "num_gpu_blocks",
        "block_size",
        "scraped_at",
        "error",
        "consecutive_failures",
    }
)
FAST_SCRAPES = _READING_FIELDS == _KNOWN_READING and (
    frozenset(f.name for f in dataclasses.fields(Signal)) == _KNOWN_SIGNAL
)


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """What one scrape of a simulated replica reads, in vLLM's terms."""

    waiting: float  # vllm:num_requests_waiting
    running: float  # vllm:num_requests_running
    kv_usage: float  # vllm:kv_cache_usage_perc (0-1)
    served_total: float  # vllm:request_success_total
    max_num_seqs: int
    num_gpu_blocks: int
    block_size: int


def reading_of(sample: ReplicaSample) -> Reading:
    """The reading heliostat's vLLM adapter would make of the replica's metrics page."""
    values: dict[str, object] = {
        "engine": "vllm",
        "waiting": sample.waiting,
        "running": sample.running,
        "kv_usage": sample.kv_usage,
        "max_num_seqs": sample.max_num_seqs,
        "num_gpu_blocks": sample.num_gpu_blocks,
        "block_size": sample.block_size,
    }
    # Fields of the rate-based signals (issue 10), filled as soon as `Reading` has them.
    upcoming = {"served_total": sample.served_total, "kv_usage_max": sample.kv_usage}
    values.update({k: v for k, v in upcoming.items() if k in _READING_FIELDS})
    return Reading(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class LocalityLoad:
    """One upstream locality of one cluster, as one region's gateways report it over LRS
    (`UpstreamLocalityStats`): requests issued, completed successfully, failed, and in
    progress at the end of the interval."""

    issued: float = 0.0
    successful: float = 0.0
    errors: float = 0.0
    in_progress: float = 0.0


@dataclass(frozen=True, slots=True)
class ClusterLoad:
    """One cluster of one region's gateways over an interval: per upstream locality, plus
    the requests dropped before choosing one (`drop_overloads`, circuit breakers)."""

    localities: Mapping[str, LocalityLoad] = field(default_factory=dict)
    dropped: float = 0.0


@dataclass(frozen=True, slots=True)
class GatewayLoads:
    """What every region's gateways reported since the last tick: (origin region, cluster)
    -> load. `interval_s` is the time it covers."""

    interval_s: float
    clusters: Mapping[tuple[str, str], ClusterLoad]


class Scrapes:
    """Every endpoint's signal, kept by the signal layer's own record, fed by scrapes."""

    def __init__(self) -> None:
        self._states: dict[Key, EndpointState] = {}
        # A scrape that fails logs a warning in serve; in the planet a lost region fails
        # hundreds of them at once, and the report says so instead.
        logging.getLogger("heliostat.signals.polling").setLevel(logging.ERROR)

    def _state(self, key: Key) -> EndpointState:
        state = self._states.get(key)
        if state is None:
            target = ScrapeTarget(model=key[0], address=key[1])
            state = EndpointState(target, Signal(model=key[0], address=key[1], engine="vllm"))
            self._states[key] = state
        return state

    def scraped(self, key: Key, sample: ReplicaSample, at: float) -> None:
        self._state(key).accept(reading_of(sample), at)

    def scraped_alike(
        self, members: Iterable[tuple[Key, float]], sample: ReplicaSample, at: float
    ) -> None:
        """Replicas of one group: the same reading, each with its own success counter
        (the group's plus the member's offset)."""
        reading = reading_of(sample)
        if FAST_SCRAPES:
            for key, _offset in members:
                state = self._state(key)
                state.signal = Signal(
                    key[0],
                    key[1],
                    reading.engine,
                    reading.waiting,
                    reading.running,
                    reading.kv_usage,
                    None,
                    reading.max_num_seqs,
                    reading.num_gpu_blocks,
                    reading.block_size,
                    at,
                    None,
                    0,
                )
            return
        if "served_total" not in _READING_FIELDS:
            for key, _offset in members:
                self._state(key).accept(reading, at)
            return
        for key, offset in members:
            counter = {"served_total": sample.served_total + offset}
            own = dataclasses.replace(reading, **counter)  # type: ignore[arg-type]
            self._state(key).accept(own, at)

    def scraped_each(self, samples: Iterable[tuple[Key, ReplicaSample]], at: float) -> None:
        """Several replicas, each with its own reading."""
        if not FAST_SCRAPES:
            for key, sample in samples:
                self.scraped(key, sample, at)
            return
        for key, sample in samples:
            self._state(key).signal = Signal(
                key[0],
                key[1],
                "vllm",
                sample.waiting,
                sample.running,
                sample.kv_usage,
                None,
                sample.max_num_seqs,
                sample.num_gpu_blocks,
                sample.block_size,
                at,
                None,
                0,
            )

    def failed(self, key: Key, reason: str) -> None:
        self._state(key).reject(Failure(reason))

    def forget(self, keys: Iterable[Key]) -> None:
        """Endpoints that left the policy (scaled in): their records go, as in serve."""
        for key in keys:
            self._states.pop(key, None)

    def signals(self) -> dict[Key, Signal]:
        return {key: state.signal for key, state in self._states.items()}


class ControlLaw:
    """heliostat's control law, ticked as `serve` ticks it (see the module docstring)."""

    def __init__(self) -> None:
        self.state: ControlState | None = None
        self.ticks = 0

    def tick(
        self,
        policy: Policy,
        signals: Mapping[Key, Signal],
        now: float,
        drained: frozenset[Key],
        loads: GatewayLoads | None = None,
    ) -> Views:
        """The views for this tick. `loads` (LRS) is not read by today's law."""
        del loads  # the connection point for the gateway-reported demand of issue 10
        views, self.state = compute(policy, signals, self.state, now, drained)
        self.ticks += 1
        return views
