"""EDS endpoints carry a short reason code; the full explanation stays with the views.

The explanation (saturation, driver, failures, capacity, goal) was 81% of EDS bytes, and an
assignment's bytes go to every subscribed Envoy whenever one of its endpoints changes.
"""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.balance.view import ReasonValue
from heliostat.wire import ENDPOINT_REASON_CODES, ENDPOINT_REASON_KEY, METADATA_NAMESPACE
from heliostat.xds.translate.endpoints import assignment_resource, reason_code

# What the control law publishes for a loaded healthy endpoint (balance/endpoints._explain).
LOADED: dict[str, ReasonValue] = {
    "state": "healthy",
    "band": "free",
    "saturation": 0.42,
    "driver": "kv",
    "failures": 0,
    "capacity": 0.67,
}


def test_codes_name_the_state_the_band_and_a_ramp() -> None:
    assert reason_code(LOADED) == "ok"
    assert reason_code({**LOADED, "band": "near"}) == "near"
    assert reason_code({**LOADED, "goal": 100}) == "ok+ramp"
    assert reason_code({"state": "saturated", "saturation": 1.2, "driver": "queue"}) == "sat"
    assert reason_code({"state": "stale", "stale": True, "detail": "never scraped"}) == "stale"
    assert reason_code({"state": "unhealthy", "failures": 3, "error": "refused"}) == "fail"
    assert reason_code({"state": "draining", "detail": "drained by operator"}) == "drain"
    assert reason_code({"state": "static"}) == "static"
    assert reason_code({"state": "warming"}) == "warming"  # unknown: its own name
    assert reason_code({}) == "unknown"
    assert all(len(code) <= 6 for code in ENDPOINT_REASON_CODES.values())


def _cluster(reason: dict[str, ReasonValue], endpoints: int) -> ClusterView:
    views = tuple(
        EndpointView(
            f"10.0.{i // 250}.{i % 250}:8000", "us-east", "v1", 100, Health.HEALTHY, reason
        )
        for i in range(endpoints)
    )
    return ClusterView(name="llama", model="llama", localities=(LocalityView("us-east", 0, views),))


def test_an_endpoint_entry_is_its_address_weight_health_and_code_only() -> None:
    saturated: dict[str, ReasonValue] = {"state": "saturated", "saturation": 1.3, "driver": "kv"}
    resource = assignment_resource(_cluster(saturated, 300))
    message = resource.message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    for endpoint in message.endpoints[0].lb_endpoints:
        fields = endpoint.metadata.filter_metadata[METADATA_NAMESPACE].fields
        assert dict(fields) == {ENDPOINT_REASON_KEY: fields[ENDPOINT_REASON_KEY]}
        assert fields[ENDPOINT_REASON_KEY].string_value == "sat"
    # Address (~20 bytes), weight, health and the code: under 60 bytes an endpoint (the
    # explanation alone took ~150).
    assert len(resource.packed.value) / 300 < 60


def test_a_plainly_healthy_endpoint_carries_no_metadata() -> None:
    resource = assignment_resource(_cluster(LOADED, 300))
    message = resource.message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    assert not any(e.HasField("metadata") for e in message.endpoints[0].lb_endpoints)
    assert len(resource.packed.value) / 300 < 30
