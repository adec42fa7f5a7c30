"""`heliostat serve` in process with its long-lived tasks broken on purpose: each failure is
logged once, counted, restarted with backoff and visible on /readyz meanwhile; a server that
stops is unrecoverable and `serve` exits non-zero; SIGTERM still stops everything."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from heliostat import cli, serve
from heliostat.policy import load_policy
from heliostat.runtime.supervise import Backoff, Unrecoverable
from heliostat.serve import ControlPlane, ServeOptions
from tests.e2e.harness import LOCALHOST, free_port, policy_document, write_policy


def _plane(tmp_path: Path) -> ControlPlane:
    path = tmp_path / "policy.yaml"
    write_policy(
        path, policy_document(gateway_port=free_port(), endpoints=[("127.0.0.1:9", "eu-west")])
    )
    options = ServeOptions(
        policy_path=path, xds_port=free_port(), admin_port=free_port(), policy_poll_s=0.05
    )
    plane = ControlPlane(options, load_policy(path))
    plane.supervisor.backoff = Backoff(first_s=0.5, max_s=0.5, give_up_after=3)
    return plane


def _fails_once(original: Callable[[], Awaitable[None]], error: Exception) -> Callable[..., Any]:
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.3)
            raise error
        await original()

    return run


async def _readyz_until(
    plane: ControlPlane, wanted: Callable[[int, str], bool], timeout: float = 15
) -> list[tuple[int, str]]:
    url = f"http://{LOCALHOST}:{plane.options.admin_port}/readyz"
    answers: list[tuple[int, str]] = []
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    answers.append((response.status, await response.text()))
                    if wanted(*answers[-1]):
                        return answers
            await asyncio.sleep(0.02)
    raise AssertionError(f"readyz never as wanted: {answers[-5:]}")


def _metric(plane: ControlPlane, name: str, **labels: str) -> float:
    value = plane.metrics_registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


async def _stop(plane: ControlPlane, stop: asyncio.Event, serving: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(serving, timeout=15)
    _released(plane)


def _released(plane: ControlPlane) -> None:
    for port in (plane.options.xds_port, plane.options.admin_port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((LOCALHOST, port))


@pytest.mark.parametrize("task", ["policy watcher", "signals"])
async def test_a_failed_task_is_restarted_and_readyz_shows_the_gap(
    tmp_path: Path, task: str
) -> None:
    plane = _plane(tmp_path)
    error = SystemError(f"the {task} broke")
    if task == "policy watcher":
        plane.watcher.run = _fails_once(plane.watcher.run, error)  # type: ignore[method-assign]
    else:
        plane.signals.run = _fails_once(plane.signals.run, error)  # type: ignore[method-assign]
    stop = asyncio.Event()
    with capture_logs() as logs:
        serving = asyncio.create_task(plane.run(stop))
        answers = await _readyz_until(plane, lambda s, t: s == 503 and "restarting" in t)
        assert (200, "ready\n") in answers
        assert answers[-1][1].startswith(f"{task} restarting: SystemError: the {task} broke (")
        await _readyz_until(plane, lambda s, _: s == 200)
        assert _metric(plane, "heliostat_task_failures_total", task=task) == 1
        assert _metric(plane, "heliostat_task_restarts_total", task=task) == 1
        assert _metric(plane, "heliostat_task_up", task=task) == 1
        await _stop(plane, stop, serving)
    failures = [e for e in logs if e["event"] == "task_failed"]
    assert len(failures) == 1 and failures[0]["task"] == task


async def test_a_scraper_source_that_dies_restarts_the_signals_task(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    (direct,) = plane.signals.sources().values()
    direct.run = _fails_once(direct.run, OSError("scraper socket gone"))  # type: ignore[method-assign]
    stop = asyncio.Event()
    serving = asyncio.create_task(plane.run(stop))
    answers = await _readyz_until(plane, lambda s, t: "restarting" in t)
    assert answers[-1][1].startswith("signals restarting: OSError: scraper socket gone (")
    await _readyz_until(plane, lambda s, _: s == 200)
    assert plane.state()["tasks"]["signals"]["restarts"] == 1
    await _stop(plane, stop, serving)


async def test_a_control_tick_that_keeps_failing_is_counted_and_logged_once(
    tmp_path: Path,
) -> None:
    plane = _plane(tmp_path)
    stop = asyncio.Event()
    serving = asyncio.create_task(plane.run(stop))
    await _readyz_until(plane, lambda s, _: s == 200)
    # The first round lands a moment after ready (its reads go through the scrape worker);
    # its release ticks once more and would log a second failure.
    deadline = time.monotonic() + 15
    while not plane.first_round.done:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    def broken(*_: object) -> None:
        raise ArithmeticError("law diverged")

    with capture_logs() as logs:
        plane.control._signals = broken  # type: ignore[assignment]
        deadline = time.monotonic() + 15
        while _metric(plane, "heliostat_control_tick_failures_total") < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert [e["event"] for e in logs].count("control_tick_failed") == 1
    assert plane.ready() == (True, "ready")  # the loop itself goes on
    await _stop(plane, stop, serving)


async def test_a_watcher_failing_again_and_again_makes_serve_give_up(tmp_path: Path) -> None:
    plane = _plane(tmp_path)
    plane.supervisor.backoff = Backoff(first_s=0.05, max_s=0.05, give_up_after=3)

    async def broken() -> None:
        raise MemoryError("cannot allocate")

    plane.watcher.run = broken  # type: ignore[method-assign]
    with pytest.raises(Unrecoverable) as raised:
        await asyncio.wait_for(plane.run(asyncio.Event()), timeout=15)
    assert str(raised.value).startswith(
        "policy watcher failed (3 failures within 60 s): MemoryError: cannot allocate ("
    )
    _released(plane)


@pytest.mark.parametrize("server", ["xDS", "admin"])
async def test_a_server_that_stops_is_unrecoverable(tmp_path: Path, server: str) -> None:
    plane = _plane(tmp_path)
    serving = asyncio.create_task(plane.run(asyncio.Event()))
    await _readyz_until(plane, lambda s, _: s == 200)
    if server == "xDS":
        assert plane.xds_server is not None
        await plane.xds_server.stop(None)
        expected = "xDS server failed (it cannot be restarted): ConnectionAbortedError: the gRPC"
    else:
        assert plane.admin_runner is not None
        for site in list(plane.admin_runner.sites):
            await site.stop()
        expected = "admin server failed (it cannot be restarted): ConnectionAbortedError: the"
    with pytest.raises(Unrecoverable) as raised:
        await asyncio.wait_for(serving, timeout=15)
    assert str(raised.value).startswith(expected)
    _released(plane)


def test_cli_serve_exits_1_with_one_line_when_unrecoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    write_policy(
        path, policy_document(gateway_port=free_port(), endpoints=[("127.0.0.1:9", "eu-west")])
    )

    def gives_up(_: ServeOptions) -> None:
        raise Unrecoverable("signals failed (5 failures within 60 s): OSError: x (a.py:1)")

    monkeypatch.setattr(serve, "run", gives_up)
    assert cli.main(["serve", "--policy", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "heliostat serve: signals failed (5 failures within 60 s): OSError: x (a.py:1)\n"
    )


async def test_serve_is_ready_while_its_scrape_worker_starts_and_waits_for_it_to_scrape(
    tmp_path: Path,
) -> None:
    """The scrape worker's start (its imports: a second or more, more on a busy machine) is
    not waited for before serving: a restarted heliostat resyncs its Envoys on what needs no
    signal meanwhile. The first round's bound moves by the start: it is not the replicas'."""
    plane = _plane(tmp_path)
    original = plane.signals.start
    started = asyncio.Event()

    async def slow_start() -> None:
        await asyncio.sleep(1.5)
        await original()
        started.set()

    plane.signals.start = slow_start  # type: ignore[method-assign]
    bound = plane.first_round.deadline
    stop = asyncio.Event()
    serving = asyncio.create_task(plane.run(stop))
    await _readyz_until(plane, lambda s, _: s == 200, timeout=1.2)
    assert not started.is_set()  # ready and serving while the worker still starts
    assert not plane.first_round.done  # its endpoints still withheld: no round yet
    await asyncio.wait_for(started.wait(), timeout=15)
    assert plane.first_round.deadline >= bound + 1.5
    deadline = time.monotonic() + 15
    while not plane.first_round.done:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # Released by the round, not by a bound that expired while the worker still started
    # (counted from before it, it did: endpoints went out neutral, then moved again).
    assert plane.first_round.reason == "first signal round landed"
    await _stop(plane, stop, serving)
