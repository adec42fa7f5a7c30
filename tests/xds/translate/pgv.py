"""Envoy's protoc-gen-validate rules, read from the installed descriptors (xds-protos).

Envoy validates every resource it receives against the `(validate.rules)` options of its
protos; a violation is a NACK. This reads those options and checks messages against them,
so tests can prove that what heliostat builds would pass, and can derive a policy field's
bounds from the Envoy field it lands in instead of restating them.

The rule kinds heliostat's resources meet are implemented: numbers and durations
(const/lt/lte/gt/gte/in/not_in), required messages, enums (defined_only), strings
(lengths, prefix/suffix/contains, in, HTTP header name and value), repeated and map counts and
their item rules, and Any payloads are unpacked and checked in turn. Besides the rules, every
google.protobuf.Duration is checked against what Envoy accepts at all (0 to int64
nanoseconds). Rule kinds not listed (regex patterns, addresses, timestamps) are not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

from heliostat.policy.durations import MAX_SECONDS

_WRAPPERS = {
    "google.protobuf.DoubleValue",
    "google.protobuf.FloatValue",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
}
_NUMERIC = {
    "float",
    "double",
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "fixed32",
    "fixed64",
    "sfixed32",
    "sfixed64",
}
# The ranges of the wire types, which bound a field before any rule does.
TYPE_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
}
_HEADER_NAME = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE = re.compile(r"^[^\x00\n\r]*$")


def rules_of(field: FieldDescriptor) -> validate_pb2.FieldRules | None:
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.rules):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.rules]
    return rules


def field_of(message: type[Message], name: str) -> FieldDescriptor:
    descriptor: Descriptor = message.DESCRIPTOR
    return descriptor.fields_by_name[name]


def numeric_bounds(field: FieldDescriptor) -> dict[str, float]:
    """The numeric rules (gt, gte, lt, lte) of a number field or of a wrapper field, with the
    wire type's own range added as gte/lte where no rule is tighter."""
    bounds: dict[str, float] = {}
    rules = rules_of(field)
    if rules is not None:
        kind = rules.WhichOneof("type")
        if kind in _NUMERIC:
            specific = getattr(rules, kind)
            for name in ("gt", "gte", "lt", "lte"):
                if specific.HasField(name):
                    bounds[name] = getattr(specific, name)
    wire = field.type
    if field.message_type is not None and field.message_type.full_name in _WRAPPERS:
        wire = field.message_type.fields_by_name["value"].type
    low, high = TYPE_RANGES.get(wire, (None, None))
    if low is not None and "gt" not in bounds:
        bounds["gte"] = max(bounds.get("gte", low), low)
    if high is not None and "lt" not in bounds:
        bounds["lte"] = min(bounds.get("lte", high), high)
    return bounds


def duration_bounds(field: FieldDescriptor) -> dict[str, float]:
    """A Duration field's rules in seconds, with Envoy's own range (0 to int64 nanoseconds)."""
    bounds: dict[str, float] = {}
    rules = rules_of(field)
    if rules is not None and rules.WhichOneof("type") == "duration":
        for name in ("gt", "gte", "lt", "lte"):
            if rules.duration.HasField(name):
                bounds[name] = _seconds(getattr(rules.duration, name))
    if "gt" not in bounds:
        bounds["gte"] = max(bounds.get("gte", 0.0), 0.0)
    if "lt" not in bounds:
        bounds["lte"] = min(bounds.get("lte", float(MAX_SECONDS)), float(MAX_SECONDS))
    return bounds


def violations(message: Message, where: str = "") -> list[str]:
    """Every rule `message` (and everything inside it) breaks, as `path: what`."""
    return list(_check_message(message, where or message.DESCRIPTOR.name))


# -- the checker --------------------------------------------------------------------------------


