"""Fixtures for the simulator tests: fleets on free loopback ports, always stopped afterwards."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from heliostat.sim import Fleet, ReplicaConfig, RttFn


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (and that we released again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def local_address() -> str:
    return f"127.0.0.1:{free_port()}"


FleetFactory = Callable[..., Awaitable[Fleet]]


@pytest.fixture
async def make_fleet() -> AsyncIterator[FleetFactory]:
    """``await make_fleet(dict(region=...), ..., rtt_ms=fn)``: started fleet on free ports."""
    fleets: list[Fleet] = []

    async def factory(*overrides: dict[str, Any], rtt_ms: RttFn | None = None) -> Fleet:
        configs = []
        for extra in overrides or ({},):
            knobs: dict[str, Any] = {"speed": 20.0, **extra}
            configs.append(ReplicaConfig(address=local_address(), **knobs))
        fleet = Fleet(configs, rtt_ms)
        fleets.append(fleet)
        await fleet.start()
        return fleet

    yield factory
    for fleet in fleets:
        await fleet.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
