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

from heliostat.admin.auth import bearer_guard
from heliostat.admin.query import QueryError, narrow
from heliostat.listen import ListenError, check_free, failure

StateProvider = Callable[[], dict[str, Any]]
ReadyProbe = Callable[[], tuple[bool, str]]


DrainAction = Callable[[dict[str, Any], bool], dict[str, Any]]
"""Drain (True) or return (False) what a request names; raises ValueError for bad input."""


def build_app(
    registry: CollectorRegistry,
    state: StateProvider,
    ready: ReadyProbe,
    drain: DrainAction | None = None,
    *,
    token: str | None = None,
) -> web.Application:
    """With `token`, every state-changing call needs it as a bearer token (`auth.py`)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = ready()
        return web.Response(status=200 if ok else 503, text=detail + "\n")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def debug_state(request: web.Request) -> web.Response:
        try:
            shown = narrow(state(), request.query)
        except QueryError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        body = json.dumps(shown, indent=2, sort_keys=True, default=str)
        return web.Response(text=body, content_type="application/json")

    async def drain_change(request: web.Request) -> web.Response:
        if drain is None:
            return web.json_response({"error": "draining is not available"}, status=404)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object with model and endpoint or region")
            result = drain(body, request.method == "POST")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    app = web.Application(middlewares=[bearer_guard(token)] if token is not None else [])
    app.router.add_post("/drain", drain_change)
    app.router.add_delete("/drain", drain_change)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/state", debug_state)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve `app`, or raise ListenError with one line naming the address and why."""
    check_free(host, port, "the admin API")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:  # taken between the check and the bind
        await runner.cleanup()
        raise ListenError(failure(host, port, "the admin API", exc)) from None
    return runner
