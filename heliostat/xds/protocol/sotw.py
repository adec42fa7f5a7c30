"""State-of-the-World ADS protocol state for one stream, free of I/O.

Fed DiscoveryRequests and snapshots, it returns the DiscoveryResponses to send. It follows
the rules that keep a fleet calm: ignore stale nonces, answer only when something changed,
never re-send content the node NACKed until the content changes (go-control-plane re-pushes
by version and loops; Istio waits for a real change, and so do we), push clusters before
endpoints before listeners before routes, and remove a cluster only after the routes that
pointed at it have been replaced on the node. A listener the snapshot drops (a port change)
is likewise sent alongside its replacement until the node ACKs that (`listeners`). Routes
wait for their clusters: while the clusters that would add one are held (the node NACKed
them), routes naming it are held too, and the node keeps routes that work.

A type can be withheld (`withhold`): nothing of it is sent until it is released, and a
SotW node keeps what it has until it is sent something. A restarted heliostat withholds
endpoints until its first signal round, so its reconnecting nodes keep the weights the last
process gave them instead of being sent cold ones that the first round then turns back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from heliostat.xds.cache.responses import SharedResponses
from heliostat.xds.protocol.events import Event, EventKind, Outcome, Rejection, TypeStatus
from heliostat.xds.protocol.listeners import kept_until_replaced
from heliostat.xds.resources.snapshot import (
    Resource,
    Snapshot,
    combined_version,
    route_clusters,
)
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl, parse_type_url

SotwOutcome = Outcome[discovery_pb2.DiscoveryResponse]

# Streams in step answer a change with the same response: built once
# (heliostat.xds.cache.responses).
_SHARED: SharedResponses[discovery_pb2.DiscoveryResponse] = SharedResponses()


@dataclass(slots=True)
class _TypeState:
    type_url: TypeUrl
    requested: bool = False
    names: frozenset[str] | None = None  # None: wildcard
    sent_names: frozenset[str] = frozenset()
    nonce: str = ""
    sent_version: str = ""
    rejected_version: str = ""
    # The version the node said it has when it (re)connected: content equal to it is not
    # sent, even when it becomes current only later (say, once a withheld type is released).
    node_version: str = ""
    status: TypeStatus = field(default_factory=TypeStatus)


class SotwStream:
    def __init__(self, node_id: str, clock: Callable[[], float] = time.time) -> None:
        self.node_id = node_id
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._types = {t: _TypeState(t) for t in PUSH_ORDER}
        self._nonce_counter = 0
        self.responses = 0  # sent on this stream, every type: what `status` sums, kept
        # Clusters gone from the snapshot but kept on the node until its routes move off them.
        self._retired: dict[str, Resource] = {}
        # Versions of the clusters last sent, to tell an updated cluster from a new one.
        self._cluster_versions: dict[str, str] = {}
        self._withheld: frozenset[TypeUrl] = frozenset()
        # Listeners: the last resource sent under every name, what the response in flight
        # carries, and what the node last ACKed (name -> version), for make-before-break.
        self._listeners_known: dict[str, Resource] = {}
        self._listeners_in_flight: dict[str, str] = {}
        self._listeners_accepted: dict[str, str] = {}
        self._routes_held = False  # routes wait for clusters the node was not sent

    # -- inputs -------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> SotwOutcome:
        previous, self._snapshot = self._snapshot, snapshot
        outcome: SotwOutcome = Outcome()
        if previous is not None:
            self._retire_removed_clusters(previous, snapshot)
        for type_url in PUSH_ORDER:
            outcome.extend(self._maybe_respond(self._types[type_url]))
        return outcome

    def withhold(self, types: frozenset[TypeUrl]) -> SotwOutcome:
        """Send nothing of `types` from now on; types no longer in it are answered now."""
        released = self._withheld - types
        self._withheld = types
        outcome: SotwOutcome = Outcome()
        for type_url in PUSH_ORDER:
            if type_url in released:
                outcome.extend(self._maybe_respond(self._types[type_url]))
        outcome.extend(self._routes_waiting())
        return outcome

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> SotwOutcome:
        type_url = parse_type_url(request.type_url)
        if type_url is None:
            return Outcome(events=[Event(EventKind.UNKNOWN_TYPE, request.type_url)])
        state = self._types[type_url]
        outcome: SotwOutcome = Outcome()
        if request.response_nonce and request.response_nonce != state.nonce:
            outcome.events.append(Event(EventKind.STALE, type_url, nonce=request.response_nonce))
            return outcome
        first = not state.requested
        state.requested = True
        state.names = _subscription(type_url, request.resource_names)
        state.status.subscribed = None if state.names is None else len(state.names)
        if request.response_nonce:
            state.status.pending_nonce = ""
            if request.HasField("error_detail"):
                outcome.events.append(self._record_nack(state, request))
            elif request.version_info == state.sent_version:
                state.status.acked_version = state.sent_version
                if type_url is TypeUrl.LISTENER:
                    self._listeners_accepted = dict(self._listeners_in_flight)
                outcome.events.append(Event(EventKind.ACK, type_url, state.sent_version))
                if type_url in (TypeUrl.ROUTE, TypeUrl.LISTENER) and self._routes_settled():
                    outcome.extend(self._release_retired())
            # Otherwise the node kept an older version: after a NACK Envoy repeats the nonce
            # with the version it still runs (and no error) when only its subscription
            # changes. That is neither an ACK nor a NACK.
        elif first and request.version_info:
            self._adopt_known_version(state, request.version_info)
        outcome.extend(self._maybe_respond(state))
        if type_url is not TypeUrl.ROUTE:
            outcome.extend(self._routes_waiting())
        return outcome

    # -- queries ------------------------------------------------------------------------

    def status(self) -> dict[str, TypeStatus]:
        return {t.short: s.status for t, s in self._types.items() if s.requested}

    def in_flight(self) -> bool:
        """True while a response of any type awaits the node's ACK or NACK."""
        return any(state.status.pending_nonce for state in self._types.values())

    def settle_due(self) -> bool:
        """Never: a SotW node gets whole assignments, with nothing to settle afterwards
        (heliostat.xds.protocol.delta's `settle`)."""
        return False

    def settle(self) -> SotwOutcome:
        return Outcome()

    # -- internals ----------------------------------------------------------------------

    def _record_nack(self, state: _TypeState, request: discovery_pb2.DiscoveryRequest) -> Event:
        state.rejected_version = state.sent_version
        error = request.error_detail.message
        state.status.last_rejection = Rejection(
            state.sent_version, request.response_nonce, error, self._clock()
        )
        return Event(
            EventKind.NACK, state.type_url, state.sent_version, request.response_nonce, error
        )

    def _adopt_known_version(self, state: _TypeState, version: str) -> None:
        """A node reconnecting with the content we would send needs no response for it."""
        state.node_version = version
        resources = self._resources_for(state)
        if resources is not None and _version(resources) == version:
            self._adopt(state, resources, version)

    def _adopt(self, state: _TypeState, resources: list[Resource], version: str) -> None:
        state.sent_version = version
        state.sent_names = frozenset(r.name for r in resources)
        state.status.sent_version = state.status.acked_version = version
        if state.type_url is TypeUrl.LISTENER:
            self._listeners_known.update((r.name, r) for r in resources)
            self._listeners_accepted = {r.name: r.version for r in resources}

    def _resources_for(self, state: _TypeState) -> list[Resource] | None:
        if self._snapshot is None:
            return None
        resources = self._snapshot.select(state.type_url, state.names)
        if state.type_url is TypeUrl.CLUSTER and self._retired:
            present = {r.name for r in resources}
            resources += [r for n, r in sorted(self._retired.items()) if n not in present]
        if state.type_url is TypeUrl.LISTENER:
            current = {r.name: r for r in resources}
            kept = kept_until_replaced(current, self._listeners_accepted, self._listeners_known)
            resources += [self._listeners_known[name] for name in kept]
        return resources

    def _maybe_respond(self, state: _TypeState) -> SotwOutcome:
        outcome: SotwOutcome = Outcome()
        if not state.requested or state.type_url in self._withheld:
            return outcome
        resources = self._resources_for(state)
        if resources is None:
            return outcome
        version = _version(resources)
        if version == state.sent_version:
            return outcome
        if not state.nonce and version == state.node_version:
            # Nothing sent on this stream yet, and the node already runs this content.
            self._adopt(state, resources, version)
            return outcome
        if version == state.rejected_version:
            outcome.events.append(
                Event(EventKind.HELD, state.type_url, version, detail="NACKed before")
            )
            return outcome
        if state.type_url is TypeUrl.ROUTE and (missing := self._clusters_missing(resources)):
            self._routes_held = True
            outcome.events.append(
                Event(
                    EventKind.HELD,
                    state.type_url,
                    version,
                    detail="waits for clusters " + ", ".join(sorted(missing)),
                )
            )
            return outcome
        if state.type_url is TypeUrl.ROUTE:
            self._routes_held = False
        self._nonce_counter += 1
        state.nonce = str(self._nonce_counter)
        state.sent_version = version
        state.sent_names = frozenset(r.name for r in resources)
        state.status.sent_version = version
        state.status.pending_nonce = state.nonce
        state.status.responses += 1
        self.responses += 1
        type_url, nonce = state.type_url.value, state.nonce
        outcome.responses.append(  # the version names the resources by content
            _SHARED.get(
                (type_url, version, nonce),
                lambda: sum(len(r.packed.value) for r in resources),
                lambda: discovery_pb2.DiscoveryResponse(
                    version_info=version,
                    resources=[r.packed for r in resources],
                    type_url=type_url,
                    nonce=nonce,
                ),
            )
        )
        outcome.events.append(Event(EventKind.SENT, state.type_url, version, state.nonce))
        if state.type_url is TypeUrl.CLUSTER:
            outcome.extend(self._after_clusters_sent(resources))
        if state.type_url is TypeUrl.LISTENER:
            self._listeners_known.update((r.name, r) for r in resources)
            self._listeners_in_flight = {r.name: r.version for r in resources}
        return outcome

    def _clusters_missing(self, routes: list[Resource]) -> frozenset[str]:
        """Clusters these routes send to that the node was not sent, though the snapshot has
        them: the clusters that add them are held (NACKed), so the routes wait too."""
        clusters = self._types[TypeUrl.CLUSTER]
        if not clusters.requested or self._snapshot is None:
            return frozenset()
        known = self._snapshot.resources(TypeUrl.CLUSTER)
        named = frozenset().union(*(route_clusters(r) for r in routes))
        return frozenset(n for n in named - clusters.sent_names if n in known)

    def _routes_waiting(self) -> SotwOutcome:
        """Held routes, tried again once something else was answered (routes go last)."""
        if not self._routes_held:
            return Outcome()
        return self._maybe_respond(self._types[TypeUrl.ROUTE])

    def _after_clusters_sent(self, resources: list[Resource]) -> SotwOutcome:
        """Re-send endpoints when a cluster the node already had was updated.

        Envoy replaces an updated cluster with a new one that stays warming until it receives
        its ClusterLoadAssignment; it asks again with the version it has, which reads like an
        ACK, so an unchanged EDS would never be sent and the update would never take effect
        (go-control-plane#245; Istio pushes EDS after every CDS change).
        """
        previous = self._cluster_versions
        self._cluster_versions = {r.name: r.version for r in resources}
        updated = any(previous.get(r.name) not in (None, r.version) for r in resources)
        endpoints = self._types[TypeUrl.ENDPOINT]
        if not updated or not endpoints.sent_version:
            return Outcome()
        endpoints.sent_version = ""  # whatever it was, the new clusters have not seen it
        endpoints.node_version = ""
        return self._maybe_respond(endpoints)

    def _retire_removed_clusters(self, previous: Snapshot, current: Snapshot) -> None:
        clusters = self._types[TypeUrl.CLUSTER]
        gone = clusters.sent_names - set(current.resources(TypeUrl.CLUSTER))
        old = previous.resources(TypeUrl.CLUSTER)
        for name in gone:
            if name in old and not self._routes_settled(current):
                self._retired[name] = old[name]

    def _routes_settled(self, snapshot: Snapshot | None = None) -> bool:
        """True when the node has ACKed the current listeners and routes (or uses none), and
        has no other listeners or routes in flight that it may be applying right now."""
        snapshot = snapshot or self._snapshot
        if snapshot is None:
            return True
        for type_url in (TypeUrl.LISTENER, TypeUrl.ROUTE):
            state = self._types[type_url]
            if not state.requested:
                continue
            if state.status.pending_nonce:
                return False
            wanted = _version(snapshot.select(type_url, state.names))
            if state.status.acked_version != wanted:
                return False
        return True

    def _release_retired(self) -> SotwOutcome:
        if not self._retired:
            return Outcome()
        self._retired.clear()
        return self._maybe_respond(self._types[TypeUrl.CLUSTER])


def _subscription(type_url: TypeUrl, names: Iterable[str]) -> frozenset[str] | None:
    requested = frozenset(names)
    if type_url.wildcard_by_default and (not requested or "*" in requested):
        return None
    return requested - {"*"}


def _version(resources: list[Resource]) -> str:
    return combined_version(resources)
