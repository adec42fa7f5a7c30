"""What a policy change would change in the Envoys' configuration, before it is applied.

Both sides are turned into the very snapshots heliostat would serve (the translation is pure),
one per node group, and compared resource by resource: a resource whose content hash is the
same did not change, whatever the policy file's text did. For a resource that did change the
diff names where: the message fields that differ (a cluster's `outlier_detection`, a route's
timeout), and for endpoint assignments the endpoints added, removed or re-weighted. That is
the level an operator reviews a change at; the full messages are one `heliostat bootstrap`
and Envoy's config dump away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from heliostat.balance import Views
from heliostat.policy import Policy
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl
from heliostat.xds.translate import build_snapshot

KIND = {
    TypeUrl.CLUSTER: "cluster",
    TypeUrl.ENDPOINT: "endpoints",
    TypeUrl.LB_ENDPOINT: "endpoint",
    TypeUrl.LISTENER: "listener",
    TypeUrl.ROUTE: "routes",
}
MAX_DETAILS = 12  # per resource: a review names the places, it is not a dump


@dataclass(frozen=True)
class Change:
    kind: str  # cluster | endpoints | listener | routes
    name: str
    action: str  # added | removed | changed
    details: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "details": list(self.details),
        }


@dataclass(frozen=True)
class ViewDiff:
    view: str  # the node group's key
    changes: tuple[Change, ...] = ()
    error: str | None = None  # a side that cannot be built (the new policy breaks it)

    def as_json(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "changes": [c.as_json() for c in self.changes],
            "error": self.error,
        }


@dataclass(frozen=True)
class PolicyDiff:
    views: tuple[ViewDiff, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return any(v.changes or v.error for v in self.views)

    def as_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "views": [v.as_json() for v in self.views]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyDiff:
        return cls(
            tuple(
                ViewDiff(
                    v["view"],
                    tuple(
                        Change(c["kind"], c["name"], c["action"], tuple(c["details"]))
                        for c in v["changes"]
                    ),
                    v.get("error"),
                )
                for v in data["views"]
            )
        )


def gateway_groups(*policies: Policy) -> list[NodeGroup]:
    """One gateway per region of either policy, on the policy's own listener port."""
    regions = sorted({r for p in policies for r in p.spec.regions})
    return [NodeGroup(role=Role.GATEWAY, region=r) for r in regions]


def diff_policies(
    old: tuple[Policy, Views], new: tuple[Policy, Views], groups: Iterable[NodeGroup]
) -> PolicyDiff:
    """The changes per node group between serving `old` and serving `new`."""
    result = []
    for group in sorted(groups, key=lambda g: g.key):
        before = _build(old, group)
        after = _build(new, group)
        if isinstance(before, str) or isinstance(after, str):
            which = "old" if isinstance(before, str) else "new"
            result.append(ViewDiff(group.key, error=f"the {which} policy: {before or after}"))
            continue
        result.append(ViewDiff(group.key, tuple(diff_snapshots(before, after))))
    return PolicyDiff(tuple(result))


def _build(side: tuple[Policy, Views], group: NodeGroup) -> Snapshot | str:
    policy, views = side
    try:
        return build_snapshot(policy, views.for_region(group.region), group)
    except ValueError as exc:  # InconsistentSnapshot included
        return str(exc)


def diff_snapshots(before: Snapshot, after: Snapshot) -> list[Change]:
    changes: list[Change] = []
    for type_url in PUSH_ORDER:
        old, new = before.resources(type_url), after.resources(type_url)
        kind = KIND[type_url]
        for name in sorted(set(old) | set(new)):
            if name not in new:
                changes.append(Change(kind, name, "removed"))
            elif name not in old:
                changes.append(Change(kind, name, "added", _summary(new[name].message)))
            elif old[name].version != new[name].version:
                details = _differences(old[name].message, new[name].message)
                changes.append(Change(kind, name, "changed", tuple(details[:MAX_DETAILS])))
    return changes


def _summary(message: Message) -> tuple[str, ...]:
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return tuple(f"+ {a} {w}" for a, w in sorted(_endpoints(message).items()))[:MAX_DETAILS]
    return ()


def _differences(old: Message, new: Message) -> list[str]:
    if isinstance(old, endpoint_pb2.ClusterLoadAssignment) and isinstance(
        new, endpoint_pb2.ClusterLoadAssignment
    ):
        return _endpoint_differences(old, new)
    return _field_paths(old, new, "", depth=4)


