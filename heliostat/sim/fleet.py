"""Many simulated replicas in one process and one event loop.

A benchmark needs dozens of "GPUs" across regions; one process per replica would cost more in
memory and start-up than the experiment itself, and one loop keeps their clocks comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable, Iterator
from types import TracebackType

from heliostat.sim.config import ReplicaConfig, RttFn
from heliostat.sim.replica import Replica

log = logging.getLogger(__name__)


class Fleet:
    """Replicas started and stopped together; look one up by address with ``fleet[address]``."""

    def __init__(self, configs: Iterable[ReplicaConfig], rtt_ms: RttFn | None = None) -> None:
        self.replicas: dict[str, Replica] = {}
        for cfg in configs:
            if cfg.address in self.replicas:
                raise ValueError(f"two replicas configured at {cfg.address}")
            self.replicas[cfg.address] = Replica(cfg, rtt_ms)

    def __getitem__(self, address: str) -> Replica:
        return self.replicas[address]

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas.values())

    def __len__(self) -> int:
        return len(self.replicas)

    async def start(self) -> None:
        """Bring every replica up; if one cannot bind, the ones already up are stopped again."""
        try:
            for replica in self.replicas.values():
                await replica.start()
        except BaseException:
            await self.stop()
            raise
        log.info("sim fleet up: %d replicas", len(self.replicas))

    async def stop(self) -> None:
        """Stop every replica (engine loops cancelled, sites and connections closed)."""
        results = await asyncio.gather(
            *(r.stop() for r in self.replicas.values()), return_exceptions=True
        )
        for replica, result in zip(self.replicas.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.warning("sim replica %s did not stop cleanly: %r", replica.id, result)

    async def reset(self) -> None:
        await asyncio.gather(*(r.reset() for r in self.replicas.values()))

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def run_fleet(configs: Iterable[ReplicaConfig], rtt_ms: RttFn | None = None) -> None:
    """Serve a fleet until the task is cancelled or the process gets SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread may own signals; elsewhere cancellation is the way out.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    fleet = Fleet(configs, rtt_ms)
    try:
        async with fleet:
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
