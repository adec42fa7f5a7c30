"""LEDS over delta xDS: glob-collection subscriptions in `DeltaStream`, and the LEDS form.

A delta node subscribes to each locality's collection (`xdstp://.../*`) named in the
assignment; it must get every member of the collections it subscribed to and no others,
then only the endpoints that changed; SotW nodes of the same snapshot keep plain EDS.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heliostat.balance import ClusterView, EndpointView, Health, LocalityView
from heliostat.xds.protocol.delta import DeltaStream
from heliostat.xds.protocol.held import pending_form
from heliostat.xds.protocol.sotw import SotwStream
from heliostat.xds.resources.snapshot import Resource, Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate.endpoints import assignment_resource
from heliostat.xds.translate.leds import PREFIX, leds_assignment, leds_forms, segment
from heliostat.xds.translate.memo import TranslationMemo
from tests.xds.helpers import delta_request, sotw_request, versions
from tests.xds.helpers import snapshot as helper_snapshot

EDS, LEDS = TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT
Response = discovery_pb2.DeltaDiscoveryResponse


def fleet(count: int, prefix: str = "10.0.0") -> list[EndpointView]:
    return [
        EndpointView(
            f"{prefix}.{i}:8000", "us-east" if i % 2 else "eu-west", None, 100, Health.HEALTHY
        )
        for i in range(count)
    ]


def cluster(name: str, endpoints: Sequence[EndpointView]) -> ClusterView:
    localities = tuple(
        LocalityView(region, priority, tuple(e for e in endpoints if e.region == region))
        for priority, region in enumerate(("eu-west", "us-east"))
    )
    return ClusterView(name, name, localities)


def snapshot_of(*views: ClusterView, memo: TranslationMemo | None = None) -> Snapshot:
    memo = memo or TranslationMemo()
    forms = {v.name: leds_assignment(v, memo) for v in views}
    return Snapshot(
        {EDS: [assignment_resource(v, memo) for v in views]},
        delta={
            EDS: [f.assignment for f in forms.values()],
            LEDS: [r for f in forms.values() for r in f.endpoints],
        },
        members={name: tuple(r.name for r in f.endpoints) for name, f in forms.items()},
    )


def globs(snap: Snapshot, name: str) -> list[str]:
    message = snap.for_delta().resources(EDS)[name].message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    # An emptied-out locality is written inline: it names no collection.
    names = (e.leds_cluster_locality_config.leds_collection_name for e in message.endpoints)
    return [n for n in names if n]


def respond(stream: DeltaStream, request: discovery_pb2.DeltaDiscoveryRequest) -> list[Response]:
    return stream.on_request(request).responses


def ack(stream: DeltaStream, response: Response) -> None:
    assert respond(stream, delta_request(TypeUrl(response.type_url), nonce=response.nonce)) == []


def ack_all(stream: DeltaStream, responses: list[Response]) -> list[Response]:
    """ACK `responses` and whatever the ACKs bring, in order, then what the stream sends
    when it settles once nothing is in flight (an assignment under its own version once its
    endpoints are ACKed; the server calls `settle` then); returns every response seen."""
    seen: list[Response] = []
    queue = list(responses)
    while queue or stream.settle_due():
        if not queue:
            queue += stream.settle().responses
            continue
        response = queue.pop(0)
        seen.append(response)
        queue += respond(stream, delta_request(TypeUrl(response.type_url), nonce=response.nonce))
    return seen


def subscribed(snap: Snapshot, clusters: list[str], glob_names: list[str]) -> DeltaStream:
    """A delta node that asked for `clusters` and the collections `glob_names`, and ACKed."""
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snap)
    ack_all(stream, respond(stream, delta_request(EDS, clusters)))
    ack_all(stream, respond(stream, delta_request(LEDS, glob_names)))
    return stream


def test_a_delta_node_gets_assignments_that_name_collections_and_a_sotw_node_plain_eds() -> None:
    snap = snapshot_of(cluster("m", fleet(4)))
    delta = DeltaStream("gw-1")
    delta.on_snapshot(snap)
    (eds,) = respond(delta, delta_request(EDS, ["m"]))
    assignment = endpoint_pb2.ClusterLoadAssignment.FromString(eds.resources[0].resource.value)
    assert [e.locality.region for e in assignment.endpoints] == ["eu-west", "us-east"]
    assert [e.priority for e in assignment.endpoints] == [0, 1]
    assert all(not e.lb_endpoints for e in assignment.endpoints)
    assert globs(snap, "m") == [f"{PREFIX}m/eu-west-1/*", f"{PREFIX}m/us-east-1/*"]

    sotw = SotwStream("gw-2")
    sotw.on_snapshot(snap)
    (plain,) = sotw.on_request(sotw_request(EDS, ["m"])).responses
    inline = endpoint_pb2.ClusterLoadAssignment.FromString(plain.resources[0].value)
    assert sum(len(e.lb_endpoints) for e in inline.endpoints) == 4
    # The group's one version: what convergence compares, whichever form a node has.
    assert eds.system_version_info == snap.version


def test_a_glob_subscription_gets_every_member_of_that_collection_and_no_other() -> None:
    snap = snapshot_of(cluster("m", fleet(6)), cluster("n", fleet(3, "10.9.9")))
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snap)
    eu_glob = globs(snap, "m")[0]
    (response,) = respond(stream, delta_request(LEDS, [eu_glob]))
    names = {r.name for r in response.resources}
    assert names == {f"{eu_glob[:-1]}{segment(f'10.0.0.{i}_8000')}" for i in (0, 2, 4)}
    for resource in response.resources:
        endpoint = endpoint_components_pb2.LbEndpoint.FromString(resource.resource.value)
        assert endpoint.endpoint.address.socket_address.address.startswith("10.0.0.")
        assert endpoint.load_balancing_weight.value == 100
        assert resource.resource.type_url == LEDS.value
    assert list(response.removed_resources) == []
    assert stream.status()["LEDS"].subscribed == 1


def test_one_weight_change_sends_that_one_endpoint_and_not_the_assignment() -> None:
    endpoints = fleet(300)
    memo = TranslationMemo()
    before = snapshot_of(cluster("m", endpoints), memo=memo)
    stream = subscribed(before, ["m"], globs(before, "m"))
    changed = endpoints[7]
    endpoints[7] = EndpointView(changed.address, changed.region, None, 37, Health.HEALTHY)
    memo.new_round()
    after = snapshot_of(cluster("m", endpoints), memo=memo)
    # The assignment goes first under a pending version (its endpoints are changing), then
    # the endpoint; once that is ACKed and the stream settles, the assignment under its own
    # version (not on the ACK: that response serves only a later reconnect).
    pending, response = stream.on_snapshot(after).responses
    assert TypeUrl(pending.type_url) is EDS and pending.resources[0].version.endswith("~")
    assert TypeUrl(response.type_url) is LEDS
    (resource,) = response.resources
    endpoint = endpoint_components_pb2.LbEndpoint.FromString(resource.resource.value)
    assert endpoint.load_balancing_weight.value == 37
    assert endpoint.endpoint.address.socket_address.address == "10.0.0.7"
    ack(stream, pending)
    assert not stream.settle_due()  # the endpoint is in flight
    ack(stream, response)
    assert stream.settle_due()
    (final,) = stream.settle().responses
    assert [r.version for r in final.resources] == [after.for_delta().resources(EDS)["m"].version]
    plain = len(after.resources(EDS)["m"].packed.value)
    sent = sum(len(r.SerializeToString()) for r in (pending, response, final))
    assert sent * 10 < plain  # ~700 bytes against ~10 KB
    ack(stream, final)
    assert stream.on_snapshot(after).responses == []


def test_a_removed_endpoint_is_named_and_a_new_one_sent() -> None:
    endpoints = fleet(4)
    before = snapshot_of(cluster("m", endpoints))
    stream = subscribed(before, ["m"], globs(before, "m"))
    gone = before.members["m"][0]
    after = snapshot_of(cluster("m", [*endpoints[1:], *fleet(1, "10.7.7")]))
    _pending, response = stream.on_snapshot(after).responses
    assert list(response.removed_resources) == [gone]
    assert [r.name for r in response.resources] == [f"{PREFIX}m/eu-west-1/10.7.7.0_8000"]


def test_unsubscribing_a_collection_stops_its_updates_and_resubscribing_sends_it_again() -> None:
    endpoints = fleet(4)
    before = snapshot_of(cluster("m", endpoints))
    eu_glob, us_glob = globs(before, "m")
    stream = subscribed(before, ["m"], [eu_glob, us_glob])
    assert respond(stream, delta_request(LEDS, unsubscribe=[eu_glob])) == []
    endpoints[0] = EndpointView(endpoints[0].address, "eu-west", None, 5, Health.HEALTHY)
    endpoints[1] = EndpointView(endpoints[1].address, "us-east", None, 5, Health.HEALTHY)
    after = snapshot_of(cluster("m", endpoints))
    _pending, response = stream.on_snapshot(after).responses
    assert [r.name for r in response.resources] == [f"{us_glob[:-1]}10.0.0.1_8000"]
    ack(stream, response)
    (again,) = respond(stream, delta_request(LEDS, [eu_glob]))
    assert {r.name for r in again.resources} == {
        n for n in after.members["m"] if n.startswith(eu_glob[:-1])
    }


def test_an_updated_cluster_gets_its_assignment_and_members_again() -> None:
    endpoints = fleet(4)
    base = snapshot_of(cluster("m", endpoints))

    def with_cluster(version: bytes) -> Snapshot:
        delta = base.for_delta()
        return Snapshot(
            {
                TypeUrl.CLUSTER: [_cluster_resource(version)],
                EDS: list(base.resources(EDS).values()),
            },
            delta={
                EDS: list(delta.resources(EDS).values()),
                LEDS: list(delta.resources(LEDS).values()),
            },
            members=base.members,
        )

    before, after = with_cluster(b"a"), with_cluster(b"b")
    stream = DeltaStream("gw-1")
    stream.on_snapshot(before)
    (cds,) = respond(stream, delta_request(TypeUrl.CLUSTER, []))
    ack(stream, cds)
    ack_all(stream, respond(stream, delta_request(EDS, ["m"])))
    ack_all(stream, respond(stream, delta_request(LEDS, globs(before, "m"))))
    responses = stream.on_snapshot(after).responses
    assert [TypeUrl(r.type_url) for r in responses] == [TypeUrl.CLUSTER, EDS, LEDS]
    assert {r.name for r in responses[2].resources} == set(after.members["m"])


def _cluster_resource(marker: bytes) -> Resource:
    message = cluster_pb2.Cluster(
        name="m", type=cluster_pb2.Cluster.EDS, alt_stat_name=marker.decode()
    )
    return Resource.of(TypeUrl.CLUSTER, "m", message)


def test_collection_names_keep_to_characters_envoy_leaves_alone() -> None:
    view = ClusterView(
        "llama@v2~acme",
        "llama",
        (
            LocalityView(
                "us east", 0, (EndpointView("[::1]:8000", "us east", None, 1, Health.HEALTHY),)
            ),
            LocalityView("eu-west", 1, ()),
        ),
    )
    form = leds_assignment(view)
    (member,) = form.endpoints
    path = member.name.removeprefix(PREFIX)
    assert all(c.isalnum() or c in "._-/" for c in path)
    assert path.startswith(f"{segment('llama@v2~acme')}/{segment('us east')}-1/")
    assert segment("llama@v2~acme") != segment("llama_v2_acme")
    message = form.assignment.message
    assert isinstance(message, endpoint_pb2.ClusterLoadAssignment)
    # An empty locality is written inline: Envoy would wait for an empty collection forever.
    empty = message.endpoints[1]
    assert not empty.HasField("leds_cluster_locality_config") and not empty.lb_endpoints
    endpoint = endpoint_components_pb2.LbEndpoint.FromString(member.packed.value)
    assert endpoint.endpoint.address.socket_address.address == "::1"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["weight", "remove", "add", "resubscribe"]), st.integers(0, 40)),
        max_size=12,
    )
)
# eu-west emptied out (written inline, naming no collection), then us-east's collection
# unsubscribed and subscribed again: the test once took the inline locality's empty name
# for a glob, which matched every endpoint the node held.
@example(
    [("remove", 0), ("remove", 0), ("remove", 0), ("remove", 1), ("remove", 2), ("resubscribe", 0)]
)
def test_property_a_delta_node_ends_each_push_with_exactly_the_snapshots_endpoints(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever changes (weights, endpoints coming and going, a collection unsubscribed and
    subscribed again), the node's endpoints after each ACKed push are the snapshot's, and
    a push carries only endpoints whose content the node does not have."""
    endpoints = fleet(8)
    memo = TranslationMemo()
    snap = snapshot_of(cluster("m", endpoints), memo=memo)
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snap)
    node: dict[str, str] = {}

    def take(responses: list[Response]) -> None:
        for response in ack_all(stream, responses):
            if TypeUrl(response.type_url) is not LEDS:
                continue
            for resource in response.resources:
                assert node.get(resource.name) != resource.version  # nothing the node has
                node[resource.name] = resource.version
            for name in response.removed_resources:
                node.pop(name, None)

    take(respond(stream, delta_request(EDS, ["m"])))
    take(respond(stream, delta_request(LEDS, globs(snap, "m"))))
    for step, n in steps:
        memo.new_round()
        if step == "weight" and endpoints:
            i = n % len(endpoints)
            old = endpoints[i]
            endpoints[i] = EndpointView(old.address, old.region, None, n + 1, Health.HEALTHY)
        elif step == "remove" and len(endpoints) > 2:
            endpoints.pop(n % len(endpoints))
        elif step == "add":
            region = "us-east" if n % 2 else "eu-west"
            endpoints.append(EndpointView(f"10.5.0.{n}:80", region, None, 9, Health.HEALTHY))
        elif step == "resubscribe" and (named := globs(snap, "m")):
            glob = named[n % len(named)]
            take(respond(stream, delta_request(LEDS, unsubscribe=[glob])))
            node = {k: v for k, v in node.items() if not k.startswith(glob[:-1])}
            take(respond(stream, delta_request(LEDS, [glob])))
        snap = snapshot_of(cluster("m", endpoints), memo=memo)
        take(stream.on_snapshot(snap).responses)
        wanted = {
            n
            for g in globs(snap, "m")
            for n in snap.for_delta().resources(LEDS)
            if n.startswith(g[:-1])
        }
        leds = snap.for_delta().resources(LEDS)
        # An emptied-out locality's collection is no longer named: Envoy drops it (and its
        # endpoints) with the assignment, so only named collections are compared.
        assert {k: v for k, v in node.items() if k in wanted or k in leds} == {
            name: leds[name].version for name in wanted
        }


