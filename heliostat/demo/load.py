"""The story's traffic, sent open-loop from a background thread with the lab's load generator.

The thread owns its own event loop so the main thread stays free to stage the story and
answer Ctrl-C; `cancel` stops the requests still pending from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

from heliostat.demo.observe import RequestRecord
from heliostat.sim import loadgen

REQUEST_TIMEOUT = 30.0  # seconds a request may take before the client counts it as failed


class Load:
    def __init__(self, shots: Sequence[loadgen.Shot]) -> None:
        self.shots = list(shots)
        self.records: list[RequestRecord] = []  # appended by the load thread only
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._t0 = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[loadgen.Report] | None = None
        self._thread: threading.Thread | None = None

    def start(self, t0: float) -> None:
        """Send every shot at t0 + shot.at (t0 on the time.monotonic clock)."""
        self._t0 = t0
        self._thread = threading.Thread(target=self._main, name="demo-load", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(
                loadgen.run(self.shots, timeout=REQUEST_TIMEOUT, on_result=self._record)
            )
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        except BaseException as exc:  # reported by the runner, never lost in a thread
            self.error = exc
        finally:
            loop.close()
            self.done.set()

    def _record(self, result: loadgen.Result) -> None:
        started = result.started - self._t0
        self.records.append(
            RequestRecord(
                origin=result.shot.label,
                at=result.shot.at,
                started=started,
                ended=started + result.latency,
                ok=result.ok,
                served_in=result.replica_region,
                status=result.status,
                error=result.error,
                ttft=result.ttft,
            )
        )

    def cancel(self, wait: float = 2.0) -> None:
        """Stop sending; give the requests in flight `wait` seconds to be cancelled."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self.done.wait(wait)
