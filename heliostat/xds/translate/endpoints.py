"""ClusterLoadAssignments: a view's localities, priorities, weights and health for Envoy.

An assignment is assembled as serialized bytes from cached parts rather than built as one
message and serialized whole: a tick's cost then follows what changed, not the fleet's size.
The protobuf wire format allows it: a message's fields are written in field-number order
(deterministic serialization), and a repeated message field is its entries written one after
the other, each as tag, length, bytes. So an assignment is its `cluster_name`, then every
locality's bytes as an `endpoints` entry, then its `policy`; a locality is its `locality`,
every endpoint's bytes as an `lb_endpoints` entry, then its weight and priority. Each part is
serialized by protobuf itself; tests/xds/translate/test_eds_bytes.py checks the joins byte for byte
against building and serializing the whole message.

Each endpoint carries only a short reason code in its metadata (`heliostat.wire`), not its
full explanation, and a plainly healthy one (`ok`) none: the explanation made 81% of EDS
bytes, and every byte of an assignment is sent again to every subscribed Envoy whenever any
one of its endpoints changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress, repeat
from operator import is_, is_not
from typing import cast

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.balance.view import ReasonValue
from heliostat.wire import (
    DROP_CATEGORY,
    ENDPOINT_REASON_CODES,
    ENDPOINT_REASON_KEY,
    METADATA_NAMESPACE,
    NEAR_REASON_CODE,
    PLAIN_REASON_CODE,
    RAMP_REASON_SUFFIX,
)
from heliostat.xds.resources.snapshot import Resource
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import eds_wire
from heliostat.xds.translate.memo import Slot, TranslationMemo

_HEALTH = {
    Health.HEALTHY: health_check_pb2.HEALTHY,
    Health.DEGRADED: health_check_pb2.DEGRADED,
    Health.UNHEALTHY: health_check_pb2.UNHEALTHY,
    Health.DRAINING: health_check_pb2.DRAINING,
}

# Encoded LbEndpoint.metadata by reason code: a pure function of the code, and codes are
# few (states, the near band, a ramp), so each is encoded once; the bound only guards
# against a law that would invent codes without end. A plainly healthy endpoint has none.
# Encoded LbEndpoint.metadata by (reason code, region label or None), few of both: a plainly
# healthy endpoint without a label carries none.
_PLAIN: tuple[str, str | None] = (PLAIN_REASON_CODE, None)
_METADATA: dict[tuple[str, str | None], bytes | None] = {_PLAIN: b""}
_METADATA_LIMIT = 256

# The east-west hop's subsets (`east_west.py`): while a policy has east-west regions every
# endpoint carries its region under Envoy's subset namespace, and a rescuer's east-west route
# matches its own (`clusters.add_region_subsets` subsets by the same key).
SUBSET_NAMESPACE = "envoy.lb"
REGION_KEY = "region"

# Reason codes by the identity of the reason mapping (pinned by the value, so an id is never
# a recycled one): the law shares one mapping per reason content (`balance.endpoints`), so
# a fleet's endpoints that moved carry a few hundred of them. A pure function of the
# mapping, emptied when it outgrows _CODES_LIMIT: it can only be too small, never wrong.
_CODES: dict[int, tuple[Mapping[str, ReasonValue], str]] = {}
_CODES_LIMIT = 1 << 14

# Tag of field 2 with wire type 2 (length-delimited): `ClusterLoadAssignment.endpoints` and
# `LocalityLbEndpoints.lb_endpoints` are both field 2.
_FIELD_2 = b"\x12"


def assignment_resource(view: ClusterView, memo: TranslationMemo | None = None) -> Resource:
    """The view's ClusterLoadAssignment, serialized and hashed; the same Resource object
    while its localities hold, so unchanged assignments cost a lookup in `memo` (a fresh,
    empty one when none is given: the same bytes, built from scratch)."""
    if memo is None:
        memo = TranslationMemo()
    scale = locality_weight_scale(view)
    localities = [_locality(locality, scale, memo, view.name) for locality in view.localities]
    key = (view.name, view.drop_overload_percent, tuple(map(id, localities)))
    hit = memo.assignments.get(key)
    if hit is not None:
        return hit[1]
    head = endpoint_pb2.ClusterLoadAssignment(cluster_name=view.name)
    tail = endpoint_pb2.ClusterLoadAssignment()
    add_drop_policy(tail, view)
    parts = [_serialize(head)]
    for locality in localities:
        parts += (_FIELD_2, _varint(len(locality)), locality)
    parts.append(_serialize(tail))
    resource = Resource.of_payload(
        TypeUrl.ENDPOINT, view.name, b"".join(parts), endpoint_pb2.ClusterLoadAssignment
    )
    memo.assignments.put(key, (localities, resource))
    return resource


def locality_weight_scale(view: ClusterView) -> int:
    """What every locality weight of the view is multiplied by.

    Envoy 1.40 hands an EDS update to its workers only when hosts, locality weights or the
    overprovisioning factor change: a new drop_overloads alone stays on the main thread
    (config_dump shows it, requests never see it). Scaling every locality weight by
    (1000 + tenths of a percent) keeps the split identical and makes each new drop
    percentage (published in tenths of a percent) an update."""
    tenths = round(view.drop_overload_percent * 10)
    return 1000 + tenths if tenths > 0 else 1


def add_drop_policy(assignment: endpoint_pb2.ClusterLoadAssignment, view: ClusterView) -> None:
    """The view's refusal as the assignment's one drop_overloads entry (none at 0%)."""
    if view.drop_overload_percent > 0:
        assignment.policy.drop_overloads.append(
            endpoint_pb2.ClusterLoadAssignment.Policy.DropOverload(
                category=DROP_CATEGORY,
                drop_percentage=percent_pb2.FractionalPercent(
                    numerator=round(view.drop_overload_percent * 10_000),
                    denominator=percent_pb2.FractionalPercent.MILLION,
                ),
            )
        )


def locality_tail(
    locality: LocalityView, scale: int
) -> endpoint_components_pb2.LocalityLbEndpoints:
    """A locality's fields after its endpoints: priority, weight and explanation."""
    tail = endpoint_components_pb2.LocalityLbEndpoints(priority=locality.priority)
    if locality.weight is not None:
        tail.load_balancing_weight.CopyFrom(wrappers_pb2.UInt32Value(value=locality.weight * scale))
    if locality.reason:  # field 9, after priority (5): still in field-number order
        explanation = struct_pb2.Struct()
        explanation.update({k: v for k, v in locality.reason.items() if v is not None})
        tail.metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(explanation)
    return tail