def test_the_leds_form_leaves_what_sotw_nodes_get_unchanged() -> None:
    plain, with_leds = (helper_snapshot(leds=False), helper_snapshot(leds=True))
    assert plain.for_delta() is plain
    assert with_leds.for_delta() is not with_leds
    for type_url in (TypeUrl.CLUSTER, EDS, TypeUrl.LISTENER, TypeUrl.ROUTE):
        assert versions(plain, type_url) == versions(with_leds, type_url)
    assert with_leds.resources(LEDS) == {}
    assert set(versions(with_leds.for_delta(), LEDS)) == {
        name for members in with_leds.members.values() for name in members
    }


def test_withheld_endpoints_hold_back_leds_too_until_released() -> None:
    """A starting heliostat withholds endpoints (EDS and LEDS): a reconnecting delta node
    keeps the weights it has instead of cold ones that the first round turns back."""
    endpoints = fleet(4)
    snap = snapshot_of(cluster("m", endpoints))
    stream = DeltaStream("gw-1")
    assert stream.withhold(frozenset({EDS, LEDS})).responses == []
    stream.on_snapshot(snap)
    assert respond(stream, delta_request(EDS, ["m"])) == []
    assert respond(stream, delta_request(LEDS, globs(snap, "m"))) == []
    released = stream.withhold(frozenset()).responses
    assert [TypeUrl(r.type_url) for r in released] == [EDS, LEDS]
    assert {r.name for r in released[1].resources} == set(snap.members["m"])


