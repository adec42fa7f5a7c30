"""One simulated replica: its engine, metrics, statistics and faults, and the site serving them.

State lives here, HTTP handling in :mod:`heliostat.sim.server`; the split keeps the handlers thin
and lets tests poke a replica's state (faults, reset) without going through HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from heliostat.sim.config import ReplicaConfig, RttFn
from heliostat.sim.driver import EngineDriver
from heliostat.sim.engine import Engine
from heliostat.sim.faults import Fault, FaultKind, FaultSet
from heliostat.sim.metrics import ReplicaMetrics
from heliostat.sim.server import build_app
from heliostat.sim.stats import ReplicaStats

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 1.0
"""How long stopping waits for in-flight handlers; every waiting handler is released first, so
this only bounds a misbehaving client."""


class Replica:
    """A simulated vLLM server at ``config.address``."""

    def __init__(
        self, config: ReplicaConfig, rtt_ms: RttFn | None = None, *, fault_seed: int | None = None
    ) -> None:
        self.config = config
        self.id = config.address
        self.rtt_ms = rtt_ms
        self.faults = FaultSet(fault_seed)
        self._hang_release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.metrics, self.engines, self.drivers, self.stats = self._fresh_state()

    def _fresh_state(
        self,
    ) -> tuple[ReplicaMetrics, list[Engine], list[EngineDriver], ReplicaStats]:
        cfg = self.config
        metrics = ReplicaMetrics(
            cfg.model,
            cfg.block_size,
            cfg.num_gpu_blocks,
            engines=cfg.data_parallel_size,
            names="v0" if cfg.metric_names == "v0" else "v1",
        )
        engines = [
            Engine(cfg.engine_config(), observer=metrics.observer(index))
            for index in range(cfg.data_parallel_size)
        ]
        for engine in engines:
            engine.slowdown = self.faults.slowdown
        metrics.attach(engines)
        return metrics, engines, [EngineDriver(e) for e in engines], ReplicaStats()

    @property
    def engine(self) -> Engine:
        """The first engine core (the only one unless data-parallel)."""
        return self.engines[0]

    @property
    def driver(self) -> EngineDriver:
        """The driver of the engine the next request goes to: the least loaded, scored as
        vLLM's data-parallel balancer scores engines (waiting x 4 + running), lowest index
        first on ties."""
        if len(self.drivers) == 1:
            return self.drivers[0]
        return min(self.drivers, key=lambda d: d.engine.num_waiting * 4 + d.engine.num_running)

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.config.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the engine loop and listen on the configured address."""
        if self._runner is not None:
            return
        # handler_cancellation: a client that hangs up cancels its handler, which aborts the
        # request in the engine, as vLLM does; otherwise abandoned requests would keep
        # occupying the simulated GPU after Envoy timed them out.
        runner = web.AppRunner(
            build_app(self),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for driver in self.drivers:
            driver.start()

    async def stop(self) -> None:
        """Release hung requests, abort queued work, then close the site and its connections."""
        self._release_hung()
        for driver in self.drivers:
            await driver.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def reset(self) -> None:
        """Zero statistics and metrics, empty the queues and the prefix cache; keep faults.

        The new state is in place before the first await, so a reset whose caller goes away
        half-way still leaves a working replica.
        """
        old = self.drivers
        self.metrics, self.engines, self.drivers, self.stats = self._fresh_state()
        if self._runner is not None:
            for driver in self.drivers:
                driver.start()
        for driver in old:
            await driver.stop()

    def restart_peak(self) -> int:
        """The most requests it held at once since the last restart (engines' peaks added
        up), and the peak starts again from what it holds now."""
        return sum(engine.restart_peak() for engine in self.engines)

    # -- faults --------------------------------------------------------------------------------

    def set_fault(self, fault: Fault) -> None:
        self.faults.set(fault)
        self._apply_slowdown()
        log.info("sim_fault_set", extra={"replica": self.id, "fault": fault.to_json()})

    def clear_faults(self, kind: FaultKind | None = None) -> None:
        self.faults.clear(kind)
        self._apply_slowdown()
        if kind in (None, FaultKind.HANG, FaultKind.METRICS_HANG):
            self._release_hung()
        log.info(
            "sim_faults_healed", extra={"replica": self.id, "kind": kind.value if kind else "all"}
        )

    def _apply_slowdown(self) -> None:
        for engine in self.engines:
            engine.slowdown = self.faults.slowdown

    async def wait_hang_released(self) -> None:
        await self._hang_release.wait()

    def _release_hung(self) -> None:
        self._hang_release.set()
        self._hang_release = asyncio.Event()

    # -- network emulation ---------------------------------------------------------------------

    def rtt_seconds(self, origin_region: str | None) -> float:
        """Round trip between the caller's region and ours; 0 for local or unknown callers."""
        if not origin_region or origin_region == self.config.region or self.rtt_ms is None:
            return 0.0
        try:
            ms = float(self.rtt_ms(origin_region, self.config.region))
        except (LookupError, ValueError):
            log.warning(
                "sim_rtt_unknown",
                extra={"replica": self.id, "from": origin_region, "to": self.config.region},
            )
            return 0.0
        return max(ms, 0.0) / 1000.0

    # -- introspection -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The ``/sim/stats`` document."""
        engines = [
            {
                "waiting": eng.num_waiting,
                "running": eng.num_running,
                "kv_cache_usage": eng.pool.usage,
                "cached_blocks": eng.pool.num_cached,
                "prefix_queries": eng.prefix_queries,
                "prefix_hits": eng.prefix_hits,
                "slowdown": eng.slowdown,
                "peak_in_flight": eng.peak_in_flight,
            }
            for eng in self.engines
        ]
        total = dict(engines[0])
        if len(engines) > 1:  # the server as a whole: counts summed, KV use averaged
            # a sum of peaks: at least the peak of the sum
            keys = ("waiting", "running", "cached_blocks", "prefix_queries", "prefix_hits")
            for key in (*keys, "peak_in_flight"):
                total[key] = sum(e[key] for e in engines)
            total["kv_cache_usage"] = sum(e["kv_cache_usage"] for e in engines) / len(engines)
        return {
            "replica": self.id,
            "region": self.config.region,
            "model": self.config.model,
            "version": self.config.version,
            **self.stats.to_json(),
            "engine": total,
            "engines": engines,
            "faults": [f.to_json() for f in self.faults.active()],
        }
