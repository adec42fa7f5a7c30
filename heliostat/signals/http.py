"""One guarded HTTP request: the only place that talks to model servers or Prometheus.

Every way a server can misbehave ends here as a `FetchError` with a reason code, never as an
exception escaping the scrape loop: refused or reset connections, servers that never answer,
answer too slowly, redirect us (we follow none: a metrics endpoint that redirects is
misconfigured, and following could lead outside the fleet), answer in the wrong content type,
or send more than `max_bytes` (read incrementally and abandoned past the cap, after
decompression, so a gzip bomb is cut off too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from heliostat.signals.record import JSON_NOT_EXPOSITION, Reason

TEXT_TYPES = frozenset({"text/plain", "application/openmetrics-text"})
"""Content types of the Prometheus exposition formats (parameters such as version ignored)."""

EXPOSITION_ACCEPT = (
    "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5"
)
"""Prefer the classic text format: its parser is the more lenient and the cheaper one."""


class FetchError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    content_type: str


def new_session() -> aiohttp.ClientSession:
    """A session for scraping many endpoints on one event loop.

    No connection limit (every endpoint of a round is fetched at once, and a pool limit would
    turn queueing into false timeouts); keep-alive reuses connections between rounds; proxies
    from the environment are ignored, metrics are fetched directly.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
        raise_for_status=False,
    )


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    accept: str,
    content_types: frozenset[str],
    method: str = "GET",
    data: Mapping[str, str] | None = None,
) -> Fetched:
    """Fetch `url` within `timeout` seconds in all (connect, headers and body)."""
    try:
        async with (
            asyncio.timeout(timeout),
            session.request(
                method,
                url,
                data=data,
                headers={"Accept": accept},
                allow_redirects=False,
            ) as resp,
        ):
            if 300 <= resp.status < 400:
                location = resp.headers.get("Location", "")
                raise FetchError(Reason.REDIRECT, f"HTTP {resp.status} to {location[:100]}")
            if resp.status != 200:
                raise FetchError(Reason.HTTP_STATUS, f"HTTP {resp.status}")
            content_type = resp.content_type
            if content_type not in content_types:
                raise FetchError(Reason.CONTENT_TYPE, _wrong_type(content_type, content_types))
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise FetchError(Reason.TOO_LARGE, f"Content-Length {resp.content_length}")
            body = bytearray()
            async for chunk in resp.content.iter_any():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(Reason.TOO_LARGE, f"more than {max_bytes} bytes")
            return Fetched(bytes(body), content_type)
    except FetchError:
        raise
    except TimeoutError as exc:  # asyncio.timeout, and aiohttp's own ServerTimeoutError
        raise FetchError(Reason.TIMEOUT, f"no complete answer within {timeout}s") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise FetchError(Reason.PROTOCOL, _short(exc)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise FetchError(Reason.CONNECT, _short(exc)) from exc


def _wrong_type(content_type: str, expected: frozenset[str]) -> str:
    """The detail of a content-type refusal; JSON instead of exposition text has one usual
    cause: the wrong path (trtllm-serve answers JSON statistics at /metrics)."""
    if content_type == "application/json" and expected == TEXT_TYPES:
        return JSON_NOT_EXPOSITION
    return f"{content_type[:100]} where {' or '.join(sorted(expected))} was expected"


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"