def _check_message(message: Message, where: str) -> Iterator[str]:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Duration":
        yield from _check_envoy_duration(message, where)
        return
    if descriptor.full_name == "google.protobuf.Any":
        yield from _check_any(message, where)
        return
    for field in descriptor.fields:
        path = f"{where}.{field.name}"
        rules = rules_of(field)
        if field.is_repeated:
            values = getattr(message, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                yield from _check_map(values, field, rules, path)
            else:
                yield from _check_repeated(list(values), field, rules, path)
            continue
        if field.containing_oneof is not None and not message.HasField(field.name):
            continue
        if field.message_type is not None:
            present = message.HasField(field.name)
            if not present:
                if rules is not None and _required(rules):
                    yield f"{path}: required"
                continue
            yield from _check_value(getattr(message, field.name), field, rules, path)
            continue
        yield from _check_value(getattr(message, field.name), field, rules, path)


def _required(rules: validate_pb2.FieldRules) -> bool:
    if rules.HasField("message") and rules.message.required:
        return True
    kind = rules.WhichOneof("type")
    return kind in ("duration", "any", "timestamp") and getattr(rules, kind).required


def _check_value(
    value: Any, field: FieldDescriptor, rules: validate_pb2.FieldRules | None, path: str
) -> Iterator[str]:
    if field.message_type is not None:
        if field.message_type.full_name in _WRAPPERS:
            if rules is not None:
                yield from _check_rules(value.value, rules, path, field)
            return
        if rules is not None:
            yield from _check_rules(value, rules, path, field)
        yield from _check_message(value, path)
        return
    low_high = TYPE_RANGES.get(field.type)
    if low_high is not None and not low_high[0] <= value <= low_high[1]:
        yield f"{path}: {value} outside the field's type"
    if rules is not None:
        yield from _check_rules(value, rules, path, field)


def _check_repeated(
    values: list[Any],
    field: FieldDescriptor,
    rules: validate_pb2.FieldRules | None,
    path: str,
) -> Iterator[str]:
    items: validate_pb2.FieldRules | None = None
    if rules is not None and rules.WhichOneof("type") == "repeated":
        repeated = rules.repeated
        if repeated.HasField("min_items") and len(values) < repeated.min_items:
            yield f"{path}: {len(values)} items, at least {repeated.min_items} required"
        if repeated.HasField("max_items") and len(values) > repeated.max_items:
            yield f"{path}: {len(values)} items, at most {repeated.max_items} allowed"
        items = repeated.items if repeated.HasField("items") else None
    for index, value in enumerate(values):
        yield from _check_value(value, field, items, f"{path}[{index}]")


def _check_map(
    values: Any, field: FieldDescriptor, rules: validate_pb2.FieldRules | None, path: str
) -> Iterator[str]:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    key_rules = value_rules = None
    if rules is not None and rules.WhichOneof("type") == "map":
        pairs = rules.map
        if pairs.HasField("min_pairs") and len(values) < pairs.min_pairs:
            yield f"{path}: {len(values)} entries, at least {pairs.min_pairs} required"
        if pairs.HasField("max_pairs") and len(values) > pairs.max_pairs:
            yield f"{path}: {len(values)} entries, at most {pairs.max_pairs} allowed"
        key_rules = pairs.keys if pairs.HasField("keys") else None
        value_rules = pairs.values if pairs.HasField("values") else None
    for key in values:
        if key_rules is not None:
            yield from _check_rules(key, key_rules, f"{path}[{key!r}] (key)", key_field)
        yield from _check_value(values[key], value_field, value_rules, f"{path}[{key!r}]")


def _check_rules(
    value: Any, rules: validate_pb2.FieldRules, path: str, field: FieldDescriptor
) -> Iterator[str]:
    kind = rules.WhichOneof("type")
    if kind in _NUMERIC:
        yield from _check_number(value, getattr(rules, kind), path)
    elif kind == "duration":
        yield from _check_duration_rules(value, rules.duration, path)
    elif kind == "string":
        yield from _check_string(value, rules.string, path)
    elif kind == "enum" and rules.enum.defined_only and not _defined(field, value):
        yield f"{path}: {value} is not a defined enum value"


def _defined(field: FieldDescriptor, value: int) -> bool:
    return field.enum_type is None or value in field.enum_type.values_by_number


def _check_number(value: float, rules: Any, path: str) -> Iterator[str]:
    if rules.HasField("const") and value != rules.const:
        yield f"{path}: {value} != {rules.const}"
    if rules.HasField("gt") and not value > rules.gt:
        yield f"{path}: {value} must be > {rules.gt}"
    if rules.HasField("gte") and not value >= rules.gte:
        yield f"{path}: {value} must be >= {rules.gte}"
    if rules.HasField("lt") and not value < rules.lt:
        yield f"{path}: {value} must be < {rules.lt}"
    if rules.HasField("lte") and not value <= rules.lte:
        yield f"{path}: {value} must be <= {rules.lte}"
    allowed = list(getattr(rules, "in"))
    if allowed and value not in allowed:
        yield f"{path}: {value} not in {allowed}"
    if list(rules.not_in) and value in list(rules.not_in):
        yield f"{path}: {value} is one of {list(rules.not_in)}"


def _check_duration_rules(
    value: duration_pb2.Duration, rules: validate_pb2.DurationRules, path: str
) -> Iterator[str]:
    seconds = _seconds(value)
    for name, ok in (
        ("gt", lambda bound: seconds > bound),
        ("gte", lambda bound: seconds >= bound),
        ("lt", lambda bound: seconds < bound),
        ("lte", lambda bound: seconds <= bound),
    ):
        if rules.HasField(name) and not ok(bound := _seconds(getattr(rules, name))):
            yield f"{path}: {seconds}s breaks duration rule {name} {bound}s"


def _check_envoy_duration(value: Message, path: str) -> Iterator[str]:
    seconds = getattr(value, "seconds", 0)
    nanos = getattr(value, "nanos", 0)
    if seconds < 0 or nanos < 0 or nanos > 999_999_999 or seconds > MAX_SECONDS:
        yield f"{path}: duration {seconds}s {nanos}ns is outside what Envoy accepts"


def _check_string(value: str, rules: validate_pb2.StringRules, path: str) -> Iterator[str]:
    if rules.HasField("min_len") and len(value) < rules.min_len:
        yield f"{path}: {value!r} shorter than {rules.min_len}"
    if rules.HasField("max_len") and len(value) > rules.max_len:
        yield f"{path}: {value!r} longer than {rules.max_len}"
    if rules.HasField("min_bytes") and len(value.encode()) < rules.min_bytes:
        yield f"{path}: {value!r} shorter than {rules.min_bytes} bytes"
    if rules.HasField("max_bytes") and len(value.encode()) > rules.max_bytes:
        yield f"{path}: {value!r} longer than {rules.max_bytes} bytes"
    if rules.HasField("prefix") and not value.startswith(rules.prefix):
        yield f"{path}: {value!r} does not start with {rules.prefix!r}"
    if rules.HasField("suffix") and not value.endswith(rules.suffix):
        yield f"{path}: {value!r} does not end with {rules.suffix!r}"
    if rules.HasField("contains") and rules.contains not in value:
        yield f"{path}: {value!r} does not contain {rules.contains!r}"
    if rules.HasField("not_contains") and rules.not_contains in value:
        yield f"{path}: {value!r} contains {rules.not_contains!r}"
    allowed = list(getattr(rules, "in"))
    if allowed and value not in allowed:
        yield f"{path}: {value!r} not in {allowed}"
    if rules.WhichOneof("well_known") == "well_known_regex":
        yield from _check_header_string(value, rules, path)


def _check_header_string(value: str, rules: validate_pb2.StringRules, path: str) -> Iterator[str]:
    """PGV's well-known header regexes (strict unless `strict: false`, then only NUL/CR/LF)."""
    strict = not rules.HasField("strict") or rules.strict
    if rules.well_known_regex == validate_pb2.HTTP_HEADER_NAME:
        bad = not _HEADER_NAME.match(value) if strict else any(c in value for c in "\0\r\n")
        if value and bad:
            yield f"{path}: {value!r} is not an HTTP header name"
    elif rules.well_known_regex == validate_pb2.HTTP_HEADER_VALUE:
        bad = not _HEADER_VALUE.match(value) if strict else any(c in value for c in "\0\r\n")
        if bad:
            yield f"{path}: {value!r} is not an HTTP header value"


def _check_any(value: Message, path: str) -> Iterator[str]:
    assert isinstance(value, any_pb2.Any)
    name = value.type_url.rpartition("/")[2]
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        yield f"{path}: unknown type {value.type_url}"
        return
    inner = message_factory.GetMessageClass(descriptor)()
    value.Unpack(inner)
    yield from _check_message(inner, f"{path}<{name.rpartition('.')[2]}>")


def _seconds(value: Any) -> float:
    return float(value.seconds) + value.nanos / 1e9
