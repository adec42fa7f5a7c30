"""Measure the scraper's CPU cost per endpoint scrape (not a test; pytest does not collect it).

    .venv/bin/python bench/measure_scrape_cost.py [--endpoints 200] [--rounds 20] [--gzip]

A child process serves a realistic vLLM v1 /metrics page (~35 kB: gauges, counters,
cache_config_info and 12 histograms) on N ports of 127.0.0.1; this process scrapes all of them
with one `Scraper` and reports `time.process_time()` spent over the measured rounds divided by
rounds x endpoints. The servers live in the other process so their CPU is not counted.
`--gzip` serves the page gzip-compressed, as prometheus_client's ASGI app (vLLM's) does when
the client accepts gzip, which aiohttp does by default.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

if __package__ in (None, ""):  # run as a script: the repository root holds `tests`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heliostat.signals import Scraper, ScrapeTarget, read_exposition
from tests.signals import expositions as ex


async def serve(endpoints: int, compress: bool) -> None:
    """Child: serve the page on `endpoints` ports, print them, run until stdin closes."""
    text = ex.vllm(waiting=3, running=12, kv=0.61)
    body = gzip.compress(text.encode()) if compress else text.encode()
    headers = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    if compress:
        headers["Content-Encoding"] = "gzip"

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(endpoints):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=512).start()
        ports.append(sock.getsockname()[1])
    print(json.dumps(ports), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


async def measure(endpoints: int, rounds: int, compress: bool) -> dict[str, float]:
    args = [sys.executable, __file__, "--serve", "--endpoints", str(endpoints)]
    if compress:
        args.append("--gzip")
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ports = json.loads(child.stdout.readline())
        targets = [
            ScrapeTarget(model="llama", address=f"127.0.0.1:{p}", timeout=5.0, interval=10.0)
            for p in ports
        ]
        async with Scraper(targets, None) as scraper:
            for _ in range(3):  # warm up: connections, regex caches
                await scraper.scrape_once()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(rounds):
                await scraper.scrape_once()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            errors = [s.error for s in scraper.signals().values() if s.error]
            assert not errors, errors[:5]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    text = ex.vllm(waiting=3, running=12, kv=0.61)
    n = 500
    parse0 = time.process_time()
    for _ in range(n):
        read_exposition(text, "vllm", "llama")
    parse_ms = (time.process_time() - parse0) / n * 1000
    return {
        "endpoints": endpoints,
        "rounds": rounds,
        "gzip": compress,
        "page_bytes": len(text),
        "cpu_ms_per_endpoint_scrape": cpu / (rounds * endpoints) * 1000,
        "of_which_parse_and_adapt_ms": parse_ms,
        "cpu_ms_per_round": cpu / rounds * 1000,
        "wall_ms_per_round": wall / rounds * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        asyncio.run(serve(opts.endpoints, opts.gzip))
        return
    result = asyncio.run(measure(opts.endpoints, opts.rounds, opts.gzip))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
