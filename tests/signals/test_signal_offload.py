"""Scrapes in a worker process: the framed protocol, and a real worker against real servers,
including its death, its hanging and its shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from heliostat.signals import CompositeSource, Failure, Reading, Reason, Scraper, ScrapeTarget
from heliostat.signals.offload import (
    HEADER,
    MAX_FRAME,
    FrameError,
    LocalFetcher,
    WorkerFetcher,
    decode,
    encode,
    frame_length,
    read_frame,
)
from heliostat.signals.worker import serve

from . import expositions as ex
from .conftest import FakeClock, MetricsServer
from .test_signal_prometheus import A, B, FakePrometheus, vector, vllm_samples

Servers = Callable[[], Awaitable[MetricsServer]]


def target(address: str, **kwargs: object) -> ScrapeTarget:
    settings: dict[str, object] = {"model": "llama", "address": address, "timeout": 0.5}
    settings.update(kwargs)
    return ScrapeTarget(**settings)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- the protocol, without processes ---------------------------------------------------------


def test_frames_round_trip_records() -> None:
    message = (7, "direct", (target(A),))
    frame = encode(message)
    assert frame_length(frame[: HEADER.size]) == len(frame) - HEADER.size
    assert decode(frame[HEADER.size :]) == message


def test_an_implausible_length_is_a_corrupt_stream() -> None:
    with pytest.raises(FrameError):
        frame_length(HEADER.pack(MAX_FRAME + 1))


async def test_read_frame_ends_cleanly_only_between_frames() -> None:
    frame = encode((1, "x"))
    reader = asyncio.StreamReader()
    reader.feed_data(frame + frame[:3])
    reader.feed_eof()
    assert await read_frame(reader) == (1, "x")
    with pytest.raises(FrameError):
        await read_frame(reader)
    empty = asyncio.StreamReader()
    empty.feed_eof()
    assert await read_frame(empty) is None


async def test_worker_loop_answers_each_request_with_its_id(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.vllm(waiting=3, running=1, kv=0.5))
    requests = asyncio.StreamReader()
    requests.feed_data(encode((41, "direct", (target(server.address),))))
    requests.feed_data(encode((42, "direct", (target("127.0.0.1:1", timeout=0.2),))))
    written: list[bytes] = []
    loop = asyncio.create_task(serve(requests, written.append))
    for _ in range(100):
        if len(written) == 2:
            break
        await asyncio.sleep(0.02)
    requests.feed_eof()  # the serving process closed the pipe: the loop ends
    await asyncio.wait_for(loop, 2)
    answers = {}
    for frame in written:
        request_id, (result, seconds) = decode(frame[HEADER.size :])
        answers[request_id] = result
        assert seconds >= 0
    assert isinstance(answers[41], Reading) and answers[41].waiting == 3
    assert isinstance(answers[42], Failure) and answers[42].reason == Reason.CONNECT


# --- a real worker process -------------------------------------------------------------------


async def test_worker_reads_what_the_loop_would(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.vllm(waiting=2, running=7, kv=0.42))
    local, worker = LocalFetcher(), WorkerFetcher()
    try:
        here, _ = await local.direct(target(server.address))
        there, _ = await worker.direct(target(server.address))
        assert isinstance(there, Reading) and there == here
        assert worker.pid is not None and worker.pid != os.getpid()
    finally:
        await local.close()
        await worker.close()


async def test_prometheus_queries_run_in_the_worker(servers: Servers) -> None:
    fake = FakePrometheus(await servers())
    fake.answer = vector(vllm_samples(A, "2", 1700.0) + vllm_samples(B, "7", 1690.5))
    worker = WorkerFetcher()
    try:
        results, _ = await worker.prometheus(fake.url, 1 << 20, "vllm", [target(A), target(B)])
    finally:
        await worker.close()
    (a, a_at), (b, b_at) = results
    assert isinstance(a, Reading) and isinstance(b, Reading)
    assert (a.waiting, a_at, b.waiting, b_at) == (2, 1700.0, 7, 1690.5)
    assert len(fake.queries) == 1


async def test_a_dead_worker_fails_its_reads_by_endpoint_and_is_restarted(
    servers: Servers, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = await servers()
    server.serve(ex.vllm(waiting=1, running=1, kv=0.1))
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(5)
        return web.Response(text="")

    worker = WorkerFetcher()
    scraper = Scraper([target(server.address, timeout=3.0)], None, clock=clock, fetcher=worker)
    try:
        await scraper.scrape_once()
        first = worker.pid
        assert first is not None and scraper.signals()[("llama", server.address)].waiting == 1
        server.handler = slow
        caplog.set_level(logging.INFO)
        round_ = asyncio.create_task(scraper.scrape_once())
        await started.wait()
        os.kill(first, signal.SIGKILL)  # the worker dies with a read in flight
        await asyncio.wait_for(round_, 5)
        s = scraper.signals()[("llama", server.address)]
        assert s.error == Reason.INTERNAL and s.waiting == 1  # last good values kept
        assert "scrape worker exited" in (s.error_detail or "")
        died = [r for r in caplog.records if r.msg == "scrape_worker_died"]
        assert died and died[0].pid == first  # type: ignore[attr-defined]
        failed = [r for r in caplog.records if r.msg == "scrape_failed"]
        assert failed and failed[0].endpoint == server.address  # type: ignore[attr-defined]
        server.serve(ex.vllm(waiting=4, running=1, kv=0.1))
        await scraper.scrape_once()
        assert scraper.signals()[("llama", server.address)].waiting == 4
        assert worker.starts == 2 and worker.pid not in (None, first)
        assert [r for r in caplog.records if r.msg == "scrape_worker_restarted"]
    finally:
        await worker.close()
    assert not alive(first)


SAYS_READY_THEN_HANGS = (
    "import pickle, struct, sys, time; body = pickle.dumps((-1, None)); "
    "sys.stdout.buffer.write(struct.pack('>I', len(body)) + body); sys.stdout.flush(); "
    "time.sleep(60)"
)


@pytest.mark.parametrize(
    ("script", "detail"),
    [("import time; time.sleep(60)", "not up within"), (SAYS_READY_THEN_HANGS, "did not answer")],
    ids=["never-up", "up-then-silent"],
)
async def test_a_hung_worker_is_killed_and_its_reads_fail(
    script: str, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = WorkerFetcher([sys.executable, "-c", script], answer_slack_s=0.2, start_timeout_s=3)
    try:
        result, _ = await worker.direct(target(A, timeout=0.1))
        pid = worker.pid
    finally:
        await worker.close()
    assert isinstance(result, Failure) and result.reason == Reason.INTERNAL
    assert detail in result.detail
    assert pid is None  # killed, not left running
    assert [r for r in caplog.records if r.msg == "scrape_worker_hung"]


async def test_close_ends_the_worker_and_a_later_read_starts_another(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.vllm(waiting=1, running=1, kv=0.1))
    worker = WorkerFetcher()
    await worker.direct(target(server.address))
    first = worker.pid
    assert first is not None
    await worker.close()
    assert worker.pid is None and not alive(first)
    result, _ = await worker.direct(target(server.address))
    assert isinstance(result, Reading)
    second = worker.pid
    await worker.close()
    assert second is not None and not alive(second)


async def test_composite_run_uses_one_worker_and_leaves_no_process(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await servers(), await servers()
    a.serve(ex.vllm(waiting=1, running=1, kv=0.1))
    b.serve(ex.vllm(waiting=2, running=1, kv=0.1))
    caplog.set_level(logging.INFO)
    source = CompositeSource(
        [target(a.address, interval=0.1), target(b.address, model="other", interval=0.1)],
        None,
        offload=True,
    )
    task = asyncio.create_task(source.run())
    for _ in range(100):
        signals = source.signals()
        if all(s.scraped_at is not None for s in signals.values()):
            break
        await asyncio.sleep(0.05)
    assert source.signals()[("other", b.address)].waiting == 2
    fetcher = source._fetcher
    assert isinstance(fetcher, WorkerFetcher) and fetcher.starts == 1
    pid = fetcher.pid
    assert pid is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fetcher.pid is None and not alive(pid)
    assert not [r for r in caplog.records if r.msg == "scrape_worker_died"]  # a clean stop