def test_a_stream_in_step_keeps_no_endpoint_versions_of_its_own() -> None:
    """A thousand delta streams each kept two name -> version tables of every endpoint
    (~50 MB at 1,000 streams); in step with the snapshot a stream keeps none: its tables
    point at the snapshot's own resources (heliostat.xds.cache.versions)."""
    endpoints = fleet(200)
    memo = TranslationMemo()
    before = snapshot_of(cluster("m", endpoints), memo=memo)
    stream = subscribed(before, ["m"], globs(before, "m"))
    leds = stream._types[LEDS]
    assert leds.known.own_entries == leds.acked.own_entries == 0
    assert leds.known.base is before.for_delta().resources(LEDS)

    memo.new_round()
    old = endpoints[3]
    endpoints[3] = EndpointView(old.address, old.region, None, 7, Health.HEALTHY)
    del endpoints[10]
    after = snapshot_of(cluster("m", endpoints), memo=memo)
    responses = stream.on_snapshot(after).responses
    (update,) = [r for r in responses if TypeUrl(r.type_url) is LEDS]
    assert len(update.resources) == 1 and len(update.removed_resources) == 1
    # In flight: the node has the new content, has ACKed only the old.
    assert leds.known.own_entries == 0
    assert leds.acked.as_dict() == versions(before.for_delta(), LEDS)
    ack_all(stream, responses)
    assert leds.known.own_entries == leds.acked.own_entries == 0
    assert leds.acked.as_dict() == versions(after.for_delta(), LEDS)
    # An ACK changes no subscription: the stream stays level with the snapshot, so the next
    # push looks only at what changed, not at every endpoint again.
    assert leds.level_with is after.for_delta().resources(LEDS)


