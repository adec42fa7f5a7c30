"""The gRPC services: ADS, and LRS (gateway load reports), thin adapters around sans-I/O parts.

Everything that decides *what* to send lives in `sotw.py`/`delta.py`; this module only moves
requests and snapshot changes into them and responses out, and reports what happened. Load
reports go straight into `load_reports.LoadReports`, which the control loop reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.load_stats.v3 import lrs_pb2, lrs_pb2_grpc
from google.protobuf import duration_pb2

from heliostat.listen import ListenError, check_free, show
from heliostat.security.limits import MAX_REQUEST_BYTES, LogThrottle, NodeBuckets, StreamLimits
from heliostat.xds.grpc.load_reports import LoadReports
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamEntry, StreamRegistry
from heliostat.xds.grpc.settle import SettleGate, StreamSettling
from heliostat.xds.grpc.wire import WireBytes, passthrough
from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.events import Event, EventKind, Outcome, TypeStatus
from heliostat.xds.protocol.sotw import SotwStream
from heliostat.xds.resources.nodes import NodeGroup, NodeIdentityError, Role, group_of
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl

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

    @property
    def responses(self) -> int: ...

    def withhold(self, types: frozenset[TypeUrl]) -> Outcome[Resp]: ...

    def in_flight(self) -> bool: ...

    def settle_due(self) -> bool: ...

    def settle(self) -> Outcome[Resp]: ...


_CHANGED = object()
_CLOSED = object()
_SETTLE = object()
_REFUSED = object()  # the reader took a request over the node's rate: the handler aborts


class _Failed:
    """An exception the reader met handling a request, raised again by the stream's handler."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        source: SnapshotSource,
        registry: StreamRegistry,
        metrics: XdsMetrics,
        *,
        authorize: Authorize | None = None,
        limits: StreamLimits | None = None,
        withheld: Callable[[], frozenset[TypeUrl]] = frozenset,
        settle: SettleGate | None = None,
    ) -> None:
        self._source = source
        # Responses that serve only a later reconnect wait for every change to be out
        # (heliostat.xds.grpc.settle).
        self._settle = settle or SettleGate()
        # Types not to send for now (endpoints before a restarted heliostat's first signal
        # round); read on every snapshot notice, which is how their release arrives.
        self._withheld = withheld
        self._registry = registry
        self._metrics = metrics
        # Called with the node's group on every ACK (convergence tracking).
        self.on_ack: Callable[[NodeGroup], None] | None = None
        self._authorize = authorize
        self._limits = limits = limits or StreamLimits()
        # Requests per node, whatever stream they come on; refusals logged sparingly.
        self._buckets = NodeBuckets(limits.rate, limits.burst)
        self.refusals = LogThrottle(limits.log_every_s)
        # Responses go out as bytes made once per response object, not once per stream.
        self._wire = WireBytes()
        # Pushes, ACKs and stale requests are logged at debug level: two per stream and
        # change, and each call through structlog's lazy proxy binds a logger first, so
        # whether they would be written is decided once (serve configures logging first).
        self._log_every_event = _debug_enabled()
        # Stopping (`settle_before_stop`): each stream's inbox, and the streams that still
        # have something to settle or a response unanswered.
        self._inboxes: set[asyncio.Queue[object]] = set()
        self._stopping = False
        self._unsettled: set[asyncio.Queue[object]] = set()
        self._all_settled = asyncio.Event()

    async def settle_before_stop(self, longest_s: float) -> int:
        """Settle every delta node's LEDS assignments now, whatever its quiet, and wait
        until each node ACKed (or `longest_s`); returns how many streams did not finish.

        heliostat is about to stop (SIGTERM: a deploy, a rolling restart, a planned HA
        failover), so every Envoy is about to reconnect, to this heliostat restarted or to
        another one, listing its assignments: those still pending (endpoints that moved
        within `--leds-settle-after`) would have every endpoint they cover sent again
        (heliostat.xds.protocol.held). Settled here, a planned restart re-sends nothing
        whenever it comes. New changes are not sent meanwhile: the control loop has
        stopped."""
        self._stopping = True
        self._unsettled = set(self._inboxes)
        for inbox in self._inboxes:
            inbox.put_nowait(_SETTLE)  # wakes it: `_stop_step` does the rest
        if self._unsettled:
            self._all_settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), longest_s)
        return len(self._unsettled)

    def _stop_step(
        self, inbox: asyncio.Queue[object], protocol: _StreamProtocol[Any, Resp]
    ) -> Outcome[Resp]:
        """Before each wait of a stream while heliostat is stopping: what is due to settle
        now (again after each ACK), and whether the stream is done."""
        outcome = protocol.settle()
        if not protocol.settle_due() and not protocol.in_flight():
            self._forget_for_stop(inbox)
        return outcome

    def _forget_for_stop(self, inbox: asyncio.Queue[object]) -> None:
        """`inbox`'s stream has nothing left to settle or to hear back, or it ended."""
        if inbox not in self._unsettled:
            return
        self._unsettled.discard(inbox)
        if not self._unsettled:
            self._all_settled.set()

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        async for response in self._serve("sotw", SotwStream, request_iterator, context):
            yield response

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        async for response in self._serve("delta", DeltaStream, request_iterator, context):
            yield response

    async def _serve(
        self,
        mode: str,
        make: Callable[[str], _StreamProtocol[Req, Resp]],
        requests: AsyncIterator[Req],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        node = first.node
        group = await _admit(node, self._authorize, context, "node_rejected", self.refusals)
        if group is None:
            self._metrics.refused.labels("identity").inc()
            return
        limits = self._limits
        if len(self._registry) >= limits.max_streams:
            self._metrics.refused.labels("streams").inc()
            _log_refusal(
                self.refusals,
                "stream_refused",
                node.id,
                reason="too many streams",
                open=len(self._registry),
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"heliostat serves at most {limits.max_streams} xDS streams; retry later",
            )
            return
        if not self._buckets.take(node.id):  # the first request: a node reconnecting in a loop
            self._metrics.refused.labels("rate").inc()
            reason = (
                f"node {node.id!r} sent more than {limits.rate:g} requests/s "
                f"(burst {limits.burst}); retry later"
            )
            _log_refusal(self.refusals, "stream_refused", node.id, reason="request rate")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
            return
        inbox: asyncio.Queue[object] = asyncio.Queue()
        protocol = make(node.id)
        entry = StreamEntry(node.id, group, mode, context.peer(), time.time(), protocol.status)
        entry.responses = lambda: protocol.responses
        unregister = self._registry.add(entry)
        stop_watching = self._source.watch(group, lambda _snapshot: inbox.put_nowait(_CHANGED))
        settling = StreamSettling(self._settle, protocol, lambda: inbox.put_nowait(_SETTLE))

        handle = self._reader(mode, node.id, group, protocol, settling, inbox)
        reader = asyncio.create_task(_pump(requests, inbox, handle))
        self._metrics.streams.labels(mode).inc()
        log.info("node_connected", node_id=node.id, group=group.key, mode=mode)
        self._inboxes.add(inbox)
        try:
            outcome = protocol.withhold(self._withheld())
            outcome.extend(protocol.on_snapshot(self._source.snapshot_for(group, node.id)))
            outcome.extend(protocol.on_request(first))
            while True:
                if self._stopping:  # nothing built on the per-message path otherwise
                    outcome.extend(self._stop_step(inbox, protocol))
                settling.step()
                for response in self._report(mode, node.id, group, outcome):
                    yield self._wire.of(response)
                item = await inbox.get()
                if item is _CLOSED:
                    return
                if item is _SETTLE:
                    settling.woken()
                    outcome = protocol.settle()
                    continue
                if item is _CHANGED:
                    outcome = protocol.on_snapshot(self._source.snapshot_for(group, node.id))
                    outcome.extend(protocol.withhold(self._withheld()))
                    continue
                if isinstance(item, Outcome):  # what a request the reader handled brings
                    outcome = item
                    continue
                outcome = await self._from_reader(item, node.id, protocol, context)
        finally:
            self._inboxes.discard(inbox)
            self._forget_for_stop(inbox)  # not waited for once gone
            reader.cancel()
            settling.close()
            stop_watching()
            unregister()
            self._metrics.streams.labels(mode).dec()
            log.info("node_disconnected", node_id=node.id, group=group.key, mode=mode)

    async def _from_reader(
        self,
        item: object,
        node_id: str,
        protocol: _StreamProtocol[Any, Resp],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Outcome[Resp]:
        """What the handler does with what the reader left it: a request it may not take
        (over the node's rate: the stream is aborted, which raises), an error the reader
        met (raised), or a request to handle here (while stopping)."""
        if isinstance(item, _Failed):
            raise item.error
        limits = self._limits
        if item is _REFUSED or not self._buckets.take(node_id):
            self._metrics.refused.labels("rate").inc()
            reason = (
                f"node {node_id!r} sent more than {limits.rate:g} requests/s "
                f"(burst {limits.burst}); stream closed"
            )
            _log_refusal(
                self.refusals, "stream_ended", node_id, reason="request rate", error=reason
            )
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
        return protocol.on_request(item)

    def _reader(
        self,
        mode: str,
        node_id: str,
        group: NodeGroup,
        protocol: _StreamProtocol[Req, Resp],
        settling: StreamSettling,
        inbox: asyncio.Queue[object],
    ) -> Callable[[Req], None]:
        """What handles a stream's requests as they are read (`_pump`): an ACK, most of
        them, needs nothing of the stream's handler, which is not woken for it (a push to
        1,000 streams is 1,000 ACKs). What a request brings to send goes to the inbox, and
        so does whatever only the handler may do (abort the stream, settle while stopping)."""

        def handle(request: Req) -> None:
            if self._stopping:  # `_stop_step` runs in the handler's loop
                inbox.put_nowait(request)
                return
            if not self._buckets.take(node_id):
                inbox.put_nowait(_REFUSED)
                return
            outcome = protocol.on_request(request)
            if outcome.responses:
                inbox.put_nowait(outcome)
                return
            settling.step()
            self._report(mode, node_id, group, outcome)

        return handle

    def _report(
        self, mode: str, node_id: str, group: NodeGroup, outcome: Outcome[Resp]
    ) -> list[Resp]:
        acked = False
        for event in outcome.events:
            self._metrics.record(mode, event)
            if self._log_every_event or event.kind not in _DEBUG_EVENTS:
                _log_event(mode, node_id, event)
            acked = acked or event.kind is _ACK
        if acked and self.on_ack is not None:
            self.on_ack(group)
        return outcome.responses


def _log_refusal(refusals: LogThrottle, event: str, node_id: str, **fields: object) -> None:
    """Log a refusal unless one like it was logged within the throttle's window; the next
    one logged says how many were not."""
    unlogged = refusals.admit(event, node_id)
    if unlogged is None:
        return
    if unlogged:
        fields["not_logged_since_last"] = unlogged
    log.error(event, node_id=node_id, **fields)


_DEBUG_EVENTS = frozenset({EventKind.SENT, EventKind.ACK, EventKind.STALE})
_ACK = EventKind.ACK


def _debug_enabled() -> bool:
    check = getattr(log.bind(), "is_enabled_for", None)
    return True if check is None else bool(check(logging.DEBUG))


def _log_event(mode: str, node_id: str, event: Event) -> None:
    fields = {
        "node_id": node_id,
        "mode": mode,
        "type": getattr(event.type_url, "short", event.type_url),
        "version": event.version,
    }
    if event.kind is EventKind.NACK:
        log.warning("nack", error=event.detail, **fields)
    elif event.kind is EventKind.HELD:
        log.info("push_held", detail=event.detail, **fields)
    elif event.kind is EventKind.UNKNOWN_TYPE:
        log.warning("unknown_type", **fields)
    else:  # sent -> push; ack; stale
        name = "push" if event.kind is EventKind.SENT else event.kind.value
        log.debug(name, nonce=event.nonce, **fields)


async def _pump(
    requests: AsyncIterator[Any], inbox: asyncio.Queue[object], handle: Callable[[Any], None]
) -> None:
    """Hands each request to `handle` as it is read; a closed or broken stream ends it, and
    an error in `handle` goes to the inbox, for the stream's handler to raise."""
    try:
        async for request in requests:
            handle(request)
    except grpc.aio.AioRpcError as exc:
        log.debug("stream_read_ended", code=str(exc.code()))
    except Exception as exc:  # the stream's handler ends the stream with it
        inbox.put_nowait(_Failed(exc))
        return
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
        *,
        authorize: Authorize | None = None,
        refusals: LogThrottle | None = None,
    ) -> None:
        self._reports = reports
        self._interval = interval
        self._clock = clock
        self._authorize = authorize
        self._refusals = refusals or LogThrottle(StreamLimits().log_every_s)

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
        group = await _admit(node, self._authorize, context, "load_reports_refused", self._refusals)
        if group is None:
            return
        if group.role is not Role.GATEWAY or group.region is None:
            log.info("load_reports_not_asked", node_id=node.id, role=group.role.value)
            async for _ in request_iterator:  # keep the stream open; nothing to count
                pass
            return
        interval = self._interval()
        log.info("load_reports_asked", node_id=node.id, region=group.region, every_s=interval)
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
            log.debug("load_reports_ended", node_id=node.id, code=str(exc.code()))
        finally:
            self._reports.forget(node.id)


Authorize = Callable[[str, str, Mapping[str, Iterable[bytes]]], str | None]
"""(node id, region, the stream's TLS auth context) -> None if the node may speak, else why
not (heliostat.security.tls.NodeAuthorizer)."""


async def _admit(
    node: Any,
    authorize: Authorize | None,
    context: grpc.aio.ServicerContext[Any, Any],
    malformed_event: str,
    refusals: LogThrottle,
) -> NodeGroup | None:
    """The node group a stream's first request claims, or None after aborting the stream:
    INVALID_ARGUMENT when the node's identity is malformed, PERMISSION_DENIED when the
    peer's certificate does not back the node id and region it claims. ADS and LRS admit
    their streams the same way. Refusals are logged through `refusals`, so a client
    refused in a loop gives one line per window, not one per attempt."""
    try:
        group = group_of(node)
    except NodeIdentityError as exc:
        _log_refusal(refusals, malformed_event, node.id, error=str(exc))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return None
    if authorize is None:
        return group
    refused = authorize(node.id, node.locality.region, context.auth_context())
    if refused is None:
        return group
    _log_refusal(refusals, "node_refused", node.id, peer=context.peer(), error=refused)
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
    return None


ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def add_to_server(
    server: grpc.aio.Server, ads: AdsServer, lrs: LoadReportingServer | None = None
) -> None:
    """ADS as the generated `add_AggregatedDiscoveryServiceServicer_to_server` registers
    it, except that responses arrive serialized (`wire`): shared by every stream."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            ads.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=passthrough,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            ads.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=passthrough,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))
    server.add_registered_method_handlers(ADS_SERVICE, handlers)  # type: ignore[attr-defined]
    if lrs is not None:
        lrs_pb2_grpc.add_LoadReportingServiceServicer_to_server(lrs, server)


# How long gRPC core keeps a new stream queued for the Python server before cancelling it
# (its default is 30 s).
UNREQUESTED_WAIT_S = 300


def server_options(
    max_request_bytes: int = MAX_REQUEST_BYTES, max_streams: int = StreamLimits().max_streams
) -> list[tuple[str, int]]:
    """Options every xDS server needs: no SO_REUSEPORT, so a second heliostat on the same
    port is refused instead of sharing its Envoys with the first (gRPC turns it on by
    default), and the largest request it reads.

    And room for a fleet that connects at once (every Envoy after a restart of heliostat):
    gRPC core queues a new stream until the Python server takes it, and cancels what is
    beyond `grpc.server.max_pending_requests` (default 1,000) while the event loop is busy
    answering the first ones. Measured: of 2,500 streams opened at once, 200-430 ended at
    the client with `INTERNAL: Internal error from Core` (the cancelled stream's next
    write) and never reached heliostat; the fanout benchmark's 5,000-stream case failed
    on it. heliostat bounds its streams itself (`StreamLimits.max_streams`, refused with
    RESOURCE_EXHAUSTED and a reason), so the queue may hold as many. gRPC also cancels a
    stream left queued for 30 s: 5,000 gateways subscribing at once on a loaded machine
    took serve 35 s to take (1,100 of 2,500 in one client process cancelled at 30 s), so
    it may wait `UNREQUESTED_WAIT_S`; an Envoy cancelled there would only reconnect and
    queue again."""
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.server.max_pending_requests", max_streams),
        ("grpc.server.max_pending_requests_hard_limit", max_streams),
        ("grpc.server_max_unrequested_time_in_server", UNREQUESTED_WAIT_S),
    ]


SERVER_OPTIONS = server_options()


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
