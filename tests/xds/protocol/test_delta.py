"""Incremental (delta) ADS: what `DeltaStream` sends for each request and snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.events import EventKind
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl
from tests.xds.helpers import (
    CDS,
    EDS,
    LDS,
    RDS,
    default_names,
    delta_request,
    route_clusters,
    snapshot,
    versions,
)

Response = discovery_pb2.DeltaDiscoveryResponse


def copy_of(snap: Snapshot) -> Snapshot:
    return Snapshot({t: list(snap.resources(t).values()) for t in PUSH_ORDER})


def types_of(responses: list[Response]) -> list[TypeUrl]:
    return [TypeUrl(r.type_url) for r in responses]


def updated(response: Response) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def subscribe(type_url: TypeUrl, **kwargs: object) -> discovery_pb2.DeltaDiscoveryRequest:
    """The first request of a type as Envoy sends it: wildcard CDS/LDS, named EDS/RDS."""
    return delta_request(type_url, default_names(type_url), **kwargs)  # type: ignore[arg-type]


def ack(response: Response) -> discovery_pb2.DeltaDiscoveryRequest:
    return delta_request(TypeUrl(response.type_url), nonce=response.nonce)


def nack(response: Response, error: str = "rejected") -> discovery_pb2.DeltaDiscoveryRequest:
    return delta_request(TypeUrl(response.type_url), nonce=response.nonce, error=error)


def connect(snap: Snapshot | None = None) -> tuple[DeltaStream, dict[TypeUrl, Response]]:
    """A stream whose node has subscribed to, received and ACKed every type of `snap`."""
    stream = DeltaStream("gw-1", clock=lambda: 99.0)
    stream.on_snapshot(snap or snapshot())
    last: dict[TypeUrl, Response] = {}
    for type_url in (CDS, EDS, LDS, RDS):
        (response,) = stream.on_request(subscribe(type_url)).responses
        last[type_url] = response
    for response in last.values():
        assert stream.on_request(ack(response)).responses == []
    return stream, last


# -- first contact ----------------------------------------------------------------------------


def test_subscriptions_before_the_snapshot_are_answered_in_make_before_break_order() -> None:
    stream = DeltaStream("gw-1")
    for type_url in (RDS, LDS, EDS, CDS):
        assert stream.on_request(subscribe(type_url)).responses == []
    snap = snapshot()
    outcome = stream.on_snapshot(snap)
    assert types_of(outcome.responses) == [CDS, EDS, LDS, RDS]
    assert len({r.nonce for r in outcome.responses}) == 4
    for response in outcome.responses:
        type_url = TypeUrl(response.type_url)
        assert updated(response) == versions(snap, type_url)
        assert list(response.removed_resources) == []
        assert response.system_version_info == snap.version
        for resource in response.resources:
            assert resource.resource.type_url == type_url.value


def test_explicit_wildcard_subscription() -> None:
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snapshot())
    (cds,) = stream.on_request(delta_request(CDS, ["*"])).responses
    assert sorted(updated(cds)) == ["llama", "qwen"]
    assert stream.status()["CDS"].subscribed is None


def test_unknown_type_is_reported_not_answered() -> None:
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snapshot())
    outcome = stream.on_request(
        discovery_pb2.DeltaDiscoveryRequest(type_url="type.googleapis.com/x.Secret")
    )
    assert outcome.responses == []
    assert [e.kind for e in outcome.events] == [EventKind.UNKNOWN_TYPE]


# -- ACKs and unchanged snapshots -------------------------------------------------------------


def test_ack_records_the_version_and_sends_nothing() -> None:
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snapshot())
    (cds,) = stream.on_request(subscribe(CDS)).responses
    assert stream.status()["CDS"].pending_nonce == cds.nonce
    outcome = stream.on_request(ack(cds))
    assert outcome.responses == []
    assert [e.kind for e in outcome.events] == [EventKind.ACK]
    status = stream.status()["CDS"]
    assert status.acked_version == status.sent_version == cds.system_version_info
    assert status.pending_nonce == ""


def test_the_same_snapshot_again_sends_nothing() -> None:
    stream, _ = connect()
    assert stream.on_snapshot(snapshot()).responses == []
    assert stream.on_snapshot(copy_of(snapshot())).responses == []
    assert stream.on_request(delta_request(EDS)).responses == []


def test_a_changed_endpoint_sends_only_that_resource() -> None:
    stream, last = connect()
    changed = snapshot(llama_port=9105)
    outcome = stream.on_snapshot(changed)
    assert types_of(outcome.responses) == [EDS]
    (eds,) = outcome.responses
    assert updated(eds) == {"llama": versions(changed, EDS)["llama"]}
    assert updated(eds)["llama"] != updated(last[EDS])["llama"]
    assert list(eds.removed_resources) == []


def test_a_stream_in_step_compares_the_next_snapshot_by_what_changed() -> None:
    """Every type is level with the snapshot after the node ACKed it, so a push looks
    only at the names whose content changed (one diff per snapshot pair), and the node's
    tables share the snapshot's resources instead of copying them."""
    first = snapshot()
    stream, _ = connect(first)
    for type_url in (CDS, EDS, LDS, RDS):
        state = stream._types[type_url]
        assert state.level_with is first.resources(type_url)
        assert state.known.base is first.resources(type_url)
        assert state.known.own_entries == 0
    changed = snapshot(llama_port=9105)
    (eds,) = stream.on_snapshot(changed).responses
    assert updated(eds) == {"llama": versions(changed, EDS)["llama"]}
    assert stream._types[EDS].known.as_dict() == versions(changed, EDS)