def reconnected(snap: Snapshot, assignments: dict[str, str], glob_names: list[str]) -> list:
    """What a node reconnecting with `assignments` listed (and, as Envoy 1.40 does, no LEDS
    endpoint) is sent for its EDS and LEDS subscriptions."""
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snap)
    sent = respond(stream, delta_request(EDS, list(assignments), initial=assignments))
    return sent + respond(stream, delta_request(LEDS, glob_names))


def test_a_node_listing_the_assignment_at_its_version_is_sent_no_endpoint_again() -> None:
    """Envoy 1.40 lists no LEDS endpoint when it reconnects (to a restarted heliostat or
    another replica), only the assignments; one listed at the version a server would send
    stands for exactly its endpoints, so none is sent again. A pending version, or an older
    one, and the collection goes whole, as the node's endpoints may then be anything."""
    endpoints = fleet(300)
    memo = TranslationMemo()
    snap = snapshot_of(cluster("m", endpoints), memo=memo)
    stream = subscribed(snap, ["m"], globs(snap, "m"))
    held = stream._types[EDS].acked.as_dict()
    assert held == {"m": snap.for_delta().resources(EDS)["m"].version}

    assert reconnected(snap, held, globs(snap, "m")) == []

    everything = set(snap.members["m"])
    # A node holding the assignment pending (its content's pending version) has the
    # assignment's content: only the endpoints go, all of them.
    pending = pending_form(snap.for_delta().resources(EDS)["m"]).version
    (again,) = reconnected(snap, {"m": pending}, globs(snap, "m"))
    assert {r.name for r in again.resources} == everything
    memo.new_round()
    old = endpoints[5]
    endpoints[5] = EndpointView(old.address, old.region, None, 3, Health.HEALTHY)
    newer = snapshot_of(cluster("m", endpoints), memo=memo)
    sent = reconnected(newer, held, globs(newer, "m"))
    assert [TypeUrl(r.type_url) for r in sent] == [EDS, LEDS]
    assert {r.name for r in sent[1].resources} == set(newer.members["m"])


