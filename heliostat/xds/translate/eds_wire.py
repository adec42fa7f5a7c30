"""An endpoint's LbEndpoint written straight in the protobuf wire format.

Building the message and its metadata Struct through the protobuf API costs tens of
microseconds an endpoint, which is most of a tick when thousands of weights move at once.
The message's shape is fixed and small, so it is written here field by field, exactly as
`SerializeToString(deterministic=True)` writes it: fields in number order, proto3 scalars
left out at their default, oneof members written even when default, map entries in the
order upb sorts them (see `_upb_key_order`) with key and value always written. Anything
outside that shape (a weight or port beyond uint32, a reason value that is not a scalar)
returns None and the caller builds the message the ordinary way, which also raises
protobuf's own errors. The order is upb's (the protobuf backend installed here), not a
promise of the format: tests/xds/translate/test_eds_bytes.py checks the bytes against protobuf's for
randomized endpoints, so a backend that orders differently fails there first.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from heliostat.balance.view import ReasonValue

_UINT32 = 0xFFFFFFFF
_DOUBLE = struct.Struct("<d")


def varint(value: int) -> bytes:
    """A non-negative integer as the wire format writes it: 7 bits a byte, low first."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 0x80:  # the common case: a one-byte length
        return bytes((tag, size)) + payload
    return bytes((tag,)) + varint(size) + payload


def _value(value: ReasonValue) -> bytes | None:
    """google.protobuf.Value as Struct.update sets it; None for what it would not."""
    # kind is a oneof: its member is written even at its default value.
    if value is None:
        return b"\x08\x00"  # null_value (1) = NULL_VALUE
    if value is True:
        return b"\x20\x01"  # bool_value (4)
    if value is False:
        return b"\x20\x00"
    if isinstance(value, str):
        try:
            return _delimited(0x1A, value.encode())  # string_value (3)
        except UnicodeEncodeError:
            return None
    if isinstance(value, int | float):
        try:
            return b"\x11" + _DOUBLE.pack(float(value))  # number_value (2), fixed64
        except OverflowError:
            return None
    return None


def _struct(fields: Mapping[str, ReasonValue]) -> bytes | None:
    """google.protobuf.Struct: map<string, Value> fields (1), entries in upb's order."""
    entries = []
    for key, value in fields.items():
        entry = _struct_field(key, value)
        if entry is None:
            return None
        entries.append(entry)
    entries.sort()  # keys are distinct: only the order keys are compared
    return b"".join([entry for _, entry in entries])


# Encoded Struct entries (with their order key) by key, value type and value. An entry is a
# pure function of those, so this table can only be too small, never wrong; reasons draw on
# few distinct pairs (states, drivers, saturation to 0.01, regions, versions) and the table
# is emptied whenever it outgrows _CACHE_LIMIT, which bounds its memory.
_FIELDS: dict[tuple[str, type, ReasonValue], tuple[bytes, bytes]] = {}
_CACHE_LIMIT = 1 << 16


def _struct_field(key: str, value: ReasonValue) -> tuple[bytes, bytes] | None:
    # 0.0 == -0.0 and NaN != NaN: such floats would share or miss entries, so skip the table.
    cacheable = not isinstance(value, float) or (value == value and value != 0.0)
    cache_key = (key, value.__class__, value)
    if cacheable:
        try:
            hit = _FIELDS.get(cache_key)
        except TypeError:  # unhashable: not a scalar protobuf's Value takes from us
            return None
        if hit is not None:
            return hit
    encoded = _value(value)
    if encoded is None:
        return None
    try:
        name = key.encode()
    except UnicodeEncodeError:  # a lone surrogate: let protobuf say what it makes of it
        return None
    entry = (_upb_key_order(name), _delimited(0x0A, _map_entry(name, encoded)))
    if cacheable:
        if len(_FIELDS) >= _CACHE_LIMIT:
            _FIELDS.clear()
        _FIELDS[cache_key] = entry
    return entry


def _upb_key_order(key: bytes) -> bytes:
    """upb sorts string map keys by their bytes, except that a key sorts after every key it
    is a prefix of ("ab" before "a", "" last): as if each ended in a byte above all others.
    0xFF never occurs in UTF-8, so appending it gives that order."""
    return key + b"\xff"


def _map_entry(key: bytes, value: bytes) -> bytes:
    """A map<string, message> entry: key (1) and value (2), both written even when empty."""
    return _delimited(0x0A, key) + _delimited(0x12, value)