def test_acks_are_recorded_per_response() -> None:
    stream, _ = connect()
    (first,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    (second,) = stream.on_snapshot(snapshot(llama_port=9106)).responses
    assert first.system_version_info != second.system_version_info
    stream.on_request(ack(first))
    status = stream.status()["EDS"]
    assert status.acked_version == first.system_version_info  # not the one still in flight
    assert status.pending_nonce == second.nonce
    stream.on_request(ack(second))
    assert stream.status()["EDS"].acked_version == second.system_version_info


def test_a_change_to_every_type_goes_out_in_make_before_break_order() -> None:
    stream, _ = connect()
    changed = snapshot(("llama", "qwen", "mistral"), llama_port=9105, gateway_port=10001)
    outcome = stream.on_snapshot(changed)
    assert types_of(outcome.responses) == [CDS, EDS, LDS, RDS]
    cds, eds, lds, rds = outcome.responses
    assert list(updated(cds)) == ["mistral"]
    assert list(updated(eds)) == ["llama"]  # mistral's endpoints: not subscribed yet
    assert list(updated(lds)) == ["heliostat_http_10001"]
    assert list(lds.removed_resources) == []  # the old listener goes once the new is ACKed
    assert list(updated(rds)) == ["heliostat_models"]
    (gone,) = stream.on_request(ack(lds)).responses
    assert list(gone.removed_resources) == ["heliostat_http_10000"]


# -- stale nonces -----------------------------------------------------------------------------


def test_a_stale_nonce_is_ignored() -> None:
    stream, last = connect()
    (eds,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    for request in (ack(last[EDS]), nack(last[EDS]), delta_request(EDS, nonce="nope")):
        outcome = stream.on_request(request)
        assert outcome.responses == []
        assert [e.kind for e in outcome.events] == [EventKind.STALE]
    status = stream.status()["EDS"]
    assert status.last_rejection is None
    assert status.acked_version == last[EDS].system_version_info
    assert status.pending_nonce == eds.nonce


# -- NACKs ------------------------------------------------------------------------------------


def test_a_nack_is_recorded_and_its_content_is_not_sent_again() -> None:
    stream, last = connect()
    (bad,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    outcome = stream.on_request(nack(bad, "bad endpoint"))
    assert outcome.responses == []
    assert [(e.kind, e.version, e.detail) for e in outcome.events] == [
        (EventKind.NACK, bad.system_version_info, "bad endpoint"),
        (EventKind.HELD, "", "NACKed before: llama"),
    ]
    status = stream.status()["EDS"]
    assert status.last_rejection is not None
    assert status.last_rejection.version == bad.system_version_info
    assert status.last_rejection.error == "bad endpoint"
    assert status.last_rejection.at == 99.0
    assert status.acked_version == last[EDS].system_version_info
    # Not on the next request, not on a re-publish.
    assert stream.on_request(delta_request(EDS)).responses == []
    held = stream.on_snapshot(snapshot(llama_port=9105))
    assert held.responses == []
    assert [e.kind for e in held.events] == [EventKind.HELD]
    assert stream.on_snapshot(copy_of(snapshot(llama_port=9105))).responses == []
    # Another resource's change is sent, without the held one.
    (other,) = stream.on_snapshot(snapshot(llama_port=9105, qwen_port=9205)).responses
    assert list(updated(other)) == ["qwen"]
    stream.on_request(ack(other))
    # A real change to the rejected resource is sent.
    fixed_snap = snapshot(llama_port=9106, qwen_port=9205)
    (fixed,) = stream.on_snapshot(fixed_snap).responses
    assert updated(fixed) == {"llama": versions(fixed_snap, EDS)["llama"]}


def test_a_nack_while_another_response_is_in_flight_names_the_rejected_version() -> None:
    stream, _ = connect()
    (bad,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    (later,) = stream.on_snapshot(snapshot(llama_port=9106)).responses
    outcome = stream.on_request(nack(bad, "bad"))
    assert (outcome.events[0].kind, outcome.events[0].version) == (
        EventKind.NACK,
        bad.system_version_info,
    )
    rejection = stream.status()["EDS"].last_rejection
    assert rejection is not None and rejection.version == bad.system_version_info
    assert stream.on_request(ack(later)).responses == []
    assert stream.status()["EDS"].acked_version == later.system_version_info


def test_a_nack_does_not_undo_a_later_response_in_flight() -> None:
    """v1, v0, v1 go out back to back; the first v1 is NACKed (say, transiently), the others are
    ACKed. The node then has v1, so going back to v0 must be sent."""
    stream, _ = connect()
    (first,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    (second,) = stream.on_snapshot(snapshot()).responses
    (third,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    assert stream.on_request(nack(first)).responses == []
    assert stream.on_request(ack(second)).responses == []
    assert stream.on_request(ack(third)).responses == []
    (back,) = stream.on_snapshot(snapshot()).responses
    assert updated(back) == {"llama": versions(snapshot(), EDS)["llama"]}


def test_two_nacks_in_a_row_leave_the_node_with_what_it_acked() -> None:
    stream, last = connect()
    (first,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    (second,) = stream.on_snapshot(snapshot(llama_port=9106)).responses
    assert stream.on_request(nack(first)).responses == []
    assert stream.on_request(nack(second)).responses == []
    # The node still runs the first llama it ACKed: going back to it sends nothing.
    assert stream.on_snapshot(snapshot()).responses == []
    # And a third version is sent as a change from that.
    third = snapshot(llama_port=9107)
    (response,) = stream.on_snapshot(third).responses
    assert updated(response) == {"llama": versions(third, EDS)["llama"]}
    assert updated(last[EDS])["llama"] == versions(snapshot(), EDS)["llama"]


def test_a_nacked_resource_going_back_to_what_the_node_has_sends_nothing() -> None:
    stream, _ = connect()
    (bad,) = stream.on_snapshot(snapshot(llama_port=9105)).responses
    stream.on_request(nack(bad))
    assert stream.on_snapshot(snapshot()).responses == []


# -- reconnects: initial_resource_versions ----------------------------------------------------


def test_a_reconnecting_node_with_current_versions_gets_nothing() -> None:
    snap = snapshot()
    stream = DeltaStream("gw-1")
    stream.on_snapshot(copy_of(snap))
    for type_url in PUSH_ORDER:
        request = subscribe(type_url, initial=versions(snap, type_url))
        assert stream.on_request(request).responses == []
    assert stream.on_snapshot(snapshot()).responses == []
    assert types_of(stream.on_snapshot(snapshot(llama_port=9105)).responses) == [EDS]


def test_a_reconnecting_node_gets_only_what_differs_and_hears_what_is_gone() -> None:
    old = snapshot(("llama", "qwen", "mistral"), llama_port=9105)
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snapshot())
    (eds,) = stream.on_request(subscribe(EDS, initial=versions(old, EDS))).responses
    assert updated(eds) == {"llama": versions(snapshot(), EDS)["llama"]}  # qwen is current
    assert list(eds.removed_resources) == ["mistral"]  # the node has it; it is gone
    # A wildcard CDS: the same.
    (cds,) = stream.on_request(subscribe(CDS, initial=versions(old, CDS))).responses
    assert updated(cds) == {}
    assert list(cds.removed_resources) == ["mistral"]


# -- subscriptions ----------------------------------------------------------------------------


def test_subscribing_to_a_missing_name_is_answered_as_removed() -> None:
    stream, _ = connect()
    (response,) = stream.on_request(delta_request(EDS, ["mistral"])).responses
    assert updated(response) == {}
    assert list(response.removed_resources) == ["mistral"]
    stream.on_request(ack(response))
    # Answered once; nothing more until it exists.
    assert stream.on_request(delta_request(EDS)).responses == []
    bigger = snapshot(("llama", "qwen", "mistral"))
    outcome = stream.on_snapshot(bigger)
    (eds,) = [r for r in outcome.responses if r.type_url == EDS.value]
    assert updated(eds) == {"mistral": versions(bigger, EDS)["mistral"]}


def test_subscribing_to_existing_and_missing_names_at_once() -> None:
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snapshot())
    (response,) = stream.on_request(delta_request(EDS, ["qwen", "mistral"])).responses
    assert list(updated(response)) == ["qwen"]
    assert list(response.removed_resources) == ["mistral"]


def test_unsubscribe_stops_updates_for_that_name() -> None:
    stream, _ = connect()
    assert stream.on_request(delta_request(EDS, unsubscribe=["qwen"])).responses == []
    assert stream.status()["EDS"].subscribed == 1
    assert stream.on_snapshot(snapshot(qwen_port=9205)).responses == []
    changed = snapshot(qwen_port=9205, llama_port=9105)
    (eds,) = stream.on_snapshot(changed).responses
    assert list(updated(eds)) == ["llama"]
    stream.on_request(ack(eds))
    # Subscribing again sends the current resource.
    (again,) = stream.on_request(delta_request(EDS, ["qwen"])).responses
    assert updated(again) == {"qwen": versions(changed, EDS)["qwen"]}


# -- removals and make-before-break -----------------------------------------------------------


def test_a_removed_model_is_removed_after_the_node_acks_the_new_routes() -> None:
    stream, _ = connect()
    smaller = snapshot(("llama",))
    outcome = stream.on_snapshot(smaller)
    assert types_of(outcome.responses) == [EDS, RDS]  # no CDS yet
    eds, rds = outcome.responses
    assert list(eds.removed_resources) == ["qwen"]
    assert updated(eds) == {}
    assert route_clusters(r.resource for r in rds.resources) == {"llama"}
    assert stream.on_request(ack(eds)).responses == []
    assert stream.on_request(delta_request(CDS)).responses == []  # still not
    # Until the removal is sent, CDS is not reported in sync with the new snapshot.
    assert stream.status()["CDS"].acked_version != smaller.version
    release = stream.on_request(ack(rds))
    assert types_of(release.responses) == [CDS]
    (cds,) = release.responses
    assert updated(cds) == {}
    assert list(cds.removed_resources) == ["qwen"]
    assert stream.on_request(ack(cds)).responses == []
    assert stream.status()["CDS"].acked_version == smaller.version
    assert stream.on_snapshot(smaller).responses == []


def test_a_removed_model_stays_while_the_new_routes_are_nacked() -> None:
    stream, _ = connect()
    _, rds = stream.on_snapshot(snapshot(("llama",))).responses
    outcome = stream.on_request(nack(rds, "bad routes"))
    assert outcome.responses == []
    assert stream.on_snapshot(snapshot(("llama",))).responses == []
    # Routes that work: the node ACKs them and only then loses the cluster.
    smaller = snapshot(("llama",), gateway_port=10001)
    outcome = stream.on_snapshot(smaller)
    assert types_of(outcome.responses) == [LDS]
    (lds,) = outcome.responses
    assert list(lds.removed_resources) == []
    release = stream.on_request(ack(lds))
    # The old listener may go now; the cluster not: the routes are still the NACKed ones.
    assert types_of(release.responses) == [LDS]
    assert list(release.responses[0].removed_resources) == ["heliostat_http_10000"]
    assert stream.on_request(ack(release.responses[0])).responses == []


def test_a_new_model_comes_before_the_routes_that_use_it() -> None:
    stream, _ = connect()
    bigger = snapshot(("llama", "qwen", "mistral"))
    outcome = stream.on_snapshot(bigger)
    assert types_of(outcome.responses) == [CDS, RDS]
    cds, _ = outcome.responses
    assert list(updated(cds)) == ["mistral"]


def test_a_moved_listener_is_added_first_and_the_old_one_named_removed_once_acked() -> None:
    stream, _ = connect()
    (lds,) = stream.on_snapshot(snapshot(gateway_port=10001)).responses
    assert list(updated(lds)) == ["heliostat_http_10001"]
    assert list(lds.removed_resources) == []
    (gone,) = stream.on_request(ack(lds)).responses
    assert list(updated(gone)) == []
    assert list(gone.removed_resources) == ["heliostat_http_10000"]
    assert stream.on_request(ack(gone)).responses == []
    assert stream.status()["LDS"].acked_version == snapshot(gateway_port=10001).version


def test_a_moved_listener_the_node_nacks_leaves_the_old_one_in_place() -> None:
    stream, _ = connect()
    (lds,) = stream.on_snapshot(snapshot(gateway_port=10001)).responses
    outcome = stream.on_request(nack(lds, "address in use"))
    assert outcome.responses == []  # no removal of the old one, no re-send of the new
    assert [e.kind for e in outcome.events] == [EventKind.NACK, EventKind.HELD]
    # The policy goes back: nothing to send, the node has the old listener.
    outcome = stream.on_snapshot(snapshot())
    assert [r for r in outcome.responses if r.type_url == LDS.value] == []


# -- property ---------------------------------------------------------------------------------

POOL = [
    snapshot(),
    snapshot(llama_port=9105),
    snapshot(("llama",)),
    snapshot(("llama", "qwen", "mistral")),
    snapshot(("qwen", "mistral"), qwen_port=9205),
    snapshot(gateway_port=10001),
]

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, len(POOL) - 1)),
        st.tuples(st.sampled_from(["ack", "nack", "stale"]), st.sampled_from(PUSH_ORDER)),
    ),
    max_size=40,
)


@dataclass
class _Node:
    """Per type: responses not yet answered (oldest first) and what the node has applied."""

    pending: dict[TypeUrl, list[Response]] = field(default_factory=dict)
    has: dict[TypeUrl, dict[str, str]] = field(default_factory=dict)
    routes: dict[str, object] = field(default_factory=dict)  # applied route configurations
    answered: list[str] = field(default_factory=list)

    def apply(self, response: Response) -> None:
        type_url = TypeUrl(response.type_url)
        have = self.has.setdefault(type_url, {})
        for resource in response.resources:
            have[resource.name] = resource.version
            if type_url is RDS:
                self.routes[resource.name] = resource.resource
        for name in response.removed_resources:
            have.pop(name, None)
            if type_url is RDS:
                self.routes.pop(name, None)

    def routed_clusters(self) -> set[str]:
        using = route_clusters(self.routes.values())
        for response in self.pending.get(RDS, []):
            using |= route_clusters(r.resource for r in response.resources)
        return using


def _wanted(type_url: TypeUrl, name: str) -> bool:
    return type_url in (CDS, LDS) or name in default_names(type_url)


class _Run:
    """One property-test run: the stream under test, the node it talks to, the snapshot last
    published, and what the node was last sent and last NACKed per resource."""

    def __init__(self) -> None:
        self.stream = DeltaStream("gw-1")
        self.node = _Node()
        self.last_sent: dict[tuple[TypeUrl, str], str] = {}
        self.last_nacked: dict[tuple[TypeUrl, str], str] = {}
        self.current = POOL[0]

    def take(self, responses: list[Response]) -> None:
        order = [PUSH_ORDER.index(TypeUrl(r.type_url)) for r in responses]
        assert order == sorted(order), "responses of one step are in make-before-break order"
        for response in responses:
            type_url = TypeUrl(response.type_url)
            assert response.resources or response.removed_resources, "empty response"
            for resource in response.resources:
                key = (type_url, resource.name)
                assert resource.version != self.last_sent.get(key), f"{key} sent twice in a row"
                assert resource.version != self.last_nacked.get(key), f"NACKed {key} re-sent"
                self.last_sent[key] = resource.version
            for name in response.removed_resources:
                self.last_sent.pop((type_url, name), None)
            if type_url is CDS:
                gone = set(response.removed_resources) & self.node.routed_clusters()
                assert not gone, f"cluster removed while routes use it: {gone}"
            self.node.pending.setdefault(type_url, []).append(response)

    def routes_settled(self) -> bool:
        return all(
            not self.node.pending.get(t) and self.node.has.get(t, {}) == versions(self.current, t)
            for t in (LDS, RDS)
        )

    def check_converged(self) -> None:
        for type_url in PUSH_ORDER:
            if self.node.pending.get(type_url):
                continue
            has = self.node.has.get(type_url, {})
            for name, version in versions(self.current, type_url).items():
                if _wanted(type_url, name):
                    nacked = self.last_nacked.get((type_url, name))
                    assert has.get(name) == version or nacked == version
            extra = {n for n in has if n not in self.current.resources(type_url)}
            if type_url is CDS and not self.routes_settled():
                continue  # make-before-break: removal waits for the routes
            if type_url is LDS and any(
                self.last_nacked.get((LDS, n)) == v and has.get(n) != v
                for n, v in versions(self.current, LDS).items()
            ):
                continue  # make-before-break: the old listener stays, its replacement refused
            assert not extra, f"{type_url.short} never told the node {extra} are gone"

    def step(self, action: str, arg: object) -> None:
        if action == "publish":
            self.current = POOL[arg]  # type: ignore[index]
            self.take(self.stream.on_snapshot(self.current).responses)
            return
        type_url = TypeUrl(arg)
        if action == "stale":
            self._stale(type_url)
            return
        queue = self.node.pending.get(type_url, [])
        if not queue:
            return
        response = queue.pop(0)  # Envoy answers a type's responses in order
        self.node.answered.append(response.nonce)
        if action == "nack":
            self._nack(type_url, response)
        else:
            self._ack(type_url, response)

    def _stale(self, type_url: TypeUrl) -> None:
        if not self.node.answered:
            return
        outcome = self.stream.on_request(delta_request(type_url, nonce=self.node.answered[-1]))
        assert outcome.responses == []
        kinds = [e.kind for e in outcome.events]
        assert kinds[0] is EventKind.STALE
        assert EventKind.ACK not in kinds and EventKind.NACK not in kinds

    def _nack(self, type_url: TypeUrl, response: Response) -> None:
        for resource in response.resources:
            self.last_nacked[(type_url, resource.name)] = resource.version
        self.take(self.stream.on_request(nack(response)).responses)
        rejection = self.stream.status()[type_url.short].last_rejection
        assert rejection is not None
        assert rejection.version == response.system_version_info

    def _ack(self, type_url: TypeUrl, response: Response) -> None:
        self.node.apply(response)
        self.take(self.stream.on_request(ack(response)).responses)
        acked = self.stream.status()[type_url.short].acked_version
        if self.node.pending.get(type_url):  # a later response is still in flight
            assert acked == response.system_version_info
        else:  # or the node is in sync with the current snapshot
            assert acked in (response.system_version_info, self.current.version)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), ACTIONS)