def test_a_nacked_endpoint_update_leaves_the_assignment_pending() -> None:
    endpoints = fleet(6)
    memo = TranslationMemo()
    before = snapshot_of(cluster("m", endpoints), memo=memo)
    stream = subscribed(before, ["m"], globs(before, "m"))
    memo.new_round()
    endpoints[2] = EndpointView(endpoints[2].address, "eu-west", None, 9, Health.HEALTHY)
    after = snapshot_of(cluster("m", endpoints), memo=memo)
    pending, update = stream.on_snapshot(after).responses
    ack(stream, pending)
    assert respond(stream, delta_request(LEDS, nonce=update.nonce, error="bad endpoint")) == []
    assert stream._types[EDS].known["m"].endswith("~")
    # Reconnecting with that pending version, the node is sent every endpoint.
    (again,) = reconnected(after, {"m": pending.resources[0].version}, globs(after, "m"))
    assert {r.name for r in again.resources} == set(after.members["m"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(1, 50), st.integers(0, 3), st.booleans()),
        max_size=6,
    ),
)
def test_property_whenever_a_node_could_drop_its_assignment_version_names_what_it_holds(
    changes: list[tuple[int, int, int, bool]],
) -> None:
    """Envoy applies one stream's responses in order and may lose the stream after any of
    them. At every such point, an assignment it holds under a version some snapshot gave
    it must come with exactly that snapshot's endpoints; else a server seeing it listed on
    reconnect would skip endpoints the node lacks. The stream may be told to settle at any
    point, responses in flight or not (the server's gate decides when, not the stream)."""
    endpoints = fleet(8)
    memo = TranslationMemo()
    snap = snapshot_of(cluster("m", endpoints), memo=memo)
    covered: dict[str, dict[str, str]] = {}  # assignment version -> its endpoints

    def remember(s: Snapshot) -> None:
        delta = s.for_delta()
        covered[delta.resources(EDS)["m"].version] = {
            n: delta.resources(LEDS)[n].version for n in s.members["m"]
        }

    remember(snap)
    stream = DeltaStream("gw-1")
    stream.on_snapshot(snap)
    node_eds: dict[str, str] = {}
    node_leds: dict[str, str] = {}
    wire: list[Response] = []  # sent, not yet applied, in order

    def deliver(leave: int = 0) -> None:
        while len(wire) > leave:
            response = wire.pop(0)
            table = node_eds if TypeUrl(response.type_url) is EDS else node_leds
            table.update((r.name, r.version) for r in response.resources)
            for name in response.removed_resources:
                table.pop(name, None)
            version = node_eds.get("m")
            if version in covered:
                assert node_leds == covered[version]
            wire.extend(
                respond(stream, delta_request(TypeUrl(response.type_url), nonce=response.nonce))
            )

    def settle_when_idle() -> None:
        deliver()
        wire.extend(stream.settle().responses)
        deliver()
        assert not stream.settle_due()

    wire.extend(respond(stream, delta_request(EDS, ["m"])))
    deliver()
    wire.extend(respond(stream, delta_request(LEDS, globs(snap, "m"))))
    settle_when_idle()
    for index, weight, in_flight, settle in changes:
        memo.new_round()
        old = endpoints[index]
        endpoints[index] = EndpointView(old.address, old.region, None, weight, Health.HEALTHY)
        snap = snapshot_of(cluster("m", endpoints), memo=memo)
        remember(snap)
        wire.extend(stream.on_snapshot(snap).responses)
        deliver(leave=in_flight)  # the rest still on the wire when the next change comes
        if settle:
            wire.extend(stream.settle().responses)
    settle_when_idle()
    assert node_eds["m"] == snap.for_delta().resources(EDS)["m"].version
    assert node_leds == covered[node_eds["m"]]