def lb_endpoint_bytes(view: EndpointView, memo: TranslationMemo) -> bytes:
    """The endpoint's serialized LbEndpoint: the same bytes its EDS entry holds (from
    `memo` when this round or the last already encoded this view)."""
    hit = memo.entries.get(id(view))
    entry = hit[1] if hit is not None else _entry(view, memo)[1]
    start = 1  # after the one-byte tag, skip the length varint
    while entry[start] & 0x80:
        start += 1
    return entry[start + 1 :]


def load_assignment(view: ClusterView) -> endpoint_pb2.ClusterLoadAssignment:
    """The view's ClusterLoadAssignment as a message (decoded from its bytes)."""
    message = assignment_resource(view).message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    return message


def _locality(locality: LocalityView, scale: int, memo: TranslationMemo, cluster: str) -> bytes:
    """A locality's `endpoints` entry: the same bytes object while its content holds, so
    the assignment around it is found in `memo.assignments` by identity."""
    members = _members(locality.endpoints, memo, (cluster, locality.region))
    key = (
        locality.region,
        locality.priority,
        locality.weight,
        scale,
        id(members),  # pinned by the value
        tuple(sorted(locality.reason.items())) if locality.reason else (),
    )
    hit = memo.localities.get(key)
    if hit is not None:
        return hit[1]
    head = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region=locality.region)
    )
    built = b"".join((_serialize(head), members, _serialize(locality_tail(locality, scale))))
    memo.localities.put(key, (members, built))
    return built


