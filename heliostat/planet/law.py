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

What the planet reports to the law, as `serve` gets it:

- each replica's success counter (`vllm:request_success_total`) and KV use, in the reading
  fields the signals carry (`served_total`, `kv_usage_max`): the law's service rates;
- what each region's gateways did per cluster and upstream locality since the last tick,
  as Envoy's load reporting service tells it (`GatewayLoads`), turned into the law's
  `GatewayLoad` over the last LRS_WINDOW_S as `serve`'s LRS server does (`LoadWindow`):
  each origin region's demand, measured where it arrives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from heliostat.balance import ControlState, Views, compute
from heliostat.balance.assemble import BATCH_SUFFIX
from heliostat.balance.demand import NO_GATEWAYS, GatewayLoad, OriginLoad
from heliostat.policy import Policy
from heliostat.signals.polling import EndpointState
from heliostat.signals.record import Failure, Reading, ScrapeTarget, Signal
from heliostat.wire import TENANT_SEPARATOR, VERSION_SEPARATOR

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
    # vllm:prefix_cache_hits/queries_total and vllm:request_prefill_time_seconds' sum and
    # count, where the engine plays them (the discrete engine; None: not reported).
    prefix_hits_total: float | None = None
    prefix_queries_total: float | None = None
    prefill_seconds_total: float | None = None
    prefill_requests_total: float | None = None


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
    upcoming = {
        "served_total": sample.served_total,
        "kv_usage_max": sample.kv_usage,
        "prefix_hits_total": sample.prefix_hits_total,
        "prefix_queries_total": sample.prefix_queries_total,
        "prefill_seconds_total": sample.prefill_seconds_total,
        "prefill_requests_total": sample.prefill_requests_total,
    }
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
        """The failure is recorded as serve records it, without its warning: in the planet
        a lost region fails hundreds of scrapes at once and the report says so instead.
        (Muting the signals logger here muted it for the whole process.)"""
        self._state(key).reject(Failure(reason), warn=False)

    def forget(self, keys: Iterable[Key]) -> None:
        """Endpoints that left the policy (scaled in): their records go, as in serve."""
        for key in keys:
            self._states.pop(key, None)

    def signals(self) -> dict[Key, Signal]:
        return {key: state.signal for key, state in self._states.items()}


# As `serve`'s LRS server (heliostat.xds.grpc.load_reports): rates over the reports of the last
# few seconds, and a region whose gateways fell silent this long no longer speaks for itself.
LRS_WINDOW_S = 3.0
LRS_RECENT_S = 1.0  # the newest reports, for a step in demand (`balance.demand.stepped`)
LRS_STALE_AFTER_S = 5.0


def cluster_owner(cluster: str, models: Iterable[str]) -> tuple[str, bool] | None:
    """(model, is batch) of one of heliostat's cluster names (`<model>`, `<model>.batch`, a
    tenant's or a version's subset of either), None for anything else."""
    base = cluster.partition(VERSION_SEPARATOR)[0].partition(TENANT_SEPARATOR)[0]
    known = set(models)
    if base in known:
        return base, False
    if base.endswith(BATCH_SUFFIX) and base[: -len(BATCH_SUFFIX)] in known:
        return base[: -len(BATCH_SUFFIX)], True
    return None


class LoadWindow:
    """The gateways' load reports of the last LRS_WINDOW_S, turned into the law's input
    (`GatewayLoad`) as `serve`'s LRS server turns Envoy's reports into it: per model and
    origin region, requests issued plus dropped per second, batch apart, refusals counted."""

    def __init__(self) -> None:
        self._reports: list[tuple[float, GatewayLoads]] = []
        # (origin region, cluster) -> when its gateways last reported a request for it.
        self._seen: dict[tuple[str, str], float] = {}

    def add(self, now: float, loads: GatewayLoads) -> None:
        self._reports.append((now, loads))
        for key in loads.clusters:
            self._seen[key] = now
        horizon = now - LRS_WINDOW_S
        # Keep the report that covers the horizon's start: a window is never empty.
        while len(self._reports) > 1 and self._reports[1][0] <= horizon:
            self._reports.pop(0)

    def load(self, models: Iterable[str], now: float) -> GatewayLoad:
        names = sorted(set(models))
        counts: dict[tuple[str, str], list[float]] = {}  # interactive, batch, refused, recent
        seconds = sum(loads.interval_s for _, loads in self._reports)
        if seconds <= 0.0:
            return GatewayLoad()
        latest = [loads for at, loads in self._reports if now - at < LRS_RECENT_S]
        recent_s = sum(loads.interval_s for loads in latest)
        for at, loads in self._reports:
            for (origin, cluster), load in loads.clusters.items():
                owner = cluster_owner(cluster, names)
                if owner is None:
                    continue
                model, is_batch = owner
                issued = sum(locality.issued for locality in load.localities.values())
                entry = counts.setdefault((model, origin), [0.0, 0.0, 0.0, 0.0])
                entry[1 if is_batch else 0] += issued + load.dropped
                entry[2] += load.dropped
                if now - at < LRS_RECENT_S:
                    entry[3] += issued + load.dropped
        # Envoy reports every cluster every interval, zeros included (`send_all_clusters`):
        # a quiet origin's demand is 0/s, not unknown. The planet's engines count only the
        # requests there were, so an origin heard from within LRS_STALE_AFTER_S reads 0/s
        # while its window holds none (as a silent gateway goes stale in serve).
        for (origin, cluster), last in self._seen.items():
            owner = cluster_owner(cluster, names)
            if owner is not None and now - last <= LRS_STALE_AFTER_S:
                counts.setdefault((owner[0], origin), [0.0, 0.0, 0.0, 0.0])
        origins = {
            key: OriginLoad(
                interactive=entry[0] / seconds,
                batch=entry[1] / seconds,
                refused=entry[2] / seconds,
                at=now,
                recent=entry[3] / recent_s if recent_s > 0 else None,
                recent_s=recent_s,
            )
            for key, entry in sorted(counts.items())
        }
        return GatewayLoad(origins=origins, stale_after=LRS_STALE_AFTER_S)


class ControlLaw:
    """heliostat's control law, ticked as `serve` ticks it (see the module docstring)."""

    def __init__(self) -> None:
        self.state: ControlState | None = None
        self.ticks = 0
        self.window = LoadWindow()

    def tick(
        self,
        policy: Policy,
        signals: Mapping[Key, Signal],
        now: float,
        drained: frozenset[Key],
        loads: GatewayLoads | None = None,
    ) -> Views:
        """The views for this tick; `loads` are the gateways' reports since the last one."""
        gateways = NO_GATEWAYS
        if loads is not None:
            self.window.add(now, loads)
            gateways = self.window.load((m.name for m in policy.spec.models), now)
        views, self.state = compute(policy, signals, self.state, now, drained, gateways)
        self.ticks += 1
        return views