def test_a_node_reconnecting_to_a_starting_heliostat_is_compared_with_what_is_released() -> None:
    """A starting heliostat withholds endpoints until its first round; the node's listed
    assignments are compared with the snapshot then released, not the cold one it had when
    the node asked."""
    endpoints = fleet(30)
    memo = TranslationMemo()
    warm = snapshot_of(cluster("m", endpoints), memo=memo)
    held = subscribed(warm, ["m"], globs(warm, "m"))._types[EDS].acked.as_dict()
    memo.new_round()
    cold = snapshot_of(
        cluster(
            "m", [EndpointView(e.address, e.region, None, 1, Health.HEALTHY) for e in endpoints]
        ),
        memo=memo,
    )
    stream = DeltaStream("gw-1")
    stream.withhold(frozenset({EDS, LEDS}))
    stream.on_snapshot(cold)
    assert respond(stream, delta_request(EDS, ["m"], initial=held)) == []
    assert respond(stream, delta_request(LEDS, globs(cold, "m"))) == []
    stream.on_snapshot(warm)
    assert stream.withhold(frozenset()).responses == []


def test_a_weight_change_to_a_node_still_pending_sends_the_endpoint_alone() -> None:
    """The pending version names the assignment's content, not its members: while the node
    holds it pending (its stream has not settled since the last change), another weight
    change is one LEDS response, and settling then brings the assignment's own version."""
    endpoints = fleet(20)
    memo = TranslationMemo()
    before = snapshot_of(cluster("m", endpoints), memo=memo)
    stream = subscribed(before, ["m"], globs(before, "m"))

    def change(index: int, weight: int) -> Snapshot:
        memo.new_round()
        old = endpoints[index]
        endpoints[index] = EndpointView(old.address, old.region, None, weight, Health.HEALTHY)
        return snapshot_of(cluster("m", endpoints), memo=memo)

    first = change(3, 7)
    pending, update = stream.on_snapshot(first).responses
    assert TypeUrl(pending.type_url) is EDS
    ack(stream, pending)
    ack(stream, update)
    second = change(4, 9)
    (alone,) = stream.on_snapshot(second).responses
    assert TypeUrl(alone.type_url) is LEDS
    assert [r.name.rsplit("/", 1)[1] for r in alone.resources] == ["10.0.0.4_8000"]
    ack(stream, alone)
    (final,) = stream.settle().responses
    assert [r.version for r in final.resources] == [second.for_delta().resources(EDS)["m"].version]
    ack(stream, final)
    assert stream.status()["EDS"].settling == 0
    assert not stream.settle_due() and stream.settle().responses == []
    # Settled: the next change marks the assignment pending again before its endpoint.
    responses = stream.on_snapshot(change(5, 11)).responses
    assert [TypeUrl(r.type_url) for r in responses] == [EDS, LEDS]
    assert stream.status()["EDS"].settling == 1