def _members(views: tuple[EndpointView, ...], memo: TranslationMemo, slot: Slot) -> bytes:
    """The locality's `lb_endpoints` entries joined: by the tuple's identity when this
    tuple was joined before, else from what `slot` (the cluster and region this locality
    is for) joined last, re-encoding only the endpoints whose view is new.

    The law hands back a new tuple for a region whenever one of its endpoints changed, with
    the endpoints in the same order: comparing it with the slot's last tuple position by
    position (in C) finds the changed ones, and the rest keep their bytes without a lookup
    each. The comparison is by identity, so any earlier tuple is a correct base; the slot
    only makes it a close one. One endpoint gone and another come in the same round shift
    those between them by a place: when the first changed position shows that, the shifted
    ones are found in the last tuple by identity, not encoded again."""
    hit = memo.member_tuples.get(id(views))
    if hit is not None:
        return hit[1]
    last = memo.slots.get(slot)
    if last is not None and len(last[0]) == len(views):
        before, entries, joined = last
        changed = list(compress(range(len(views)), map(is_not, before, views)))
        if changed:
            entries = entries.copy()
            moved = [views[index] for index in changed]
            keys = list(map(id, moved))
            hits = memo.entries.this_round(keys)
            shifted: dict[int, bytes] = {}
            first = changed[0]
            if first + 1 < len(views) and (
                views[first] is before[first + 1] or views[first + 1] is before[first]
            ):  # one endpoint gone, another come: those between moved, found by identity
                shifted = dict(zip(map(id, before), last[1], strict=True))
            for index, view, key, entry in zip(changed, moved, keys, hits, strict=True):
                if entry is not None:
                    entries[index] = entry[1]
                else:
                    kept = shifted.get(key)
                    entries[index] = kept if kept is not None else _entry(view, memo)[1]
            joined = b"".join(entries)
    else:  # endpoints came or went (or a first round): find each by its view's identity
        ids = tuple(map(id, views))
        found: list[bytes | None]
        if last is not None:  # the last tuple pins the ids it is keyed by while in use
            known = dict(zip(map(id, last[0]), last[1], strict=True))
            found = list(map(known.get, ids))
        else:
            found = [None if e is None else e[1] for e in memo.entries.get_many(ids)]
        if None in found:
            for index in compress(range(len(found)), map(is_, found, repeat(None))):
                found[index] = _entry_bytes(views[index], memo)
        entries = cast(list[bytes], found)  # every None was filled
        joined = b"".join(entries)
    memo.slots.put(slot, (views, entries, joined))
    memo.member_tuples.put(id(views), (views, joined))  # this tuple pins its id
    return joined


def _entry_bytes(view: EndpointView, memo: TranslationMemo) -> bytes:
    """The endpoint's entry from this round or the last, else newly encoded."""
    hit = memo.entries.get(id(view))
    return hit[1] if hit is not None else _entry(view, memo)[1]


def _entry(view: EndpointView, memo: TranslationMemo) -> tuple[EndpointView, bytes]:
    """Encode one endpoint and remember its entry. (An id found in `memo.entries` is that
    same object, never a recycled id: the entry pins its view while it lives.)

    Every changed endpoint of the fleet comes through here on every tick: the parts come
    from tables (metadata by reason code, address and health, weight) and are joined once,
    with the entry's tag and length, into one new bytes object."""
    reason = view.reason
    known = _CODES.get(id(reason))
    if known is not None and known[0] is reason:
        code = known[1]
    else:
        code = reason_code(reason)
        if len(_CODES) >= _CODES_LIMIT:
            _CODES.clear()
        _CODES[id(reason)] = (reason, code)
    weight = view.weight if view.weight > 1 else 1
    metadata = _metadata_field(code, view.region if memo.region_labels else None)
    head = _head(view)
    weight_field = (
        _WEIGHT_FIELDS[weight] if weight < _WEIGHTS_KEPT else eds_wire.weight_field(weight)
    )
    if metadata is not None and head is not None and weight_field is not None:
        size = len(head) + len(metadata) + len(weight_field)
        tag = bytes((0x12, size)) if size < 0x80 else _FIELD_2 + _varint(size)
        entry = b"".join((tag, head, metadata, weight_field))
    else:  # beyond what eds_wire writes: protobuf checks (and may refuse) it
        encoded = _serialize(_build_endpoint(view, labelled=memo.region_labels))
        entry = _FIELD_2 + _varint(len(encoded)) + encoded
    pinned = (view, entry)
    memo.entries.put(id(view), pinned)
    return pinned


