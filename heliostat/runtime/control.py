"""The control loop: new signals in, recomputed views out, published to every node group.

It holds the only mutable state the control law needs between ticks (`ControlState`), and it
ticks when a scrape round lands, so a change at a replica reaches Envoy one compute later
rather than up to a whole interval later. Ticks on new rounds are spaced at least half an
interval apart, so several sources finishing together are taken in one tick.

Only a tick that took a new round counts for that spacing. A tick with no new round (the
fallback below, a drain, a policy change) must not hold back the round that lands after it:
the fallback used to fire one interval after the last tick, which is where the next round
lands give or take its scrape's jitter, so it often ran just before that round, and the
round's tick then waited half an interval (the convergence benchmark's slow tail: +250 ms
at a 0.5 s interval in one sample out of eight). The fallback itself, which makes the law
notice stale signals when no round lands at all, now waits until a round is half an
interval overdue, so rounds that land on time are never preceded by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

from heliostat.balance import ControlState, Views, compute, describe
from heliostat.balance.demand import NO_GATEWAYS, GatewayLoad
from heliostat.policy import Policy
from heliostat.runtime import heap
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.runtime.supervise import describe_failure
from heliostat.signals import Signal
from heliostat.xds.resources.nodes import NodeGroup

log = structlog.get_logger("heliostat.control")

SignalsView = Callable[[], Mapping[tuple[str, str], Signal]]
GatewaysView = Callable[[Policy, float], GatewayLoad]

# Without a round for this many intervals, tick anyway (a round half an interval late is
# overdue; one merely slower than the last is not).
OVERDUE_INTERVALS = 1.5


class ControlLoop:
    def __init__(
        self,
        publisher: Publisher,
        signals: SignalsView,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        gateways: GatewaysView = lambda _policy, _now: NO_GATEWAYS,
    ) -> None:
        self._publisher = publisher  # holds the current policy: nobody else does
        self._signals = signals
        self._gateways = gateways
        self._clock = clock
        self._state: ControlState | None = None
        self._operator_drains: frozenset[tuple[str, str]] = frozenset()
        self._drained_now = self.drained
        self._wake = asyncio.Event()
        self._fresh = False  # a round landed since the last tick
        self._last_fresh_tick = 0.0  # when a tick last took a new round (monotonic)
        self._last_tick = 0.0
        self._oldest = heap.OldestGeneration()
        self.ticks = 0
        # Called with the new state after every tick (the journal turns changes into events).
        self.on_tick: Callable[[ControlState], None] | None = None
        # Called with the node groups whose snapshot changed (convergence tracking).
        self.on_publish: Callable[[list[NodeGroup]], None] | None = None
        self._compute_seconds = Histogram(
            "heliostat_control_compute_seconds",
            "Control law plus translation per tick.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self._last_failure: str | None = None
        self._tick_failures = Counter(
            "heliostat_control_tick_failures_total",
            "Control ticks that raised; the last views stay published.",
            registry=registry,
        )
        self._pushes = Counter(
            "heliostat_control_pushes_total",
            "Node groups whose snapshot changed after a tick.",
            registry=registry,
        )

    @property
    def interval(self) -> float:
        return min(m.signals.interval for m in self.policy.spec.models)

    @property
    def views(self) -> Views:
        return self._publisher.inputs.views

    @property
    def policy(self) -> Policy:
        """The policy in force: the one last published."""
        return self._publisher.inputs.policy

    @property
    def state(self) -> ControlState | None:
        """The control law's state after the last tick (None before the first)."""
        return self._state

    def set_policy(self, policy: Policy) -> list[str]:
        """Put a policy in force: computed with and published at once."""
        self._drained_now = self._drained_by(policy)
        return self.tick(policy)

    @property
    def drained(self) -> frozenset[tuple[str, str]]:
        """(model, address) pairs taken out of rotation, by the policy or by an operator."""
        return self._drained_by(self.policy)

    def _drained_by(self, policy: Policy) -> frozenset[tuple[str, str]]:
        from_policy = {(m.name, a) for m in policy.spec.models for a in m.drained()}
        return self._operator_drains | from_policy

    def drain(self, pairs: frozenset[tuple[str, str]], *, drained: bool) -> list[str]:
        """An operator drains (or returns) endpoints; applied at once, not at the next tick."""
        if drained:
            self._operator_drains |= pairs
        else:
            self._operator_drains -= pairs
        self._drained_now = self.drained
        return self.tick()

    def signals_landed(self, _model: str = "") -> None:
        """The signal sources' on_update hook: ask for a tick soon."""
        self._fresh = True
        self._wake.set()

    def tick(self, policy: Policy | None = None) -> list[str]:
        """Compute views under `policy` (the one in force when None) and publish both."""
        started = time.perf_counter()
        now = self._clock()
        if self._fresh:  # this tick takes the round(s) landed since the last one
            self._fresh = False
            self._last_fresh_tick = time.monotonic()
        if policy is None:
            policy = self.policy
        with heap.ticking():  # what a tick leaves alive is not walked (`heap`)
            views, self._state = compute(
                policy,
                self._signals(),
                self._state,
                now,
                self._drained_now,
                self._gateways(policy, now),
            )
            changed = self._publisher.publish(Inputs(policy, views))
        if changed and self.on_publish is not None:
            self.on_publish(changed)
        self._compute_seconds.observe(time.perf_counter() - started)
        self._pushes.inc(len(changed))
        self.ticks += 1
        self._last_tick = time.monotonic()
        if self.on_tick is not None:
            self.on_tick(self._state)
        if changed:
            log.debug("views_published", groups=[g.key for g in changed], tick=self.ticks)
        return [g.key for g in changed]

    def preview(self, policy: Policy) -> tuple[Views, Views]:
        """The views the current policy and `policy` give now, from the same signals and
        state, so what differs between them is the policy change alone (`heliostat diff`).
        Nothing is published."""
        now = self._clock()
        signals = self._signals()
        current, _ = compute(
            self.policy,
            signals,
            self._state,
            now,
            self._drained_now,
            self._gateways(self.policy, now),
        )
        drained = self._drained_by(policy)
        proposed, _ = compute(
            policy, signals, self._state, now, drained, self._gateways(policy, now)
        )
        return current, proposed

    def describe(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "drained": sorted(f"{m}/{a}" for m, a in self._drained_now),
            "interval_s": self.interval,
            "decisions": describe(self._state) if self._state is not None else {},
        }

    async def run(self) -> None:
        attempted = time.monotonic()  # the last tick this loop ran, whether it failed or not
        while True:
            interval = self.interval
            # No round landed for a round and a half: tick anyway, so staleness is noticed.
            since = max(attempted, self._last_tick)
            overdue = since + OVERDUE_INTERVALS * interval - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(overdue, 0.0))
            woken = self._wake.is_set()
            self._wake.clear()
            if woken and not self._fresh:
                continue  # a drain or a policy change already ticked on that round
            if self._fresh:  # rounds landing together are taken in one tick
                spacing = interval / 2 - (time.monotonic() - self._last_fresh_tick)
                if spacing > 0:
                    await asyncio.sleep(spacing)
            attempted = time.monotonic()
            try:
                self.tick()
            except Exception as exc:  # one bad tick must not stop the loop
                self._tick_failed(exc)
            else:
                self._last_failure = None
            self._oldest.tend()  # between ticks: a full collection when one is overdue

    def _tick_failed(self, exc: Exception) -> None:
        """Counted every time, logged once per cause: a tick that fails the same way on
        every interval would otherwise print its traceback every second."""
        self._tick_failures.inc()
        cause = describe_failure(exc)
        if cause != self._last_failure:
            self._last_failure = cause
            log.error("control_tick_failed", cause=cause, detail="keeping the last views")
