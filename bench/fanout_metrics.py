"""One light process that answers /metrics on many ports, like an idle-ish vLLM fleet.

    python -m bench.fanout_metrics --count 300 --ports-file ports.json

The fanout benchmark's control plane scrapes every endpoint of its policy, as in production;
a simulated replica per endpoint would cost a process each for nothing the benchmark looks
at. Every port serves the same vLLM v1 page (rendered once by the simulator's own metric
families: waiting 1, running 6, KV use 0.3), so every endpoint reads as healthy with room,
its weight settles after the first scrapes, and later pushes come only from the change the
benchmark makes. The ports are written to --ports-file as a JSON list once all listen; the
process runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from heliostat.sim.metrics import ReplicaMetrics

WAITING, RUNNING, KV_USAGE = 1, 6, 0.3


def page() -> bytes:
    metrics = ReplicaMetrics("bench", block_size=16, num_gpu_blocks=4096)
    metrics.refresh(waiting=WAITING, running=RUNNING, kv_usage=KV_USAGE)
    return metrics.render()


async def serve(count: int, ports_file: Path) -> None:
    body = page()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    ports = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            await web.SockSite(runner, sock, backlog=128).start()
            ports.append(sock.getsockname()[1])
        tmp = ports_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports))
        os.replace(tmp, ports_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout_metrics", description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ports-file", type=Path, required=True)
    options = parser.parse_args(argv)
    if options.count < 1:
        print("fanout_metrics: --count must be at least 1", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options.count, options.ports_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
