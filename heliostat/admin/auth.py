"""Who may change state through the admin API.

Reading (health, readiness, metrics, debug state) is open: it is what probes and scrapers
need, and it changes nothing. Every other method (drain and undrain today, any reload or
other action added later) changes what Envoys are sent, so when the admin API listens beyond
loopback it requires `Authorization: Bearer TOKEN`, the token read from a file (a Kubernetes
Secret mounted as a file, a systemd credential) so it never appears on a command line or in
`ps`. On loopback the token is optional: whoever can reach 127.0.0.1 already runs on the
machine. `serve` refuses to expose the admin API beyond loopback without a token file.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """The token file cannot be used; one line naming the file."""


def is_loopback(host: str) -> bool:
    """True when every address `host` stands for is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host in ("", "*"):
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def read_token(path: Path) -> str:
    """The bearer token in `path`: its text without surrounding whitespace, at least 16
    characters (a guessable token is no protection)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TokenError(f"cannot read the admin token file {path}: {reason}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(
            f"the admin token in {path} must be one word of at least {MIN_TOKEN_CHARS} characters"
        )
    return token


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_guard(token: str) -> Middleware:
    """aiohttp middleware: a state-changing request without the right token gets 401."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in READ_METHODS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "this call changes state: send Authorization: Bearer <token>"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="heliostat admin"'},
                )
        return await handler(request)

    return guard
