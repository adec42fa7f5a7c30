"""Reading a running heliostat's admin API, with errors a person can act on."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class AdminError(Exception):
    """The admin API could not answer: one line naming the address and why."""


def _url(address: tuple[str, int], path: str, query: dict[str, str] | None = None) -> str:
    host, port = address
    shown = f"[{host}]" if ":" in host else host
    suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
    return f"http://{shown}:{port}{path}{suffix}"


def call(
    address: tuple[str, int],
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Any:
    """GET (or POST `body`) and decode the JSON answer. An answer with an error status and
    a JSON `error` raises AdminError with that error."""
    request = urllib.request.Request(
        _url(address, path, query),
        data=body,
        method="POST" if body is not None else "GET",
        headers={"accept": "application/json"},
    )
    host, port = address
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            detail = json.loads(raw).get("error", exc.reason)
        except (ValueError, AttributeError):
            detail = raw.decode(errors="replace").strip() or exc.reason
        if isinstance(detail, list):
            detail = "\n".join(str(line) for line in detail)
        raise AdminError(str(detail)) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach heliostat at {host}:{port}: {reason}") from None
    except ValueError:
        raise AdminError(f"{host}:{port}{path} did not answer JSON") from None
