"""Whether an address can be listened on, asked before a server library tries it.

gRPC's core logs a bind failure to stderr by itself and then raises a RuntimeError that names
no reason, and aiohttp raises a long OSError after the gRPC server is already up. Binding a
plain socket first gives one error with the operating system's reason (address already in
use, permission denied, cannot assign requested address) before anything has started. It
also refuses an address another process shares through SO_REUSEPORT, which gRPC would
otherwise quietly accept, splitting Envoys between two control planes.
"""

from __future__ import annotations

import os
import socket


class ListenError(Exception):
    """An address a server cannot listen on; the message is one line for the operator."""


def show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_free(host: str, port: int, purpose: str) -> None:
    """Raise ListenError unless every address `host` resolves to can be bound on `port`."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(
            f"cannot listen on {show(host, port)} for {purpose}: {reason[:1].lower()}{reason[1:]}"
        ) from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As a server does: a connection of an earlier run in TIME_WAIT is no conflict.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise ListenError(failure(host, port, purpose, exc)) from None


def failure(host: str, port: int, purpose: str, exc: OSError) -> str:
    """The one line for a bind that failed with `exc`."""
    reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return f"cannot listen on {show(host, port)} for {purpose}: {reason[:1].lower()}{reason[1:]}"