def test_types_a_change_leaves_alone_stay_in_step_and_are_sent_when_they_change() -> None:
    """A weight change moves endpoints only: the node's clusters are not looked at again
    (heliostat.xds.protocol.delta: carried over), yet its cluster type reports the new
    snapshot's version in sync, and a later change to a cluster is still sent, alone."""
    endpoints = fleet(20)
    memo = TranslationMemo()

    def snap(timeout_s: int) -> Snapshot:
        memo.new_round()
        view = cluster("m", endpoints)
        form = leds_assignment(view, memo)
        definition = cluster_pb2.Cluster(name="m", type=cluster_pb2.Cluster.EDS)
        definition.connect_timeout.seconds = timeout_s
        return Snapshot(
            {
                TypeUrl.CLUSTER: [Resource.of(TypeUrl.CLUSTER, "m", definition)],
                EDS: [assignment_resource(view, memo)],
            },
            delta={EDS: [form.assignment], LEDS: list(form.endpoints)},
            members={"m": tuple(r.name for r in form.endpoints)},
        )

    def reweigh(index: int, weight: int) -> None:
        old = endpoints[index]
        endpoints[index] = EndpointView(old.address, old.region, None, weight, Health.HEALTHY)

    before = snap(1)
    stream = DeltaStream("gw-1")
    stream.on_snapshot(before)
    ack_all(stream, respond(stream, delta_request(TypeUrl.CLUSTER)))
    ack_all(stream, respond(stream, delta_request(EDS, ["m"])))
    ack_all(stream, respond(stream, delta_request(LEDS, globs(before, "m"))))
    for step, weight in enumerate((7, 9, 11)):
        reweigh(3 + step, weight)
        moved = snap(1)
        responses = stream.on_snapshot(moved).responses
        assert TypeUrl.CLUSTER.value not in {r.type_url for r in responses}
        ack_all(stream, responses)
        clusters = stream.status()["CDS"]
        assert clusters.sent_version == clusters.acked_version == moved.version
    # The cluster itself changes: it goes out (and its endpoints again: Envoy warms the new
    # cluster until it has them), compared with what the node was last level with.
    changed = snap(2)
    responses = stream.on_snapshot(changed).responses
    assert TypeUrl(responses[0].type_url) is TypeUrl.CLUSTER
    assert [r.name for r in responses[0].resources] == ["m"]
    ack_all(stream, responses)
    assert stream.on_snapshot(changed).responses == []
    status = stream.status()
    assert all(s.sent_version == s.acked_version == changed.version for s in status.values())


