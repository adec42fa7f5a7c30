"""The gRPC services: ADS, and LRS (gateway load reports), thin adapters around sans-I/O parts.

Everything that decides *what* to send lives in `sotw.py`/`delta.py`; this module only moves
requests and snapshot changes into them and responses out, and reports what happened. Load
reports go straight into `load_reports.LoadReports`, which the control loop reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc
from google.protobuf import duration_pb2

from heliostat.listen import ListenError, check_free, show
from heliostat.xds.cache.nodes import NodeGroup, NodeIdentityError, Role, group_of
from heliostat.xds.cache.snapshot import Snapshot
from heliostat.xds.grpc.load_reports import LoadReports
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamEntry, StreamRegistry
from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.events import Event, EventKind, Outcome, TypeStatus
from heliostat.xds.protocol.sotw import SotwStream

log = structlog.get_logger("heliostat.xds")

Req = TypeVar("Req", discovery_pb2.DiscoveryRequest, discovery_pb2.DeltaDiscoveryRequest)
Resp = TypeVar("Resp", discovery_pb2.DiscoveryResponse, discovery_pb2.DeltaDiscoveryResponse)


class SnapshotSource(Protocol):
    """All the server needs from whoever produces snapshots."""

    def snapshot_for(self, group: NodeGroup, node_id: str) -> Snapshot: ...

    def watch(
        self, group: NodeGroup, callback: Callable[[Snapshot], None]
    ) -> Callable[[], None]: ...


class _StreamProtocol(Protocol[Req, Resp]):  # type: ignore[misc]
    def on_request(self, request: Req) -> Outcome[Resp]: ...

    def on_snapshot(self, snapshot: Snapshot) -> Outcome[Resp]: ...

    def status(self) -> dict[str, TypeStatus]: ...


_CHANGED = object()
_CLOSED = object()


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self, source: SnapshotSource, registry: StreamRegistry, metrics: XdsMetrics
    ) -> None:
        self._source = source
        self._registry = registry
        self._metrics = metrics

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._serve("sotw", SotwStream, request_iterator, context):
            yield response

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._serve("delta", DeltaStream, request_iterator, context):
            yield response

    async def _serve(
        self,
        mode: str,
        make: Callable[[str], _StreamProtocol[Req, Resp]],
        requests: AsyncIterator[Req],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Resp]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        node = first.node
        try:
            group = group_of(node)
        except NodeIdentityError as exc:
            log.error("node rejected", node_id=node.id, error=str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        inbox: asyncio.Queue[object] = asyncio.Queue()
        protocol = make(node.id)
        entry = StreamEntry(node.id, group, mode, context.peer(), time.time(), protocol.status)
        unregister = self._registry.add(entry)
        stop_watching = self._source.watch(group, lambda _snapshot: inbox.put_nowait(_CHANGED))
        reader = asyncio.create_task(_pump(requests, inbox))
        self._metrics.streams.labels(mode).inc()
        log.info("node connected", node_id=node.id, group=group.key, mode=mode)
        try:
            outcome = protocol.on_snapshot(self._source.snapshot_for(group, node.id))
            outcome.extend(protocol.on_request(first))
            while True:
                for response in self._report(mode, node.id, outcome):
                    yield response
                item = await inbox.get()
                if item is _CLOSED:
                    return
                if item is _CHANGED:
                    outcome = protocol.on_snapshot(self._source.snapshot_for(group, node.id))
                else:
                    outcome = protocol.on_request(item)
        finally:
            reader.cancel()
            stop_watching()
            unregister()
            self._metrics.streams.labels(mode).dec()
            log.info("node disconnected", node_id=node.id, group=group.key, mode=mode)

    def _report(self, mode: str, node_id: str, outcome: Outcome[Resp]) -> list[Resp]:
        for event in outcome.events:
            self._metrics.record(mode, event)
            _log_event(mode, node_id, event)
        return outcome.responses


def _log_event(mode: str, node_id: str, event: Event) -> None:
    fields = {
        "node_id": node_id,
        "mode": mode,
        "type": getattr(event.type_url, "short", event.type_url),
        "version": event.version,
    }
    if event.kind is EventKind.NACK:
        log.warning("config rejected by node (NACK)", error=event.detail, **fields)
    elif event.kind is EventKind.HELD:
        log.info("holding change the node rejected before", detail=event.detail, **fields)
    elif event.kind is EventKind.UNKNOWN_TYPE:
        log.warning("request for a type heliostat does not serve", **fields)
    else:
        log.debug(f"xds {event.kind.value}", nonce=event.nonce, **fields)


async def _pump(requests: AsyncIterator[Any], inbox: asyncio.Queue[object]) -> None:
    """Moves requests into the inbox; a closed or broken stream ends it."""
    try:
        async for request in requests:
            inbox.put_nowait(request)
    except grpc.aio.AioRpcError as exc:
        log.debug("stream read ended", code=str(exc.code()))
    finally:
        inbox.put_nowait(_CLOSED)


class LoadReportingServer(lrs_pb2_grpc.LoadReportingServiceServicer):  # type: ignore[misc]
    """Envoy's load reporting service (LRS): gateways report what they sent where.

    On a gateway's first message heliostat answers once: report every cluster
    (`send_all_clusters`), per endpoint too (`report_endpoint_granularity`), every
    `interval()` seconds. Each report then goes into `reports` (see `load_reports`). A
    sidecar gets no answer, so it never reports: it would count the gateways' requests again.
    """

    def __init__(
        self,
        reports: LoadReports,
        interval: Callable[[], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reports = reports
        self._interval = interval
        self._clock = clock

    async def StreamLoadStats(
        self,
        request_iterator: AsyncIterator[lrs_pb2.LoadStatsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[lrs_pb2.LoadStatsResponse]:
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        node = first.node
        try:
            group = group_of(node)
        except NodeIdentityError as exc:
            log.error("load reports refused", node_id=node.id, error=str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        if group.role is not Role.GATEWAY or group.region is None:
            log.info("load reports not asked for", node_id=node.id, role=group.role.value)
            async for _ in request_iterator:  # keep the stream open; nothing to count
                pass
            return
        interval = self._interval()
        log.info("load reports asked for", node_id=node.id, region=group.region, every_s=interval)
        yield lrs_pb2.LoadStatsResponse(
            send_all_clusters=True,
            report_endpoint_granularity=True,
            load_reporting_interval=duration_pb2.Duration(
                seconds=int(interval), nanos=round((interval % 1) * 1e9)
            ),
        )
        try:
            self._reports.ingest(node.id, group.region, group.role, first, self._clock())
            async for request in request_iterator:
                self._reports.ingest(node.id, group.region, group.role, request, self._clock())
        except grpc.aio.AioRpcError as exc:
            log.debug("load report stream ended", node_id=node.id, code=str(exc.code()))
        finally:
            self._reports.forget(node.id)


def add_to_server(
    server: grpc.aio.Server, ads: AdsServer, lrs: LoadReportingServer | None = None
) -> None:
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    if lrs is not None:
        lrs_pb2_grpc.add_LoadReportingServiceServicer_to_server(lrs, server)


SERVER_OPTIONS = [("grpc.so_reuseport", 0)]
"""Options every xDS server needs: no SO_REUSEPORT, so a second heliostat on the same port is
refused instead of sharing its Envoys with the first (gRPC turns it on by default)."""


def listen(
    server: grpc.aio.Server,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> None:
    """Bind the xDS port, or raise ListenError with one line naming the address and why."""
    check_free(host, port, "xDS")
    address = show(host, port)
    try:
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    except RuntimeError:  # taken between the check and the bind: gRPC gives no reason
        raise ListenError(f"cannot listen on {address} for xDS: gRPC could not bind it") from None