# LbEndpoint.load_balancing_weight fields for the weights heliostat publishes (a few hundred
# at most), written once by eds_wire.
_WEIGHTS_KEPT = 1024
_WEIGHT_FIELDS = tuple(eds_wire.weight_field(weight) for weight in range(_WEIGHTS_KEPT))


# An LbEndpoint's address and health fields by address and health (`eds_wire.lb_endpoint_head`):
# a pure function of the key, so the table can only be too small, never wrong; emptied when
# it outgrows _HEADS_LIMIT, which bounds its memory.
_HEADS: dict[tuple[str, Health], bytes] = {}
_HEADS_LIMIT = 1 << 17


def _head(view: EndpointView) -> bytes | None:
    key = (view.address, view.health)
    head = _HEADS.get(key)
    if head is None:
        head = eds_wire.lb_endpoint_head(view.host, view.port, _HEALTH[view.health])
        if head is not None:
            if len(_HEADS) >= _HEADS_LIMIT:
                _HEADS.clear()
            _HEADS[key] = head
    return head


def _metadata_field(code: str, region: str | None) -> bytes | None:
    """LbEndpoint.metadata with the endpoint's reason code (none when plainly healthy) and,
    with `region`, its region label; None when protobuf must encode it. From `_METADATA`."""
    key = (code, region)
    try:
        return _METADATA[key]
    except KeyError:
        pass
    namespaces: dict[str, dict[str, ReasonValue]] = {}
    if region is not None:
        namespaces[SUBSET_NAMESPACE] = {REGION_KEY: region}
    if code != PLAIN_REASON_CODE:
        namespaces[METADATA_NAMESPACE] = {ENDPOINT_REASON_KEY: code}
    made = eds_wire.namespaces_field(namespaces)
    if len(_METADATA) >= _METADATA_LIMIT:
        _METADATA.clear()
        _METADATA[_PLAIN] = b""
    _METADATA[key] = made
    return made


def _build_endpoint(
    view: EndpointView, *, labelled: bool = False
) -> endpoint_components_pb2.LbEndpoint:
    metadata = base_pb2.Metadata()
    fields = _metadata(view)
    if fields:
        explanation = struct_pb2.Struct()
        explanation.update(fields)
        metadata.filter_metadata[METADATA_NAMESPACE].CopyFrom(explanation)
    if labelled:
        metadata.filter_metadata[SUBSET_NAMESPACE].update({REGION_KEY: view.region})
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=view.host, port_value=view.port)
            )
        ),
        health_status=_HEALTH[view.health],
        load_balancing_weight=wrappers_pb2.UInt32Value(value=max(1, view.weight)),
        metadata=metadata,
    )


def _metadata(view: EndpointView) -> dict[str, ReasonValue]:
    """The endpoint's metadata under METADATA_NAMESPACE: its reason code, what Envoy's admin
    pages (config_dump) need to tell a cut from a stale or failing endpoint; none when it is
    plainly healthy."""
    code = reason_code(view.reason)
    return {} if code == PLAIN_REASON_CODE else {ENDPOINT_REASON_KEY: code}


def reason_code(reason: Mapping[str, ReasonValue]) -> str:
    """The short code of an endpoint's reason (heliostat.wire.ENDPOINT_REASON_CODES)."""
    state = reason.get("state")
    name = state if isinstance(state, str) else "unknown"
    code = ENDPOINT_REASON_CODES.get(name, name)
    if name == "healthy" and reason.get("band") == "near":
        code = NEAR_REASON_CODE
    if reason.get("goal") is not None:
        code += RAMP_REASON_SUFFIX
    return code


def _serialize(
    message: endpoint_pb2.ClusterLoadAssignment
    | endpoint_components_pb2.LocalityLbEndpoints
    | endpoint_components_pb2.LbEndpoint,
) -> bytes:
    encoded: bytes = message.SerializeToString(deterministic=True)
    return encoded


_varint = eds_wire.varint
