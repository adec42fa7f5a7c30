"""gRPC health checking (`grpc.health.v1.Health`) and server reflection on the xDS port.

Health answers from the same readiness probe as the admin API's `/readyz`: SERVING only
while xDS is being served and every long-lived task runs, NOT_SERVING otherwise (starting,
stopping, a task that died). It is asked for the whole server (`""`) or for a service heliostat
serves; any other service name is NOT_FOUND, as the protocol says. `Watch` sends the status
when it changes, checked every `WATCH_INTERVAL_S`.

Reflection lets grpcurl and grpc_cli list and call the services without .proto files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

ReadyProbe = Callable[[], tuple[bool, str]]
WATCH_INTERVAL_S = 1.0
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class HealthServer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, ready: ReadyProbe, services: Iterable[str]) -> None:
        self._ready = ready
        self._services = {"", *services}

    def status(self, service: str) -> int | None:
        """SERVING or NOT_SERVING for a known service, None for an unknown one."""
        if service not in self._services:
            return None
        ok, _detail = self._ready()
        serving = health_pb2.HealthCheckResponse.SERVING
        return int(serving if ok else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: int | None = -1
        while True:
            status = self.status(request.service)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(
                    status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                    if status is None
                    else status
                )
            await asyncio.sleep(WATCH_INTERVAL_S)


def add_to_server(server: grpc.aio.Server, ready: ReadyProbe, services: Iterable[str]) -> None:
    """Health and reflection for `services` (full names), themselves included."""
    names = [*services, HEALTH_SERVICE]
    health_pb2_grpc.add_HealthServicer_to_server(HealthServer(ready, names), server)
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
