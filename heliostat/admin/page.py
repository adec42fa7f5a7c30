"""Operator routes on the admin address: the live status page at `/`, recent events, and
what a new policy would change (`POST /debug/diff`).

The page is one static HTML file with a small script and no build step; it polls
`/debug/state` and `/debug/events` on the server it came from, so it shows nothing the
JSON does not, and works through any proxy that passes the admin API.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from heliostat.policy import PolicyError

EventsSource = Callable[[int], list[dict[str, Any]]]
DiffAction = Callable[[str, str], dict[str, Any]]
"""(policy text, its source name) -> PolicyDiff JSON; raises PolicyError for a bad policy."""


def _page() -> bytes:
    return resources.files("heliostat.admin").joinpath("static/status.html").read_bytes()


def install(app: web.Application, events: EventsSource, diff: DiffAction) -> None:
    page = _page()

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def recent(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return web.json_response({"error": "after: expected a whole number"}, status=400)
        return web.json_response({"events": events(after)})

    async def policy_diff(request: web.Request) -> web.Response:
        source = request.query.get("source", "<request>")
        text = (await request.read()).decode("utf-8", errors="replace")
        try:
            return web.json_response(diff(text, source))
        except PolicyError as exc:
            return web.json_response({"error": exc.lines()}, status=400)

    app.router.add_get("/", index)
    app.router.add_get("/debug/events", recent)
    app.router.add_post("/debug/diff", policy_diff)
