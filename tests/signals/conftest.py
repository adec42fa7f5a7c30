"""Small real HTTP servers on 127.0.0.1 (port 0), a controllable clock, a closed port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from heliostat.lab.processes import Process

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeClock:
    """Wall clock under test control (the scraper stamps `scraped_at` with it)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MetricsServer:
    """An aiohttp server whose `/metrics` answer each test sets (text, or any handler)."""

    def __init__(self) -> None:
        self.text = ""
        self.content_type = "text/plain"
        self.status = 200
        self.handler: Handler | None = None
        self.requests = 0
        self.paths: list[str] = []
        self.address = ""
        self._runner: web.AppRunner | None = None

    def serve(self, text: str, content_type: str = "text/plain", status: int = 200) -> None:
        self.text, self.content_type, self.status, self.handler = text, content_type, status, None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.paths.append(request.path)
        if self.handler is not None:
            return await self.handler(request)
        return web.Response(
            text=self.text, status=self.status, content_type=self.content_type, charset="utf-8"
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.address = f"127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[], Awaitable[MetricsServer]]]:
    """Factory: `server = await servers()`; every server is stopped after the test."""
    started: list[MetricsServer] = []

    async def start() -> MetricsServer:
        server = MetricsServer()
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        await asyncio.gather(*(s.stop() for s in started), return_exceptions=True)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    yield port


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Real processes a test starts (heliostat serve, Envoy); stopped at the end, in reverse."""
    running: list[Process] = []
    yield running
    for process in reversed(running):
        process.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
