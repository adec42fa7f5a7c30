"""Client Status Discovery Service: every connected node's config and sync state, in the
standard shape (`envoy.service.status.v3`), so istioctl-style and Envoy's own tooling can
read what heliostat serves without knowing heliostat.

For each connected node and resource type it reports the resources of the node's current
snapshot (what heliostat wants the node to have; filtered to the names the node subscribed
to), with the type's sync state: SYNCED when the node ACKed the version last sent, STALE
while an answer is outstanding, ERROR when its last answer was a NACK (the error in
`error_state`), NOT_SENT before anything was sent. `exclude_resource_contents` leaves the
resources' bodies out. Nodes are selected by `node_matchers` on the node id (exact, prefix,
suffix, contains, regex) or by `node.id`; an empty request selects every node.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2
from google.protobuf import timestamp_pb2

from heliostat.xds.grpc.registry import StreamEntry, StreamRegistry
from heliostat.xds.protocol.events import TypeStatus
from heliostat.xds.resources.nodes import NodeGroup
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER

SnapshotLookup = Callable[[NodeGroup], Snapshot | None]


def _matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")

    def fold(s: str) -> str:
        return s.lower() if matcher.ignore_case else s

    text = fold(value)

    if kind == "exact":
        return text == fold(matcher.exact)
    if kind == "prefix":
        return text.startswith(fold(matcher.prefix))
    if kind == "suffix":
        return text.endswith(fold(matcher.suffix))
    if kind == "contains":
        return fold(matcher.contains) in text
    if kind == "safe_regex":
        try:
            return re.fullmatch(matcher.safe_regex.regex, value) is not None
        except re.error:
            return False
    return True  # no pattern: matches anything


def selected(entry: StreamEntry, request: csds_pb2.ClientStatusRequest) -> bool:
    if request.HasField("node") and request.node.id and request.node.id != entry.node_id:
        return False
    matchers: Sequence[node_pb2.NodeMatcher] = request.node_matchers
    return not matchers or any(
        not m.HasField("node_id") or _matches(m.node_id, entry.node_id) for m in matchers
    )


def _status(status: TypeStatus) -> tuple[int, int]:
    """(ConfigStatus, ClientResourceStatus) of one type of one node."""
    if not status.sent_version:
        return csds_pb2.NOT_SENT, dump_pb2.REQUESTED
    if status.sent_version == status.acked_version:
        return csds_pb2.SYNCED, dump_pb2.ACKED
    if status.last_rejection is not None and status.last_rejection.version == status.sent_version:
        return csds_pb2.ERROR, dump_pb2.NACKED
    return csds_pb2.STALE, dump_pb2.REQUESTED


def client_config(
    entry: StreamEntry, snapshot: Snapshot | None, with_contents: bool
) -> csds_pb2.ClientConfig:
    node = base_pb2.Node(id=entry.node_id)
    if entry.group.region:
        node.locality.region = entry.group.region
    node.metadata.update({"role": entry.group.role.value, "xds_mode": entry.mode})
    config = csds_pb2.ClientConfig(node=node)
    statuses = entry.status()
    for type_url in PUSH_ORDER:
        status = statuses.get(type_url.short)
        if status is None:
            continue
        config_status, client_status = _status(status)
        resources = snapshot.resources(type_url) if snapshot is not None else {}
        for name in sorted(resources):
            resource = resources[name]
            item = csds_pb2.ClientConfig.GenericXdsConfig(
                type_url=type_url.value,
                name=name,
                version_info=status.acked_version or status.sent_version,
                config_status=config_status,
                client_status=client_status,
            )
            if with_contents:
                item.xds_config.CopyFrom(resource.packed)
            rejection = status.last_rejection
            if config_status == csds_pb2.ERROR and rejection is not None:
                item.error_state.details = rejection.error
                item.error_state.version_info = rejection.version
                item.error_state.last_update_attempt.CopyFrom(_timestamp(rejection.at))
            config.generic_xds_configs.append(item)
    return config


def _timestamp(at: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


class ClientStatusServer(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, registry: StreamRegistry, snapshots: SnapshotLookup) -> None:
        self._registry = registry
        self._snapshots = snapshots

    def answer(self, request: csds_pb2.ClientStatusRequest) -> csds_pb2.ClientStatusResponse:
        with_contents = not request.exclude_resource_contents
        return csds_pb2.ClientStatusResponse(
            config=[
                client_config(entry, self._snapshots(entry.group), with_contents)
                for entry in self._registry.entries()
                if selected(entry, request)
            ]
        )

    async def FetchClientStatus(
        self, request: csds_pb2.ClientStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> csds_pb2.ClientStatusResponse:
        return self.answer(request)

    async def StreamClientStatus(
        self,
        request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in request_iterator:
            yield self.answer(request)


def add_to_server(server: grpc.aio.Server, csds: ClientStatusServer) -> None:
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(csds, server)