def _endpoints(assignment: endpoint_pb2.ClusterLoadAssignment) -> dict[str, str]:
    """address -> 'region=R priority=P weight=W health=H' of every endpoint."""
    found = {}
    for locality in assignment.endpoints:
        for lb in locality.lb_endpoints:
            socket = lb.endpoint.address.socket_address
            health = health_check_pb2.HealthStatus.Name(lb.health_status)
            found[f"{socket.address}:{socket.port_value}"] = (
                f"region={locality.locality.region} priority={locality.priority} "
                f"weight={lb.load_balancing_weight.value} health={health}"
            )
    return found


def _endpoint_differences(
    old: endpoint_pb2.ClusterLoadAssignment, new: endpoint_pb2.ClusterLoadAssignment
) -> list[str]:
    before, after = _endpoints(old), _endpoints(new)
    lines = [f"- {a}" for a in sorted(set(before) - set(after))]
    lines += [f"+ {a} {after[a]}" for a in sorted(set(after) - set(before))]
    lines += [
        f"~ {a} {before[a]} -> {after[a]}"
        for a in sorted(set(before) & set(after))
        if before[a] != after[a]
    ]
    if old.policy != new.policy:
        lines.append("~ policy (drop_overloads)")
    if not lines:  # only what rides along, such as the reasons in the endpoints' metadata
        lines.append("~ endpoint metadata")
    return lines


def _field_paths(old: Message, new: Message, prefix: str, depth: int) -> list[str]:
    """Dotted paths of the fields that differ, descending `depth` levels; repeated messages
    are matched by their `name` when they have one, by position otherwise."""
    paths: list[str] = []
    for descriptor in new.DESCRIPTOR.fields:
        name = descriptor.name
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        path = f"{prefix}{name}"
        is_message = descriptor.message_type is not None
        if is_message and not _is_repeated(descriptor) and _is_any(a) and _is_any(b):
            inner = _unpack_pair(a, b)
            if inner is not None and depth > 0:
                paths.extend(_field_paths(*inner, f"{path}.", depth - 1) or [path])
                continue
        if depth <= 0 or not is_message or _is_map(descriptor):
            paths.append(path)
        elif _is_repeated(descriptor):
            paths.extend(_repeated_paths(list(a), list(b), path, depth - 1))
        elif old.HasField(name) and new.HasField(name):
            paths.extend(_field_paths(a, b, path + ".", depth - 1) or [path])
        else:
            paths.append(path)
    return paths


def _is_any(message: Message) -> bool:
    return bool(message.DESCRIPTOR.full_name == "google.protobuf.Any")


def _unpack_pair(a: Any, b: Any) -> tuple[Message, Message] | None:
    """Both sides of a typed_config, decoded, when they are of one known type."""
    if a.type_url != b.type_url:
        return None
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(a.TypeName())
    except KeyError:
        return None
    cls = message_factory.GetMessageClass(descriptor)
    return cls.FromString(a.value), cls.FromString(b.value)


def _repeated_paths(old: list[Message], new: list[Message], path: str, depth: int) -> list[str]:
    def key(index: int, item: Message) -> str:
        named = getattr(item, "name", "")
        return named if isinstance(named, str) and named else str(index)

    before = {key(i, m): m for i, m in enumerate(old)}
    after = {key(i, m): m for i, m in enumerate(new)}
    paths = [f"{path}[{k}] removed" for k in before if k not in after]
    paths += [f"{path}[{k}] added" for k in after if k not in before]
    for k in after:
        if k in before and before[k] != after[k]:
            paths.extend(_field_paths(before[k], after[k], f"{path}[{k}].", depth) or [path])
    return paths


def _is_repeated(descriptor: Any) -> bool:
    repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 6; `label` before
    if repeated is None:
        repeated = descriptor.label == descriptor.LABEL_REPEATED
    return bool(repeated)


def _is_map(descriptor: Any) -> bool:
    message_type = descriptor.message_type
    return bool(_is_repeated(descriptor) and message_type.GetOptions().map_entry)


def render(diff: PolicyDiff) -> str:
    """Readable lines: one block per view that changes, '+' added, '-' removed, '~' changed."""
    lines: list[str] = []
    for view in diff.views:
        if not view.changes and not view.error:
            continue
        lines.append(f"view {view.view}:")
        if view.error:
            lines.append(f"  ! {view.error}")
        sign = {"added": "+", "removed": "-", "changed": "~"}
        for change in view.changes:
            lines.append(f"  {sign[change.action]} {change.kind} {change.name}")
            lines.extend(f"      {detail}" for detail in change.details)
    if not lines:
        return "no difference\n"
    return "\n".join(lines) + "\n"
