"""The supervisor: a failing task is logged once, counted, restarted with backoff, and given
up on (the process exits) when restarting does not help; readiness follows every task."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from heliostat.runtime.supervise import Backoff, Supervisor, TaskState, Unrecoverable

FAST = Backoff(first_s=0.01, max_s=0.04, give_up_after=4, window_s=60)


def _value(registry: CollectorRegistry, name: str, task: str) -> float:
    value = registry.get_sample_value(name, {"task": task})
    assert value is not None, name
    return value


def test_backoff_grows_to_its_cap_and_rejects_nonsense() -> None:
    backoff = Backoff(first_s=0.25, max_s=1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        Backoff(first_s=0)
    with pytest.raises(ValueError):
        Backoff(give_up_after=0)


async def test_a_task_that_fails_is_logged_once_counted_and_restarted() -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(registry, FAST)
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise OSError(f"disk hiccup {runs}")
        steady.set()
        await asyncio.Event().wait()

    supervisor.add("flaky", flaky)
    with capture_logs() as logs:
        running = asyncio.create_task(supervisor.run())
        await asyncio.wait_for(steady.wait(), timeout=5)
        assert supervisor.ready() == (True, "ready")
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    failures = [e for e in logs if e["event"] == "task_failed" and e["action"] == "restarting"]
    assert [e["cause"].split(" (")[0] for e in failures] == [
        "OSError: disk hiccup 1",
        "OSError: disk hiccup 2",
    ]
    assert "test_supervise.py:" in failures[0]["cause"]  # where it was raised
    assert [e["retry_in_s"] for e in failures] == [0.01, 0.02]
    assert _value(registry, "heliostat_task_failures_total", "flaky") == 2
    assert _value(registry, "heliostat_task_restarts_total", "flaky") == 2
    assert supervisor.health["flaky"].state is TaskState.STOPPED


async def test_readiness_names_the_task_waiting_to_restart() -> None:
    supervisor = Supervisor(None, Backoff(first_s=0.3, max_s=0.3))
    failed = asyncio.Event()

    async def once() -> None:
        if not failed.is_set():
            failed.set()
            raise KeyError("scrape target")
        await asyncio.Event().wait()

    async def healthy() -> None:
        await asyncio.Event().wait()

    supervisor.add("healthy", healthy)
    supervisor.add("signals", once)
    running = asyncio.create_task(supervisor.run())
    await failed.wait()
    await asyncio.sleep(0.05)
    ok, detail = supervisor.ready()
    assert not ok
    assert detail.startswith("signals restarting: KeyError: 'scrape target' (")
    await asyncio.sleep(0.4)
    assert supervisor.ready() == (True, "ready")
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_too_many_failures_in_the_window_are_unrecoverable() -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(registry, FAST)
    cleaned_up = asyncio.Event()

    async def broken() -> None:
        raise RuntimeError("always")

    async def bystander() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    supervisor.add("broken", broken)
    supervisor.add("bystander", bystander)
    with capture_logs() as logs, pytest.raises(Unrecoverable) as raised:
        await asyncio.wait_for(supervisor.run(), timeout=5)
    assert str(raised.value).startswith(
        "broken failed (4 failures within 60 s): RuntimeError: always ("
    )
    assert cleaned_up.is_set()  # the others were stopped, not abandoned
    assert _value(registry, "heliostat_task_failures_total", "broken") == 4
    assert [(e["event"], e.get("action")) for e in logs].count(
        ("task_failed", "giving up, heliostat exits")
    ) == 1
    assert supervisor.ready()[0] is False


async def test_a_task_that_cannot_restart_fails_at_once_and_a_return_is_a_failure() -> None:
    supervisor = Supervisor(None, FAST)

    async def server() -> None:
        return None

    supervisor.add("xDS server", server, restart=False)
    with pytest.raises(Unrecoverable) as raised:
        await asyncio.wait_for(supervisor.run(), timeout=5)
    assert str(raised.value) == (
        "xDS server failed (it cannot be restarted): returned, but it should run until stopped"
    )


async def test_failures_outside_the_window_do_not_add_up() -> None:
    now = [0.0]
    supervisor = Supervisor(None, Backoff(first_s=0.01, max_s=0.01, give_up_after=2, window_s=10))
    supervisor._clock = lambda: now[0]
    runs = 0

    async def rare() -> None:
        nonlocal runs
        runs += 1
        now[0] += 11  # each failure comes long after the previous one
        if runs < 5:
            raise ValueError("rare")
        await asyncio.Event().wait()

    supervisor.add("rare", rare)
    running = asyncio.create_task(supervisor.run())
    for _ in range(200):
        if runs >= 5:
            break
        await asyncio.sleep(0.01)
    assert runs == 5
    assert not running.done()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


def test_a_name_is_supervised_once() -> None:
    supervisor = Supervisor(None)

    async def task() -> None:
        await asyncio.Event().wait()

    supervisor.add("x", task)
    with pytest.raises(ValueError):
        supervisor.add("x", task)
