"""Supervision of the long-lived tasks of `heliostat serve`.

A control plane whose policy watcher or scraper dies quietly keeps answering Envoys with a
frozen view of the world while it looks healthy. So every long-lived task runs under a
`Supervisor`: when one fails, the failure is logged once with its cause and where it was
raised, counted in `heliostat_task_failures_total{task}`, and the task is started again after
a backoff that grows while it keeps failing. A task that fails too often in a short time, or
one that cannot be restarted at all (a server whose socket is gone), is unrecoverable: the
supervisor raises `Unrecoverable` and `serve` exits non-zero, so the process manager
(systemd, Kubernetes) restarts the whole process; the Envoys keep serving their last
configuration meanwhile. `/readyz` follows the tasks: not ready while one is waiting to
restart, naming it and its cause.

A long-lived task that *returns* is a failure too: it was meant to run until cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

log = structlog.get_logger("heliostat.supervise")


class Unrecoverable(Exception):
    """A supervised task cannot go on; the message is one line for the operator."""


@dataclass(frozen=True)
class Backoff:
    """How a failing task is restarted.

    The first restart is quick (a transient error should cost little), later ones wait up to
    `max_s` so a task that fails at once does not spin. `give_up_after` failures within
    `window_s` mean restarting does not help: the process exits and is restarted whole.
    """

    first_s: float = 0.25
    max_s: float = 10.0
    factor: float = 2.0
    give_up_after: int = 5
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if not (0 < self.first_s <= self.max_s) or self.factor < 1:
            raise ValueError("backoff needs 0 < first_s <= max_s and factor >= 1")
        if self.give_up_after < 1 or self.window_s <= 0:
            raise ValueError("backoff needs give_up_after >= 1 and window_s > 0")

    def delay(self, recent_failures: int) -> float:
        """The wait before the restart that follows the `recent_failures`-th failure."""
        return min(self.max_s, self.first_s * self.factor ** max(0, recent_failures - 1))


class TaskState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class TaskHealth:
    """What /readyz and /debug/state know about one supervised task."""

    name: str
    state: TaskState = TaskState.RUNNING
    failures: int = 0
    restarts: int = 0
    last_cause: str | None = None
    recent: collections.deque[float] = field(default_factory=collections.deque)


@dataclass(frozen=True)
class _Spec:
    name: str
    start: Callable[[], Awaitable[None]]
    restart: bool


class Supervisor:
    """Runs named tasks, restarts the ones that fail, and gives up on the hopeless ones."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._specs: list[_Spec] = []
        self.health: dict[str, TaskHealth] = {}
        self._failures = Counter(
            "heliostat_task_failures_total",
            "Failures of a long-lived task of serve (each logged once with its cause).",
            ["task"],
            registry=registry,
        )
        self._restarts = Counter(
            "heliostat_task_restarts_total",
            "Restarts of a long-lived task after a failure.",
            ["task"],
            registry=registry,
        )
        self._up = Gauge(
            "heliostat_task_up",
            "1 while a long-lived task runs, 0 while it waits to restart or has failed.",
            ["task"],
            registry=registry,
        )

    def add(self, name: str, start: Callable[[], Awaitable[None]], *, restart: bool = True) -> None:
        """Supervise `start()`; `restart=False` for a task whose failure cannot be undone
        in this process (its failure makes `run` raise `Unrecoverable`)."""
        if name in self.health:
            raise ValueError(f"task {name!r} is supervised already")
        self._specs.append(_Spec(name, start, restart))
        self.health[name] = TaskHealth(name)
        self._failures.labels(name)
        self._restarts.labels(name)
        self._up.labels(name).set(0)

    def ready(self) -> tuple[bool, str]:
        """Ready when every task runs; otherwise the first one that does not, and why."""
        for health in self.health.values():
            if health.state is not TaskState.RUNNING:
                return False, f"{health.name} {health.state.value}: {health.last_cause}"
        return True, "ready"

    def describe(self) -> dict[str, dict[str, object]]:
        return {
            h.name: {
                "state": h.state.value,
                "failures": h.failures,
                "restarts": h.restarts,
                "last_cause": h.last_cause,
            }
            for h in self.health.values()
        }

    async def run(self) -> None:
        """Run every task until cancelled; raise `Unrecoverable` when one cannot go on.

        Cancelling `run` cancels every task and waits for each to finish its cleanup.
        """
        tasks = [asyncio.create_task(self._keep(spec), name=spec.name) for spec in self._specs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and isinstance(task.exception(), Unrecoverable):
                    raise task.exception()  # type: ignore[misc]
            raise Unrecoverable("a supervised task ended without a cause")  # pragma: no cover
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for health in self.health.values():
                if health.state is TaskState.RUNNING:
                    health.state = TaskState.STOPPED
                    self._up.labels(health.name).set(0)

    async def _keep(self, spec: _Spec) -> None:
        health = self.health[spec.name]
        while True:
            health.state = TaskState.RUNNING
            self._up.labels(spec.name).set(1)
            try:
                await spec.start()
                cause = "returned, but it should run until stopped"
            except Exception as exc:
                cause = describe_failure(exc)
            self._up.labels(spec.name).set(0)
            now = self._clock()
            health.failures += 1
            health.last_cause = cause
            health.recent.append(now)
            while health.recent and now - health.recent[0] > self.backoff.window_s:
                health.recent.popleft()
            self._failures.labels(spec.name).inc()
            recent = len(health.recent)
            if not spec.restart or recent >= self.backoff.give_up_after:
                health.state = TaskState.FAILED
                why = (
                    "it cannot be restarted"
                    if not spec.restart
                    else f"{recent} failures within {self.backoff.window_s:g} s"
                )
                log.error(
                    "task_failed", action="giving up, heliostat exits", task=spec.name, cause=cause
                )
                raise Unrecoverable(f"{spec.name} failed ({why}): {cause}")
            delay = self.backoff.delay(recent)
            health.state = TaskState.RESTARTING
            log.error(
                "task_failed", action="restarting", task=spec.name, cause=cause, retry_in_s=delay
            )
            await asyncio.sleep(delay)
            health.restarts += 1
            self._restarts.labels(spec.name).inc()


def describe_failure(exc: BaseException) -> str:
    """`Type: message (file:line)`, one line: the innermost frame says where it was raised."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" ({'/'.join(last.filename.split('/')[-2:])}:{last.lineno})"
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}"[:300] + where
