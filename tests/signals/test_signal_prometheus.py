"""PrometheusSource: a fake query API for each fault, then a real Prometheus server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from heliostat.signals import PrometheusSource, Reason, ScrapeTarget, SignalSource
from heliostat.signals.prometheus import SERVED_RATE, build_query, parse_vector, rate_window

from . import expositions as ex
from .conftest import MetricsServer

Servers = Callable[[], Awaitable[MetricsServer]]
A, B, C = "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"  # labels only, never contacted


def target(address: str, **kwargs: Any) -> ScrapeTarget:
    settings: dict[str, Any] = {"model": "llama", "address": address, "timeout": 0.5}
    settings.update(kwargs)
    return ScrapeTarget(**settings)


def sample(name: str, instance: str, value: str, ts: float = 1700.0, **labels: str) -> Any:
    metric = {"__name__": name, "instance": instance, "job": labels.pop("job", "vllm"), **labels}
    return {"metric": metric, "value": [ts, value]}


def vllm_samples(instance: str, waiting: str = "2", ts: float = 1700.0, **labels: str) -> Any:
    m = {"model_name": ex.LLAMA, "engine": "0", **labels}
    return [
        sample("up", instance, "1", ts),
        sample("vllm:num_requests_waiting", instance, waiting, ts, **m),
        sample("vllm:num_requests_running", instance, "5", ts, **m),
        sample("vllm:kv_cache_usage_perc", instance, "0.25", ts, **m),
        sample("vllm:prefix_cache_hits_total", instance, "10", ts, **m),
        sample("vllm:prefix_cache_queries_total", instance, "40", ts, **m),
        sample("vllm:cache_config_info", instance, "1", ts, block_size="16", num_gpu_blocks="900"),
    ]


def vector(result: list[Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


class FakePrometheus:
    def __init__(self, server: MetricsServer) -> None:
        self.server = server
        self.answer: Any = vector([])
        self.status = 200
        self.content_type = "application/json"
        self.queries: list[str] = []
        server.handler = self.handle

    @property
    def url(self) -> str:
        return f"http://{self.server.address}"

    async def handle(self, request: web.Request) -> web.Response:
        assert request.path == "/api/v1/query"
        assert request.method == "POST"
        form = parse_qs(await request.text())
        self.queries.append(form["query"][0])
        body = self.answer if isinstance(self.answer, str) else json.dumps(self.answer)
        return web.Response(text=body, status=self.status, content_type=self.content_type)


@pytest.fixture
async def fake(servers: Servers) -> FakePrometheus:
    return FakePrometheus(await servers())


async def read(fake: FakePrometheus, targets: list[ScrapeTarget]) -> PrometheusSource:
    source = PrometheusSource(fake.url + "/", targets, None)
    async with source:
        await source.scrape_once()
    return source


def test_query_asks_rate_of_the_success_counters_in_the_same_query() -> None:
    q = build_query({"vllm:num_requests_waiting"}, [A], ["vllm:request_success_total"], 60)
    assert q == (
        '{__name__=~"vllm:num_requests_waiting",instance=~"10\\\\.0\\\\.0\\\\.1:8000"} or '
        'label_replace(label_replace(rate({__name__=~"vllm:request_success_total",'
        'instance=~"10\\\\.0\\\\.0\\\\.1:8000"}[60s]), '
        '"__name__", "heliostat:served_rate", "", ""), "heliostat_series", "served_rate", "", "")'
    )
    assert rate_window(2.0) == 60.0 and rate_window(30.0) == 120.0


async def test_served_rate_is_the_selected_models_rate(fake: FakePrometheus) -> None:
    rates = [
        sample(SERVED_RATE, A, "1.5", model_name=ex.LLAMA, engine="0", finished_reason="stop"),
        sample(SERVED_RATE, A, "0.5", model_name=ex.LLAMA, engine="1", finished_reason="stop"),
        sample(SERVED_RATE, A, "9", model_name=ex.QWEN, engine="0", finished_reason="stop"),
    ]
    fake.answer = vector(vllm_samples(A) + rates + vllm_samples(B))
    source = await read(fake, [target(A, model_label=ex.LLAMA), target(B)])
    a, b = source.signals()[("llama", A)], source.signals()[("llama", B)]
    assert a.served_rate == 2.0  # both engines of the model, not the other model
    assert b.served_rate is None  # Prometheus had no rate for it (yet)
    assert "rate(" in fake.queries[0] and "vllm:request_success_total" in fake.queries[0]


def test_query_matches_names_and_instances_exactly() -> None:
    q = build_query({"vllm:num_requests_waiting", "up"}, ["127.0.0.1:9000", "10.0.0.2:80"])
    assert q == (
        '{__name__=~"up|vllm:num_requests_waiting",'
        'instance=~"10\\\\.0\\\\.0\\\\.2:80|127\\\\.0\\\\.0\\\\.1:9000"}'
    )


async def test_signals_per_instance(fake: FakePrometheus) -> None:
    fake.answer = vector(vllm_samples(A, "2", 1700.0) + vllm_samples(B, "7", 1690.5))
    source = await read(fake, [target(A), target(B)])
    assert isinstance(source, SignalSource)
    a, b = source.signals()[("llama", A)], source.signals()[("llama", B)]
    assert (a.waiting, a.running, a.kv_usage, a.num_gpu_blocks, a.block_size) == (
        2,
        5,
        0.25,
        900,
        16,
    )
    assert (a.scraped_at, a.error) == (1700.0, None)  # Prometheus's scrape time
    assert (b.waiting, b.scraped_at) == (7, 1690.5)
    assert len(fake.queries) == 1  # one query for all endpoints of the model
    assert "instance=~" in fake.queries[0] and "vllm:kv_cache_usage_perc" in fake.queries[0]


async def test_counter_rates_across_queries(fake: FakePrometheus) -> None:
    source = PrometheusSource(fake.url, [target(A)], None)
    async with source:
        fake.answer = vector(vllm_samples(A))
        await source.scrape_once()
        assert source.signals()[("llama", A)].prefix_hit_rate is None
        later = vllm_samples(A, ts=1702.0)
        m = {"model_name": ex.LLAMA, "engine": "0"}
        later[4] = sample("vllm:prefix_cache_hits_total", A, "40", 1702.0, **m)
        later[5] = sample("vllm:prefix_cache_queries_total", A, "100", 1702.0, **m)
        fake.answer = vector(later)
        await source.scrape_once()
    assert source.signals()[("llama", A)].prefix_hit_rate == 0.5


async def test_per_endpoint_faults(fake: FakePrometheus) -> None:
    down = [sample("up", C, "0")]
    nan = vllm_samples(B)
    nan[3] = sample("vllm:kv_cache_usage_perc", B, "NaN", model_name=ex.LLAMA)
    fake.answer = vector(vllm_samples(A) + nan + down)
    source = await read(fake, [target(A), target(B), target(C), target("10.0.0.4:1")])
    errors = {k[1]: s.error for k, s in source.signals().items()}
    assert errors == {
        A: None,
        B: Reason.BAD_VALUE,
        C: Reason.TARGET_DOWN,
        "10.0.0.4:1": Reason.MISSING_SERIES,
    }


async def test_address_scraped_by_two_jobs_is_counted_once(fake: FakePrometheus) -> None:
    fake.answer = vector(vllm_samples(A, "3") + vllm_samples(A, "3", job="backup"))
    source = await read(fake, [target(A)])
    assert source.signals()[("llama", A)].waiting == 3


@pytest.mark.parametrize(
    ("answer", "status", "content_type", "reason"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, 200, None, "query"),
        ("not json", 200, None, Reason.PARSE),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, 200, None, "parse"),
        (vector([{"metric": {}, "value": [1, "2"]}]), 200, None, Reason.PARSE),
        (vector([{"metric": {"__name__": "x", "instance": A}, "value": "2"}]), 200, None, "parse"),
        ([1, 2], 200, None, Reason.PARSE),
        ({"status": "error"}, 400, None, Reason.HTTP_STATUS),
        (vector([]), 200, "text/html", Reason.CONTENT_TYPE),
    ],
)
async def test_api_faults_fail_every_endpoint_of_the_model(
    fake: FakePrometheus, answer: Any, status: int, content_type: str | None, reason: str
) -> None:
    fake.answer, fake.status = answer, status
    fake.content_type = content_type or fake.content_type
    source = await read(fake, [target(A), target(B)])
    assert {s.error for s in source.signals().values()} == {reason}


async def test_prometheus_unreachable(closed_port: int) -> None:
    registry = CollectorRegistry()
    source = PrometheusSource(f"http://127.0.0.1:{closed_port}", [target(A)], registry)
    async with source:
        await source.scrape_once()
    assert source.signals()[("llama", A)].error == Reason.CONNECT
    assert registry.get_sample_value("heliostat_scrape_errors_total", {"reason": "connect"}) == 1
    count = registry.get_sample_value(
        "heliostat_scrape_duration_seconds_count", {"source": "prometheus"}
    )
    assert count == 1


def test_parse_vector_groups_by_instance() -> None:
    body = json.dumps(vector(vllm_samples(A) + vllm_samples(B))).encode()
    by_instance = parse_vector(body)
    assert set(by_instance) == {A, B}
    name, labels, ts, value = by_instance[A][1]
    assert (name, ts, value) == ("vllm:num_requests_waiting", 1700.0, 2.0)
    assert "instance" not in labels and "job" not in labels


# --- a real Prometheus server --------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[Callable[[list[str]], Awaitable[str]]]:
    """Factory: start a real Prometheus scraping the given addresses every 1 s; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        message = "prometheus binary not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    async def start(addresses: list[str]) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: vllm\n    static_configs:\n"
            f"      - targets: {json.dumps(addresses)}\n"
        )
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while True:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    async with session.get(f"{url}/-/ready") as resp:
                        if resp.status == 200:
                            return url
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "Prometheus did not become ready"
                await asyncio.sleep(0.1)

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in logs:
            log.close()


