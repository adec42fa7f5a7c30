"""The direct scraper against small aiohttp servers on 127.0.0.1, one fault at a time."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from heliostat.signals import Reason, Scraper, ScrapeTarget, SignalSource

from . import expositions as ex
from .conftest import FakeClock, MetricsServer

Servers = Callable[[], Awaitable[MetricsServer]]


def target(server: MetricsServer | str, **kwargs: object) -> ScrapeTarget:
    address = server if isinstance(server, str) else server.address
    settings: dict[str, object] = {"model": "llama", "address": address, "timeout": 0.3}
    settings.update(kwargs)
    return ScrapeTarget(**settings)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def one(
    servers: Servers, clock: FakeClock, registry: CollectorRegistry | None = None
) -> tuple[MetricsServer, Scraper]:
    server = await servers()
    return server, Scraper([target(server)], registry, clock=clock)


# --- success -------------------------------------------------------------------------------


async def test_scrapes_vllm_signal(servers: Servers, clock: FakeClock) -> None:
    server, scraper = await one(servers, clock)
    server.serve(ex.vllm(waiting=2, running=7, kv=0.42))
    async with scraper:
        assert isinstance(scraper, SignalSource)
        assert scraper.signals()[("llama", server.address)].scraped_at is None
        await scraper.scrape_once()
    s = scraper.signals()[("llama", server.address)]
    assert (s.model, s.address, s.engine) == ("llama", server.address, "vllm")
    assert (s.waiting, s.running, s.kv_usage) == (2, 7, 0.42)
    assert (s.num_gpu_blocks, s.block_size, s.prefix_hit_rate) == (27690, 16, None)
    assert (s.scraped_at, s.error, s.consecutive_failures) == (clock.now, None, 0)
    assert server.paths == ["/metrics"]


async def test_counters_become_rates_across_two_scrapes(servers: Servers, clock: FakeClock) -> None:
    server, scraper = await one(servers, clock)
    async with scraper:
        server.serve(ex.vllm(hits=1000, queries=4000))
        await scraper.scrape_once()
        assert scraper.signals()[("llama", server.address)].prefix_hit_rate is None
        server.serve(ex.vllm(hits=1750, queries=5000))
        clock.advance(2)
        await scraper.scrape_once()
        assert scraper.signals()[("llama", server.address)].prefix_hit_rate == 0.75
        server.serve(ex.vllm(hits=10, queries=100))  # restarted: counters reset
        await scraper.scrape_once()
        assert scraper.signals()[("llama", server.address)].prefix_hit_rate == 0.1


async def test_other_engines_and_paths(servers: Servers, clock: FakeClock) -> None:
    sg, tr, tg = await servers(), await servers(), await servers()
    sg.serve(ex.sglang(queue=5))
    tr.serve(ex.triton_trtllm(waiting=3))
    tg.serve(ex.tgi(queue=9))
    targets = [
        target(sg, model="a", engine="sglang"),
        target(tr, model="b", engine="triton", metrics_path="/v2/metrics"),
        target(tg, model="c", engine="tgi"),
    ]
    async with Scraper(targets, None, clock=clock) as scraper:
        await scraper.scrape_once()
    got = {k[0]: (s.engine, s.waiting, s.error) for k, s in scraper.signals().items()}
    assert got == {"a": ("sglang", 5, None), "b": ("triton-trtllm", 3, None), "c": ("tgi", 9, None)}
    assert tr.paths == ["/v2/metrics"]


async def test_model_label_selects_on_multi_model_server(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.vllm(waiting=1, extra_models=(ex.QWEN,)))
    targets = [target(server, model="qwen", model_label=ex.QWEN), target(server, model="llama")]
    async with Scraper(targets, None) as scraper:
        await scraper.scrape_once()
    assert scraper.signals()[("qwen", server.address)].waiting == 10
    assert scraper.signals()[("llama", server.address)].error == Reason.MISSING_SERIES


async def test_openmetrics_and_gzip_answers_are_read(servers: Servers) -> None:
    server = await servers()
    body = gzip.compress(ex.tgi(queue=4).encode())

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            headers={
                "Content-Type": "application/openmetrics-text; version=1.0.0; charset=utf-8",
                "Content-Encoding": "gzip",
            },
        )

    server.handler = gzipped
    async with Scraper([target(server, engine="tgi")], None) as scraper:
        await scraper.scrape_once()
    s = scraper.signals()[("llama", server.address)]
    # openmetrics requires `# EOF`, which our filter re-adds; TGI's text is valid either way
    assert (s.error, s.waiting) == (None, 4)


# --- faults --------------------------------------------------------------------------------


async def fault(scraper: Scraper, address: str) -> str | None:
    await scraper.scrape_once()
    return scraper.signals()[("llama", address)].error


async def test_connection_refused(closed_port: int, registry: CollectorRegistry) -> None:
    address = f"127.0.0.1:{closed_port}"
    async with Scraper([target(address)], registry) as scraper:
        assert await fault(scraper, address) == Reason.CONNECT
    assert registry.get_sample_value("heliostat_scrape_errors_total", {"reason": "connect"}) == 1


async def test_hanging_server_times_out(servers: Servers) -> None:
    server = await servers()
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        raise AssertionError("unreachable")

    server.handler = hang
    async with Scraper([target(server, timeout=0.2)], None) as scraper:
        started = time.monotonic()
        assert await fault(scraper, server.address) == Reason.TIMEOUT
        assert time.monotonic() - started < 1.0


async def test_slow_body_times_out(servers: Servers) -> None:
    server = await servers()

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for line in ex.tgi().splitlines(keepends=True):
            await resp.write(line.encode())
            await asyncio.sleep(0.1)
        await resp.write_eof()
        return resp

    server.handler = trickle
    async with Scraper([target(server, engine="tgi", timeout=0.25)], None) as scraper:
        started = time.monotonic()
        assert await fault(scraper, server.address) == Reason.TIMEOUT
        assert time.monotonic() - started < 1.0


async def test_huge_streamed_body_is_cut_off(servers: Servers) -> None:
    server = await servers()
    sent = 0

    async def flood(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        chunk = b"# " + b"x" * 65_000 + b"\n"
        for _ in range(1000):  # 65 MB if nobody stops us
            await resp.write(chunk)
            sent += len(chunk)
        return resp

    server.handler = flood
    t = target(server, max_body_bytes=256 * 1024, timeout=2.0)
    async with Scraper([t], None) as scraper:
        assert await fault(scraper, server.address) == Reason.TOO_LARGE
    assert sent < 20 * 1024 * 1024


async def test_declared_content_length_over_cap(servers: Servers) -> None:
    server, scraper = await one(servers, FakeClock())
    server.serve(ex.vllm())  # ~35 kB
    scraper.update_targets([target(server, max_body_bytes=10_000)])
    async with scraper:
        assert await fault(scraper, server.address) == Reason.TOO_LARGE


async def test_redirect_is_not_followed(servers: Servers) -> None:
    server = await servers()

    async def redirect(request: web.Request) -> web.Response:
        if request.path == "/metrics":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text=ex.vllm(), content_type="text/plain")

    server.handler = redirect
    async with Scraper([target(server)], None) as scraper:
        assert await fault(scraper, server.address) == Reason.REDIRECT
    assert server.paths == ["/metrics"]


@pytest.mark.parametrize("content_type", ["application/json", "text/html"])
async def test_wrong_content_type(servers: Servers, content_type: str) -> None:
    server = await servers()
    server.serve(ex.vllm(), content_type=content_type)
    async with Scraper([target(server)], None) as scraper:
        assert await fault(scraper, server.address) == Reason.CONTENT_TYPE


async def test_http_error_status(servers: Servers) -> None:
    server = await servers()
    server.serve("oops", status=503)
    async with Scraper([target(server)], None) as scraper:
        assert await fault(scraper, server.address) == Reason.HTTP_STATUS


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html><body>Bad Gateway</body></html>", Reason.PARSE),
        (ex.vllm(kv=float("nan")), Reason.BAD_VALUE),
        (ex.vllm(kv=1.3), Reason.BAD_VALUE),
        (ex.sglang(), Reason.MISSING_SERIES),
    ],
)
async def test_bad_content(servers: Servers, body: str, reason: str) -> None:
    server = await servers()
    server.serve(body)
    async with Scraper([target(server)], None) as scraper:
        assert await fault(scraper, server.address) == reason


async def test_non_utf8_body_is_a_parse_error(servers: Servers) -> None:
    server = await servers()

    async def latin1(request: web.Request) -> web.Response:
        return web.Response(body=b"tgi_queue_size 1 \xff\xfe\n", content_type="text/plain")

    server.handler = latin1
    async with Scraper([target(server, engine="tgi")], None) as scraper:
        assert await fault(scraper, server.address) == Reason.PARSE


async def test_one_bad_endpoint_does_not_delay_or_spoil_the_others(servers: Servers) -> None:
    good, slow = await servers(), await servers()
    good.serve(ex.vllm(waiting=1))
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        raise AssertionError("unreachable")

    slow.handler = hang
    hanging = [await servers() for _ in range(4)]
    for server in hanging:
        server.handler = hang
    targets = [target(s, timeout=0.3) for s in (good, slow, *hanging)]
    async with Scraper(targets, None) as scraper:
        started = time.monotonic()
        await scraper.scrape_once()
        assert time.monotonic() - started < 1.0  # concurrent: one timeout, not six
    signals = scraper.signals()
    assert signals[("llama", good.address)].waiting == 1
    assert signals[("llama", good.address)].error is None
    assert all(signals[("llama", s.address)].error == Reason.TIMEOUT for s in (slow, *hanging))


# --- failure counting, recovery, staleness ----------------------------------------------


async def test_failures_are_counted_values_kept_and_recovery_clears(
    servers: Servers, clock: FakeClock, registry: CollectorRegistry
) -> None:
    server, scraper = await one(servers, clock, registry)
    key = ("llama", server.address)
    async with scraper:
        server.serve(ex.vllm(waiting=3))
        await scraper.scrape_once()
        good_at = clock.now
        server.serve("down", status=500)
        for n in (1, 2, 3):
            clock.advance(2)
            await scraper.scrape_once()
            s = scraper.signals()[key]
            assert (s.error, s.consecutive_failures) == (Reason.HTTP_STATUS, n)
            assert (s.waiting, s.scraped_at) == (3, good_at)  # last good values kept
        assert s.is_stale(clock.now, 6.0) is False
        clock.advance(2)
        assert s.is_stale(clock.now, 6.0) is True
        labels = {"model": "llama", "endpoint": server.address}
        age = registry.get_sample_value("heliostat_signal_age_seconds", labels)
        assert age == clock.now - good_at
        assert registry.get_sample_value("heliostat_signal_consecutive_failures", labels) == 3
        server.serve(ex.vllm(waiting=5))
        await scraper.scrape_once()
        s = scraper.signals()[key]
        assert (s.error, s.consecutive_failures, s.waiting, s.scraped_at) == (
            None,
            0,
            5,
            clock.now,
        )
        assert not s.is_stale(clock.now, 6.0)
    assert (
        registry.get_sample_value("heliostat_scrape_errors_total", {"reason": "http_status"}) == 3
    )
    count = registry.get_sample_value(
        "heliostat_scrape_duration_seconds_count", {"source": "direct"}
    )
    assert count == 5


async def test_failed_scrape_does_not_advance_counters(servers: Servers) -> None:
    server = await servers()
    async with Scraper([target(server)], None) as scraper:
        server.serve(ex.vllm(hits=100, queries=200))
        await scraper.scrape_once()
        server.serve(ex.vllm(hits=float("nan"), queries=300))
        await scraper.scrape_once()
        server.serve(ex.vllm(hits=150, queries=300))
        await scraper.scrape_once()
    assert scraper.signals()[("llama", server.address)].prefix_hit_rate == 0.5


# --- targets, loop, hook -------------------------------------------------------------------


async def test_update_targets_keeps_state_of_unchanged_targets(
    servers: Servers, clock: FakeClock
) -> None:
    a, b = await servers(), await servers()
    a.serve(ex.vllm(hits=100, queries=200))
    b.serve(ex.vllm(hits=100, queries=200))
    scraper = Scraper([target(a), target(b)], None, clock=clock)
    async with scraper:
        await scraper.scrape_once()
        first_at = clock.now
        clock.advance(2)
        c = await servers()
        # a: only timing changed (state kept); b: engine changed (reset); c: new
        scraper.update_targets([target(a, interval=5.0), target(b, engine="tgi"), target(c)])
        signals = scraper.signals()
        assert signals[("llama", a.address)].scraped_at == first_at
        assert signals[("llama", b.address)].scraped_at is None
        assert signals[("llama", c.address)].scraped_at is None
        a.serve(ex.vllm(hits=200, queries=300))
        await scraper.scrape_once()
        assert scraper.signals()[("llama", a.address)].prefix_hit_rate == 1.0
        scraper.update_targets([target(a)])
        assert list(scraper.signals()) == [("llama", a.address)]
    with pytest.raises(ValueError):
        scraper.update_targets([target(a), target(a)])


async def test_run_scrapes_every_interval_and_calls_on_update(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.vllm())
    scraper = Scraper([target(server, interval=0.1, timeout=0.05)], None)
    rounds: list[str] = []
    scraper.on_update = rounds.append
    task = asyncio.create_task(scraper.run())
    try:
        await asyncio.sleep(0.45)
        assert 2 <= server.requests <= 7
        assert rounds and set(rounds) == {"llama"}
        other = await servers()
        other.serve(ex.tgi())
        scraper.update_targets(
            [
                target(server, interval=0.1, timeout=0.05),
                target(other, model="tgi", engine="tgi", interval=0.1, timeout=0.05),
            ]
        )
        await asyncio.sleep(0.25)
        assert "tgi" in rounds
        assert scraper.signals()[("tgi", other.address)].waiting == 3
        scraper.update_targets([])
        await asyncio.sleep(0.05)
        settled = server.requests
        await asyncio.sleep(0.25)
        assert server.requests == settled
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert scraper._fetcher._session is None  # type: ignore[attr-defined]  # run() closed it


async def test_failing_hook_and_failing_server_do_not_stop_the_loop(
    servers: Servers, closed_port: int
) -> None:
    server = await servers()
    server.serve("<html>", content_type="text/html")
    calls = 0

    async def hook(model: str) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("control loop bug")

    targets = [
        target(server, interval=0.05, timeout=0.04),
        target(f"127.0.0.1:{closed_port}", interval=0.05, timeout=0.04),
    ]
    scraper = Scraper(targets, None)
    scraper.on_update = hook
    task = asyncio.create_task(scraper.run())
    await asyncio.sleep(0.3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls >= 3
    assert scraper.signals()[("llama", server.address)].consecutive_failures >= 3


async def test_scrape_once_for_one_model(servers: Servers) -> None:
    a, b = await servers(), await servers()
    a.serve(ex.vllm())
    b.serve(ex.vllm())
    async with Scraper([target(a, model="x"), target(b, model="y")], None) as scraper:
        await scraper.scrape_once("x")
        await scraper.scrape_once("unknown")
    assert (a.requests, b.requests) == (1, 0)


async def test_two_sources_can_share_one_registry(servers: Servers) -> None:
    registry = CollectorRegistry()
    server = await servers()
    server.serve(ex.vllm())
    one_, two = Scraper([target(server)], registry), Scraper([target(server, model="b")], registry)
    async with one_, two:
        await one_.scrape_once()
        await two.scrape_once()
    assert (
        registry.get_sample_value(
            "heliostat_signal_age_seconds", {"model": "b", "endpoint": server.address}
        )
        is not None
    )


# --- engines as they really answer ----------------------------------------------------------


async def test_trtllm_serve_is_read_at_its_prometheus_path(servers: Servers) -> None:
    server = await servers()

    async def trtllm(request: web.Request) -> web.Response:
        if request.path == "/prometheus/metrics":
            return web.Response(text=ex.trtllm_serve(waiting=3), content_type="text/plain")
        return web.Response(text="[]", content_type="application/json")  # its /metrics

    server.handler = trtllm
    async with Scraper([target(server, engine="trtllm")], None) as scraper:
        await scraper.scrape_once()
    s = scraper.signals()[("llama", server.address)]
    assert (s.error, s.waiting, s.page) == (None, 3, "trtllm-serve")
    assert server.paths == ["/prometheus/metrics"]


async def test_json_at_the_metrics_path_says_what_to_set(servers: Servers) -> None:
    server = await servers()
    server.serve(ex.TRTLLM_SERVE_JSON_METRICS, content_type="application/json")
    t = target(server, engine="trtllm", metrics_path="/metrics")
    async with Scraper([t], None) as scraper:
        await scraper.scrape_once()
    s = scraper.signals()[("llama", server.address)]
    assert s.error == Reason.CONTENT_TYPE
    assert s.error_detail == "JSON where Prometheus text was expected: set signals.metrics_path"


async def test_partial_pages_are_healthy_signals(servers: Servers, clock: FakeClock) -> None:
    old, no_queue = await servers(), await servers()
    old.serve(ex.trtllm_serve_mid_2025(served=10))
    no_queue.serve(ex.trtllm_serve_no_queue(util=0.37))
    targets = [
        target(old, engine="trtllm", metrics_path="/metrics"),
        target(no_queue, engine="trtllm", metrics_path="/metrics"),
    ]
    async with Scraper(targets, None, clock=clock) as scraper:
        for _ in range(3):
            await scraper.scrape_once()
            clock.advance(2)
    a, b = (scraper.signals()[("llama", s.address)] for s in (old, no_queue))
    assert (a.error, a.consecutive_failures, a.served_total) == (None, 0, 10)
    assert a.missing == {"waiting", "running", "kv_usage", "prefix_hit_rate"} and a.ok
    assert (b.error, b.kv_usage, b.missing) == (None, 0.37, frozenset({"waiting", "running"}))


async def test_served_rate_between_scrapes_survives_a_restart(
    servers: Servers, clock: FakeClock
) -> None:
    server, scraper = await one(servers, clock)
    key = ("llama", server.address)
    async with scraper:
        server.serve(ex.vllm(served={"stop": 100}))
        await scraper.scrape_once()
        assert (scraper.signals()[key].served_total, scraper.signals()[key].served_rate) == (
            100,
            None,
        )
        server.serve(ex.vllm(served={"stop": 130, "length": 10}))
        clock.advance(4)
        await scraper.scrape_once()
        assert scraper.signals()[key].served_rate == pytest.approx(10.0)
        server.serve(ex.vllm(served={"stop": 6}))  # restarted: 6 served since
        clock.advance(2)
        await scraper.scrape_once()
        assert scraper.signals()[key].served_rate == pytest.approx(3.0)
        server.serve("<html>", content_type="text/html")  # a failed scrape keeps the rate
        clock.advance(2)
        await scraper.scrape_once()
        assert scraper.signals()[key].served_rate == pytest.approx(3.0)
        server.serve(ex.vllm(served={"stop": 14}))
        clock.advance(2)
        await scraper.scrape_once()  # 8 more over the 4 s since the last good scrape
        assert scraper.signals()[key].served_rate == pytest.approx(2.0)
