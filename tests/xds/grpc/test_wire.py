"""WireBytes: one serialization per response object, bounded, never another object's bytes."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from heliostat.xds.grpc.wire import WireBytes


def response(nonce: str, size: int = 10) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse(nonce=nonce, system_version_info="v" * size)


def test_the_same_response_object_is_serialized_once_and_others_get_their_own_bytes() -> None:
    wire = WireBytes()
    shared, other = response("1"), response("2")
    first = wire.of(shared)
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(first) == shared
    assert wire.of(shared) is first  # the very bytes, for every stream sending it
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(wire.of(other)).nonce == "2"
    # An equal but distinct object is not confused with it, nor is its content.
    assert wire.of(response("1")) == first


def test_the_table_is_bounded_by_bytes_and_entries() -> None:
    wire = WireBytes(max_bytes=1_000, max_entries=3)
    kept = [response(str(i), 100) for i in range(10)]
    for message in kept:
        wire.of(message)
    assert len(wire) == 3 and wire.held_bytes <= 1_000
    big = response("big", 5_000)
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(wire.of(big)) == big
    assert len(wire) == 3 and wire.held_bytes <= 1_000  # too big to keep: made, not held