def test_property_no_repeated_push_and_nacked_content_held(
    start_in_sync: bool, actions: list[tuple]
) -> None:
    """Random snapshot changes, ACKs, NACKs and stale requests: no resource is sent twice in a
    row with the same version, NACKed content is not re-sent, a cluster never leaves while routes
    the node may use point at it, and once a type has nothing in flight the node has everything
    it should (except what it NACKed)."""
    run = _Run()
    run.take(run.stream.on_snapshot(POOL[0]).responses)
    for type_url in PUSH_ORDER:
        run.take(run.stream.on_request(subscribe(type_url)).responses)
    if start_in_sync:
        for type_url in PUSH_ORDER:
            run.step("ack", type_url)
    for action, arg in actions:
        run.step(action, arg)
        run.check_converged()


def test_streams_in_step_share_one_response_per_change() -> None:
    """1,000 streams answering one change hold one copy of it, not 1,000 (serve's peak)."""
    (a, _), (b, _) = connect(), connect()
    changed = snapshot(llama_port=9107)
    (from_a,) = a.on_snapshot(changed).responses
    (from_b,) = b.on_snapshot(changed).responses
    assert from_a is from_b
    assert updated(from_a) == {"llama": versions(changed, EDS)["llama"]}


# -- withheld types ---------------------------------------------------------------------------


def test_a_withheld_type_is_not_answered_until_released() -> None:
    stream = DeltaStream("gw-1")
    stream.withhold(frozenset({EDS}))
    stream.on_snapshot(snapshot())
    responses = [r for t in PUSH_ORDER for r in stream.on_request(subscribe(t)).responses]
    assert types_of(responses) == [CDS, LDS, RDS]
    (eds,) = stream.withhold(frozenset()).responses
    assert updated(eds) == versions(snapshot(), EDS)


def test_a_reconnecting_node_keeps_its_endpoints_while_withheld_and_gets_only_changes() -> None:
    old = snapshot(llama_port=9105)
    stream = DeltaStream("gw-1")
    stream.withhold(frozenset({EDS}))
    stream.on_snapshot(snapshot())  # cold: llama differs from what the node has
    assert stream.on_request(subscribe(EDS, initial=versions(old, EDS))).responses == []
    stream.on_snapshot(old)  # the first round gives what the node has
    assert stream.withhold(frozenset()).responses == []
    assert stream.status()["EDS"].acked_version == old.version