async def test_real_prometheus(
    servers: Servers,
    closed_port: int,
    prometheus: Callable[[list[str]], Awaitable[str]],
) -> None:
    one, two = await servers(), await servers()
    one.serve(ex.vllm(waiting=2, running=7, kv=0.42, hits=100, queries=400))
    two.serve(ex.vllm(waiting=9, running=1, kv=0.9, hits=0, queries=0, engines=("0", "1")))
    down = f"127.0.0.1:{closed_port}"
    url = await prometheus([one.address, two.address, down])
    unknown = "127.0.0.1:1"  # not configured in Prometheus
    targets = [target(a) for a in (one.address, two.address, down, unknown)]
    source = PrometheusSource(url, targets, None)

    async def until(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {source.signals()}"
            await asyncio.sleep(0.25)
            await source.scrape_once()

    async with source:
        await source.scrape_once()

        def scraped() -> bool:
            s = source.signals()
            return (
                s[("llama", one.address)].ok
                and s[("llama", two.address)].ok
                and s[("llama", down)].error == Reason.TARGET_DOWN
            )

        await until(scraped, "the first scrapes")
        s1, s2 = source.signals()[("llama", one.address)], source.signals()[("llama", two.address)]
        assert (s1.waiting, s1.running, s1.kv_usage, s1.num_gpu_blocks, s1.block_size) == (
            2,
            7,
            0.42,
            27690,
            16,
        )
        assert (s2.waiting, s2.running, s2.kv_usage) == (9, 1, 0.9)  # two DP engines
        assert s1.scraped_at is not None and abs(time.time() - s1.scraped_at) < 5
        assert source.signals()[("llama", unknown)].error == Reason.MISSING_SERIES

        one.serve(ex.vllm(waiting=3, running=7, kv=0.5, hits=300, queries=800))
        await until(
            lambda: source.signals()[("llama", one.address)].prefix_hit_rate is not None,
            "a counter increase",
        )
        s1 = source.signals()[("llama", one.address)]
        assert (s1.prefix_hit_rate, s1.waiting, s1.kv_usage) == (0.5, 3, 0.5)

        # served_rate is Prometheus's rate() of the success counter, in the same query
        await until(
            lambda: all(
                source.signals()[("llama", a)].served_rate is not None
                for a in (one.address, two.address)
            ),
            "two samples of the success counters",
        )
        assert source.signals()[("llama", two.address)].served_rate == 0.0  # a flat counter
        one.serve(ex.vllm(waiting=3, kv=0.5, hits=300, queries=800, served={"stop": 5000}))
        await until(
            lambda: (source.signals()[("llama", one.address)].served_rate or 0) > 0,
            "a rising success counter",
        )
        s1 = source.signals()[("llama", one.address)]
        assert s1.served_total == 5000 and s1.served_rate is not None and s1.served_rate > 0