def shared_snapshot(*views: ClusterView) -> Snapshot:
    """A delta snapshot whose clusters share the collections of localities holding the same
    endpoints, as build_snapshot makes them."""
    memo = TranslationMemo()
    forms = leds_forms(list(views), memo)
    return Snapshot(
        {EDS: [assignment_resource(v, memo) for v in views]},
        delta={
            EDS: [f.assignment for f in forms],
            LEDS: {r.name: r for f in forms for r in f.endpoints},
        },
        members={v.name: f.names for v, f in zip(views, forms, strict=True)},
    )


def test_clusters_with_the_same_endpoints_name_one_collection_and_share_its_members() -> None:
    endpoints = fleet(6)
    snap = shared_snapshot(cluster("m", endpoints), cluster("m.batch", endpoints))
    assert (
        globs(snap, "m")
        == globs(snap, "m.batch")
        == [
            f"{PREFIX}m/eu-west-1/*",
            f"{PREFIX}m/us-east-1/*",
        ]
    )
    assert snap.members["m"] == snap.members["m.batch"]
    assert len(snap.for_delta().resources(LEDS)) == 6


def test_an_assignment_naming_a_collection_the_node_has_brings_its_members_again() -> None:
    # Envoy adds a second watch on a collection it subscribes to already and asks for
    # nothing: the new cluster fills only from what is sent after its assignment.
    endpoints = fleet(6)
    before = shared_snapshot(cluster("m", endpoints))
    stream = subscribed(before, ["m"], globs(before, "m"))
    after = shared_snapshot(cluster("m", endpoints), cluster("m.batch", endpoints))
    assert stream.on_snapshot(after).responses == []  # the node has not asked for m.batch
    assignment, again = respond(stream, delta_request(EDS, ["m.batch"]))
    assert [r.name for r in assignment.resources] == ["m.batch"]
    assert TypeUrl(again.type_url) is LEDS
    assert sorted(r.name for r in again.resources) == sorted(after.members["m.batch"])
    ack_all(stream, [assignment, again])
    # Named once: a later change to the shared members goes out once, for both clusters.
    endpoints[0] = EndpointView(endpoints[0].address, "eu-west", None, 5, Health.HEALTHY)
    moved = shared_snapshot(cluster("m", endpoints), cluster("m.batch", endpoints))
    sent = [r for r in stream.on_snapshot(moved).responses if TypeUrl(r.type_url) is LEDS]
    assert [[r.name for r in s.resources] for s in sent] == [[f"{PREFIX}m/eu-west-1/10.0.0.0_8000"]]
