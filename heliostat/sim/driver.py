"""Runs an :class:`~heliostat.sim.engine.Engine` against the event loop's clock.

One task per replica plans a step, sleeps for its duration and applies it, so requests really
queue behind each other. Steps are scheduled against absolute deadlines rather than chained
sleeps: ``asyncio.sleep`` overshoots by a fraction of a millisecond each time, which at
``speed=20`` would otherwise add up to a visibly slower GPU.
"""

from __future__ import annotations

import asyncio
import contextlib

from heliostat.sim.engine import Engine, EngineRequest

MAX_LAG_S = 0.05
"""How far behind its deadlines a loop may fall before it stops trying to catch up (an
overloaded event loop should make the replica slower, not make it burst)."""


class EngineDriver:
    """The engine loop task of one replica."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="heliostat-sim-engine")

    async def stop(self) -> None:
        """Cancel the loop and abort every request, so waiting handlers return.

        Everything that matters happens before the first await, so a caller cancelled while
        waiting for the task to finish still leaves the engine empty and its loop stopped.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self.engine.abort_all(self.now())
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def submit(self, req: EngineRequest) -> None:
        self.engine.submit(req, self.now())
        self._wake.set()

    def abort(self, req: EngineRequest) -> None:
        self.engine.abort(req, self.now())
        self._wake.set()  # freed blocks may let the head of the queue in

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            step = self.engine.schedule(loop.time())
            if step is None:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
                continue
            deadline = max(deadline, loop.time() - MAX_LAG_S) + step.duration
            delay = deadline - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            self.engine.complete(step, loop.time())
