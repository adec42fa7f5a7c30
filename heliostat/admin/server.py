"""The admin HTTP server (aiohttp): /healthz, /readyz, /metrics, /debug/state.

It only reads: everything it shows comes from callables the runtime hands it, so the
admin surface can grow (status page, explain, CSDS-like views) without reaching into state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

StateProvider = Callable[[], dict[str, Any]]
ReadyProbe = Callable[[], tuple[bool, str]]


def build_app(
    registry: CollectorRegistry, state: StateProvider, ready: ReadyProbe
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = ready()
        return web.Response(status=200 if ok else 503, text=detail + "\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def debug_state(_: web.Request) -> web.Response:
        body = json.dumps(state(), indent=2, sort_keys=True, default=str)
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/state", debug_state)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