# LbEndpoint.endpoint fields by host and port, bounded like _FIELDS.
_ADDRESSES: dict[tuple[str, int], bytes] = {}


def _endpoint_field(host: str, port: int) -> bytes | None:
    socket = b""  # SocketAddress: protocol TCP (0) is the default, left out
    if host:
        try:
            socket += _delimited(0x12, host.encode())  # address (2)
        except UnicodeEncodeError:
            return None
    socket += b"\x18" + varint(port)  # port_value (3), a oneof member
    address = _delimited(0x0A, socket)  # Address.socket_address (1), a oneof member
    endpoint = _delimited(0x0A, address)  # Endpoint.address (1)
    return _delimited(0x0A, endpoint)  # LbEndpoint.endpoint (1), a oneof member


def lb_endpoint(
    host: str,
    port: int,
    health: int,
    weight: int,
    namespace: str,
    metadata: Mapping[str, ReasonValue],
) -> bytes | None:
    """envoy.config.endpoint.v3.LbEndpoint with a socket address, health, weight and one
    metadata namespace; None when the values need the protobuf API's checks."""
    field = metadata_field(namespace, metadata)
    if field is None:
        return None
    return lb_endpoint_with(host, port, health, weight, field)


def metadata_field(namespace: str, metadata: Mapping[str, ReasonValue]) -> bytes | None:
    """LbEndpoint.metadata (3) holding one filter_metadata namespace, as written inside an
    LbEndpoint: a caller whose metadata repeats (a reason code) encodes it once."""
    return namespaces_field({namespace: metadata})


def namespaces_field(namespaces: Mapping[str, Mapping[str, ReasonValue]]) -> bytes | None:
    """LbEndpoint.metadata (3) holding every namespace of `namespaces` (each a Struct), in
    upb's map order: the east-west hop's `envoy.lb` region label beside heliostat's reason
    code. None when a value needs the protobuf API's checks."""
    entries = []
    for namespace, fields in namespaces.items():
        explanation = _struct(fields)
        if explanation is None:
            return None
        try:
            name = namespace.encode()
        except UnicodeEncodeError:
            return None
        entries.append((_upb_key_order(name), _delimited(0x0A, _map_entry(name, explanation))))
    entries.sort()
    # metadata (3): filter_metadata (1), one map entry per namespace
    return _delimited(0x1A, b"".join([entry for _, entry in entries]))


def lb_endpoint_head(host: str, port: int, health: int) -> bytes | None:
    """An LbEndpoint's fields before its metadata: endpoint (1) and health_status (2); None
    as `lb_endpoint`. With `weight_field` after the metadata, the same bytes as
    `lb_endpoint_with`, in parts a caller can keep: an endpoint's address and health
    change far less often than its weight."""
    if not (0 <= port <= _UINT32 and 0 <= health <= _UINT32):
        return None
    out = _endpoint_field(host, port)
    if out is None:
        return None
    if health:
        out += b"\x10" + varint(health)  # health_status (2)
    return out


def weight_field(weight: int) -> bytes | None:
    """LbEndpoint.load_balancing_weight (4), a UInt32Value; None beyond uint32."""
    if 0 <= weight < len(_WEIGHT_FIELDS):
        return _WEIGHT_FIELDS[weight]
    if not 0 <= weight <= _UINT32:
        return None
    return _delimited(0x22, b"\x08" + varint(weight))


def lb_endpoint_with(
    host: str, port: int, health: int, weight: int, metadata: bytes
) -> bytes | None:
    """The LbEndpoint with an already encoded `metadata_field`; None as `lb_endpoint`."""
    if not (0 <= port <= _UINT32 and 0 <= weight <= _UINT32 and 0 <= health <= _UINT32):
        return None
    out = _ADDRESSES.get((host, port))
    if out is None:
        out = _endpoint_field(host, port)
        if out is None:
            return None
        if len(_ADDRESSES) >= _CACHE_LIMIT:
            _ADDRESSES.clear()
        _ADDRESSES[host, port] = out
    if health:
        out += b"\x10" + varint(health)  # health_status (2)
    out += metadata
    weight_value = b"\x08" + varint(weight) if weight else b""
    out += _delimited(0x22, weight_value)  # load_balancing_weight (4): UInt32Value
    return out


# Weights heliostat publishes are at most a few hundred: their fields, written once.
_WEIGHT_FIELDS = tuple(
    _delimited(0x22, b"\x08" + varint(weight) if weight else b"") for weight in range(1024)
)
