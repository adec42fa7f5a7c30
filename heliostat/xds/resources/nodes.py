"""Which snapshot a connecting Envoy gets: nodes are grouped by region, role and port.

All gateways of one region share a view, so they share one snapshot; a node's own metadata
may move its listener to another port, which makes it a group of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format


class Role(StrEnum):
    GATEWAY = "gateway"
    SIDECAR = "sidecar"


class NodeIdentityError(ValueError):
    """Node metadata heliostat cannot act on (bad role or port); names the node."""


@dataclass(frozen=True, slots=True, order=True)
class NodeGroup:
    role: Role
    region: str | None
    listener_port: int | None = None  # None: the policy's gateway port
    # The east-west listener's port (None: the port of the region's east-west address in
    # the policy, or no such listener when the policy gives the region none).
    east_west_port: int | None = None

    @property
    def key(self) -> str:
        port = "default" if self.listener_port is None else str(self.listener_port)
        east_west = "" if self.east_west_port is None else f"/ew{self.east_west_port}"
        return f"{self.role}/{self.region or '-'}/{port}{east_west}"


def group_of(node: base_pb2.Node) -> NodeGroup:
    try:
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    except ValueError as exc:  # NaN or infinite numbers have no JSON form
        raise NodeIdentityError(f"node {node.id!r}: unreadable metadata: {exc}") from None
    role_text = str(metadata.get("role", Role.GATEWAY.value))
    try:
        role = Role(role_text)
    except ValueError:
        raise NodeIdentityError(
            f"node {node.id!r}: metadata role {role_text!r} is not one of "
            f"{', '.join(r.value for r in Role)}"
        ) from None
    region = node.locality.region or None
    return NodeGroup(
        role=role,
        region=region,
        listener_port=_port(node, metadata, "listener_port"),
        east_west_port=_port(node, metadata, "east_west_port"),
    )


def _port(node: base_pb2.Node, metadata: dict[str, object], key: str) -> int | None:
    port = metadata.get(key)
    if port is None:
        return None
    try:
        # Struct numbers are floats; a bool (`true` -> 1) or 10443.5 is not a port.
        if isinstance(port, bool) or (isinstance(port, float) and not port.is_integer()):
            raise ValueError(port)
        number: int = int(port)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        number = -1
    if not 0 < number < 65536:
        raise NodeIdentityError(
            f"node {node.id!r}: metadata {key} {port!r} is not a port (1-65535)"
        )
    return number
