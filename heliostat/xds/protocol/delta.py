"""Incremental (delta) ADS protocol state for one stream, free of I/O.

The node tells us what it has (`initial_resource_versions` on reconnect) and what it wants
(subscribe/unsubscribe); we send only resources whose version differs and name the ones that
are gone. Every name a node subscribes to is answered, with the resource or as removed. As in
SotW: NACKed content is held until it changes, types go out in make-before-break order, and a
cluster is removed only after the node has moved its routes off it, and a listener only
after the node has ACKed its replacement (`listeners`). A withheld type
(`withhold`) is not answered until it is released; the node keeps what it has meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from envoy.service.discovery.v3 import discovery_pb2

from heliostat.xds.cache.changes import changes, moved_types
from heliostat.xds.cache.responses import SharedResponses
from heliostat.xds.cache.versions import Versions
from heliostat.xds.protocol.events import Event, EventKind, Outcome, Rejection, TypeStatus
from heliostat.xds.protocol.held import (
    collections,
    is_pending,
    moved,
    named_collections,
    pending_form,
)
from heliostat.xds.protocol.listeners import kept_until_replaced
from heliostat.xds.resources.snapshot import Resource, Snapshot
from heliostat.xds.resources.types import PUSH_ORDER, TypeUrl, parse_type_url

# Streams in step answer a change with the same response: built once
# (heliostat.xds.cache.responses).
_SHARED: SharedResponses[discovery_pb2.DeltaDiscoveryResponse] = SharedResponses()

DeltaOutcome = Outcome[discovery_pb2.DeltaDiscoveryResponse]

WILDCARD = "*"
GLOB_SUFFIX = "/*"  # an xdstp glob collection: every resource whose name is under it


_NO_COLLECTIONS: frozenset[str] = frozenset()

# Enum members as module constants: an attribute of an Enum class costs ~0.3 us a look, and
# the per-stream path of a push looks dozens of times.
_CDS, _EDS, _LEDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT
_LDS, _RDS = TypeUrl.LISTENER, TypeUrl.ROUTE
_SENT, _ACK, _NACK, _STALE = EventKind.SENT, EventKind.ACK, EventKind.NACK, EventKind.STALE
_HELD, _UNKNOWN_TYPE = EventKind.HELD, EventKind.UNKNOWN_TYPE
_PENDING_OF = attrgetter("pending")


def _is_glob(name: str) -> bool:
    return name.startswith("xdstp://") and name.endswith(GLOB_SUFFIX)


@dataclass(slots=True)
class _Sent:
    """One response awaiting its ACK: what it changes on the node once applied."""

    # The resources sent (shared with the snapshot: a first LEDS response carries thousands,
    # and a thousand streams each holding a name -> version copy was tens of MB).
    updated: tuple[Resource, ...]
    removed: tuple[str, ...]
    version: str = ""  # the snapshot version the response carried

    def versions(self) -> Iterable[tuple[str, str]]:
        return ((r.name, r.version) for r in self.updated)

    def apply(self, have: Versions) -> None:
        have.update(self.versions())
        for name in self.removed:
            have.pop(name, None)


@dataclass(slots=True)
class _TypeState:
    type_url: TypeUrl
    requested: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    globs: set[str] = field(default_factory=set)  # collections, as their `.../` prefix
    # What the node has (name -> version), and that without what is in flight; both kept
    # as differences from a snapshot's shared resources (heliostat.xds.cache.versions).
    known: Versions = field(default_factory=Versions)
    acked: Versions = field(default_factory=Versions)
    unanswered: set[str] = field(default_factory=set)  # subscribed, not yet answered
    pending: dict[str, _Sent] = field(default_factory=dict)  # nonce -> what it carried
    rejected: dict[str, str] = field(default_factory=dict)  # name -> NACKed version
    status: TypeStatus = field(default_factory=TypeStatus)
    # LEDS: the resources `known` was last brought level with (None: not level, or the
    # subscription or a NACK changed it since); from there only what changed is looked at.
    level_with: Mapping[str, Resource] | None = None
    # EDS with LEDS: assignments the node has under a pending version (`held`), and what
    # the node listed when it connected (the assignments say which endpoints it holds).
    pending_assignments: set[str] = field(default_factory=set)
    initial: Mapping[str, str] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        if self.wildcard or name in self.names:
            return True
        return bool(self.globs) and name[: name.rfind("/") + 1] in self.globs


class DeltaStream:
    def __init__(self, node_id: str, clock: Callable[[], float] = time.time) -> None:
        self.node_id = node_id
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._types = {t: _TypeState(t) for t in PUSH_ORDER}
        self._nonce_counter = 0
        self.responses = 0  # sent on this stream, every type: what `status` sums, kept
        self._withheld: frozenset[TypeUrl] = frozenset()
        self._listeners_known: dict[str, Resource] = {}  # the last sent under every name
        self._settling = False  # within `settle`: pending assignments may take their version
        # The collections each assignment sent on this stream names (`_fill_new_watches`).
        self._named: dict[str, frozenset[str]] = {}

    # -- inputs -------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot) -> DeltaOutcome:
        previous = self._snapshot
        self._snapshot = current = snapshot.for_delta()  # LEDS where the snapshot has it
        # The types whose resources moved between the two snapshots, worked out once for
        # every stream: a type that did not move is carried over without a look (`_carry`).
        moved = moved_types(previous, current) if previous is not None else None
        outcome: DeltaOutcome = Outcome()
        for type_url in PUSH_ORDER:
            state = self._types[type_url]
            if moved is not None and type_url not in moved and self._carry(state, previous):
                continue
            outcome.extend(self._maybe_respond(state))
        return outcome

    def withhold(self, types: frozenset[TypeUrl]) -> DeltaOutcome:
        """Send nothing of `types` from now on; types no longer in it are answered now."""
        if types == self._withheld:  # nearly always: nothing withheld before or now
            return Outcome()
        released = self._withheld - types
        self._withheld = types
        outcome: DeltaOutcome = Outcome()
        for type_url in PUSH_ORDER:
            if type_url in released:
                outcome.extend(self._maybe_respond(self._types[type_url]))
        return outcome

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> DeltaOutcome:
        type_url = parse_type_url(request.type_url)
        if type_url is None:
            return Outcome(events=[Event(_UNKNOWN_TYPE, request.type_url)])
        state = self._types[type_url]
        outcome: DeltaOutcome = Outcome()
        if not state.requested:
            state.requested = True
            state.known = Versions(request.initial_resource_versions)
            state.acked = Versions(request.initial_resource_versions)
            subscribe = set(request.resource_names_subscribe)
            state.wildcard = type_url.wildcard_by_default and not subscribe
            if type_url is _EDS:
                state.initial = dict(request.initial_resource_versions)
                state.pending_assignments = {n for n, v in state.initial.items() if is_pending(v)}
        if request.response_nonce:
            outcome.events.append(self._settle(state, request))
        self._update_subscription(
            state, request.resource_names_subscribe, request.resource_names_unsubscribe
        )
        outcome.extend(self._maybe_respond(state))
        if type_url in (_LDS, _RDS) and self._routes_settled():
            outcome.extend(self._maybe_respond(self._types[_CDS]))
        return outcome

    def settle(self) -> DeltaOutcome:
        """Send pending assignments under their own version where the node now holds every
        endpoint they cover. Only this does: the response changes nothing the node routes
        by and serves only a later reconnect (heliostat.xds.protocol.held), so the server
        calls it once the node's endpoints were still for a while and the fan-out of a
        change is done (heliostat.xds.grpc.settle), and a change coming first finds the
        assignment still pending and sends its endpoints alone."""
        if not self.settle_due():
            return Outcome()
        self._settling = True
        try:
            return self._maybe_respond(self._types[_EDS])
        finally:
            self._settling = False

    # -- queries ------------------------------------------------------------------------

    def status(self) -> dict[str, TypeStatus]:
        endpoints = self._types[_EDS]
        endpoints.status.settling = len(endpoints.pending_assignments)
        return {t.short: s.status for t, s in self._types.items() if s.requested}

    def in_flight(self) -> bool:
        """True while a response of any type awaits the node's ACK or NACK."""
        return any(map(_PENDING_OF, self._types.values()))  # twice per stream and change

    def settle_due(self) -> bool:
        """True when `settle` would send: an assignment is pending on the node and the
        node holds every endpoint it covers."""
        endpoints = self._types[_EDS]
        if not endpoints.pending_assignments or self._snapshot is None:
            return False
        if _EDS in self._withheld or self._types[_LEDS].pending:
            return False  # (asked after every step: LEDS in flight settles nothing)
        held = self._members_held()
        return any(held(n) for n in endpoints.pending_assignments)

    # -- internals ----------------------------------------------------------------------

    def _settle(self, state: _TypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> Event:
        sent = state.pending.pop(request.response_nonce, None)
        if sent is None:
            return Event(_STALE, state.type_url, nonce=request.response_nonce)
        if state.status.pending_nonce == request.response_nonce:
            state.status.pending_nonce = ""
        if not request.HasField("error_detail"):
            if not state.pending:
                # Nothing else in flight: the node holds what was sent. A copy of `known`
                # shares its base and is nearly free, where applying a first LEDS
                # response's ~500 endpoints one by one was not, for every stream.
                state.acked = state.known.copy()
            else:
                sent.apply(state.acked)
                if state.type_url is _LEDS:  # share what `known` shares
                    _rebase(state.acked, state.known.base)
            # This response's version: a later one may still be in flight.
            state.status.acked_version = sent.version
            return Event(_ACK, state.type_url, sent.version)
        # The node applied none of it: hold the rejected versions; the node has what it ACKed
        # plus whatever later responses, still in flight, carry.
        state.level_with = None
        if state.type_url is _EDS:
            self._named.clear()  # which collections it names is not known: none, to be safe
        state.rejected.update(sent.versions())
        state.known = state.acked.copy()
        for later in state.pending.values():
            later.apply(state.known)
        if state.pending_assignments:
            known = state.known
            state.pending_assignments = {
                n for n in state.pending_assignments if is_pending(known.get(n))
            }
        error = request.error_detail.message
        version = sent.version
        state.status.last_rejection = Rejection(
            version, request.response_nonce, error, self._clock()
        )
        return Event(_NACK, state.type_url, version, request.response_nonce, error)

    def _update_subscription(
        self, state: _TypeState, subscribe: Collection[str], unsubscribe: Collection[str]
    ) -> None:
        state.status.subscribed = None if state.wildcard else len(state.names) + len(state.globs)
        if not subscribe and not unsubscribe:
            # An ACK alone: what the node wants is as it was, and a stream level with a
            # snapshot stays so (a full walk of a thousand LEDS endpoints on every ACK was
            # a third of serve's time in a push to 1,000 delta streams).
            return
        state.level_with = None
        for name in subscribe:
            if name == WILDCARD:
                state.wildcard = True
            elif _is_glob(name):
                # Answered by sending its members; heliostat names no empty collection.
                state.globs.add(name[:-1])
            else:
                state.names.add(name)
                state.unanswered.add(name)
        for name in unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
                continue
            if _is_glob(name):
                state.globs.discard(name[:-1])
                for member in [n for n in state.known if n.startswith(name[:-1])]:
                    if not state.wants(member):
                        state.known.pop(member, None)
                        state.acked.pop(member, None)
                continue
            state.names.discard(name)
            state.unanswered.discard(name)
            if not state.wildcard:
                state.known.pop(name, None)
                state.acked.pop(name, None)
        state.status.subscribed = None if state.wildcard else len(state.names) + len(state.globs)

    def _carry(self, state: _TypeState, previous: Snapshot | None) -> bool:
        """Move `state` onto the current snapshot when it is level with `previous` and this
        type's resources did not move between them: `_maybe_respond` would find nothing to
        send, hold or remove, so only what it would leave behind is done. False (nothing
        done) when the state is not in that common case.

        At 1,000 delta streams a weight change moves LEDS endpoints and their assignments
        only; walking the other types' unchanged maps in every stream (a memo lookup per
        look, a rebase, an outcome each) was about half of the protocol's time per push."""
        if previous is None or self._snapshot is None:
            return False
        old = previous.resources(state.type_url)
        if (
            not state.requested
            or state.level_with is not old
            or state.unanswered
            or state.type_url in self._withheld
            or self._types[_EDS].initial  # LEDS not seeded yet (`_seed`)
        ):
            return False
        available = self._snapshot.resources(state.type_url)
        known = state.known
        if known.base is old:
            known.rebase(available, ())  # the same versions under every name
        else:
            _rebase(known, available)
        state.level_with = available
        self._in_step(state)
        return True

    def _still_level(self, state: _TypeState, available: Mapping[str, Resource]) -> bool:
        """True, with what `_maybe_respond` would leave behind done, when `state` is level
        with this very map (an ACK, a notice of another type's change): `_differences`
        would find nothing to send, hold or remove."""
        if state.level_with is not available or state.unanswered or self._settling:
            return False
        if state.known.base is not available:
            _rebase(state.known, available)
        self._in_step(state)
        return True

    def _in_step(self, state: _TypeState) -> None:
        """Nothing of `state`'s type in flight: the node has this snapshot's resources."""
        if not state.pending and self._snapshot is not None:
            state.status.sent_version = state.status.acked_version = self._snapshot.version

    def _missing(
        self, state: _TypeState, available: Mapping[str, Resource], removed: list[str]
    ) -> list[str]:
        """Names subscribed to that do not exist: said so, so the node stops waiting."""
        if not state.unanswered:
            return []
        missing = sorted(n for n in state.unanswered if n not in available and n not in removed)
        state.unanswered.clear()
        return [n for n in missing if n not in state.known]

    def _maybe_respond(self, state: _TypeState) -> DeltaOutcome:
        outcome: DeltaOutcome = Outcome()
        if not state.requested or self._snapshot is None or state.type_url in self._withheld:
            return outcome
        # Before the first LEDS answer, not at the request: a starting heliostat withholds
        # endpoints until its first round, and the snapshot to compare with is the one
        # about to be sent.
        self._seed(state)
        available = self._snapshot.resources(state.type_url)
        if self._still_level(state, available):
            return outcome
        updates, held, removed, deferred = self._differences(state, available)
        removed += self._missing(state, available, removed)
        if held:
            outcome.events.append(
                Event(_HELD, state.type_url, detail="NACKed before: " + ", ".join(held))
            )
        if not updates and not removed:
            if state.level_with is available:  # the node's table: only where it differs
                _rebase(state.known, available)
            if not held and not state.pending and not deferred:
                # The node already has exactly this snapshot's resources (say, after a
                # reconnect with initial_resource_versions): it is in sync without a push.
                state.status.sent_version = state.status.acked_version = self._snapshot.version
            return outcome
        before = state.known.as_dict() if state.type_url is _CDS else {}
        self._nonce_counter += 1
        nonce = str(self._nonce_counter)
        state.pending[nonce] = _Sent(
            updated=tuple(updates),
            removed=tuple(removed),
            version=self._snapshot.version,
        )
        for resource in updates:
            state.known[resource.name] = resource.version
        for name in removed:
            state.known.pop(name, None)
        if state.level_with is available:
            _rebase(state.known, available)
        version = self._snapshot.version
        state.status.sent_version = version
        state.status.pending_nonce = nonce
        state.status.responses += 1
        self.responses += 1
        type_url = state.type_url.value
        updated = tuple((r.name, r.version) for r in updates)
        key = (type_url, version, nonce, updated, tuple(removed))
        outcome.responses.append(
            _SHARED.get(
                key,
                lambda: sum(len(r.packed.value) for r in updates),
                lambda: discovery_pb2.DeltaDiscoveryResponse(
                    system_version_info=version,
                    type_url=type_url,
                    resources=[
                        discovery_pb2.Resource(name=r.name, version=r.version, resource=r.packed)
                        for r in updates
                    ],
                    removed_resources=removed,
                    nonce=nonce,
                ),
            )
        )
        outcome.events.append(Event(_SENT, state.type_url, version, nonce))
        outcome.extend(self._after_sending(state.type_url, updates, removed, before))
        return outcome

    def _after_sending(
        self, type_url: TypeUrl, updates: list[Resource], removed: list[str], before: dict[str, str]
    ) -> DeltaOutcome:
        """What a response of `type_url` brings along: endpoints for replaced clusters,
        members for collections an assignment newly names; listeners are remembered."""
        if type_url is _CDS:
            return self._resend_endpoints(updates, before)
        if type_url is _EDS and self._snapshot and self._snapshot.members:
            return self._fill_new_watches(updates, removed)
        if type_url is _LDS:
            self._listeners_known.update((r.name, r) for r in updates)
        return Outcome()

    def _differences(
        self, state: _TypeState, available: Mapping[str, Resource]
    ) -> tuple[list[Resource], list[str], list[str], bool]:
        """What to send, what to hold (NACKed before), what to remove and whether removals
        were kept back. A stream level with an earlier snapshot looks only at what changed
        since (`changes`, worked out once for every stream)."""
        updates: list[Resource] = []
        held: list[str] = []
        gone = None
        names: Iterable[str] = available
        leds = state.type_url is _EDS and bool(self._snapshot and self._snapshot.members)
        # Made on first need: an assignment the node has pending stays pending whatever
        # the node holds (the common push while endpoints move looks at nothing else).
        holds = _OnFirstCall(self._members_held) if leds else None
        if state.level_with is not None and not state.unanswered:
            names, gone = changes(state.level_with, available)
            if leds and self._settling:  # pending ones are finished without changing
                names = names | state.pending_assignments.intersection(available)
        known = state.known
        for name in sorted(names):
            resource = available[name]
            has = known.get(name)
            if has == resource.version or not state.wants(name):
                continue
            if holds is not None:  # differs: its own version only if the node holds its endpoints
                resource = self._as_held(resource, has, holds)
                if has == resource.version:
                    continue  # pending already, with this content
            if state.rejected.get(name) == resource.version:
                held.append(name)
            else:
                updates.append(resource)
        removed: list[str] = []
        deferred = False
        if gone is None or gone:  # not level, or something went: else the common push
            removed, deferred = self._removals(state, available, gone)
        # Level: from here the next snapshot is compared by what changed, for every type
        # (a thousand streams each walking every cluster, assignment, listener and route on
        # every push was ~50 us per stream, most of a push's protocol work).
        if leds:
            pending = state.pending_assignments
            for resource in updates:
                if is_pending(resource.version):
                    pending.add(resource.name)
                else:
                    pending.discard(resource.name)
            pending.intersection_update(available)  # the rest are removed
        state.level_with = None if held or deferred else available
        return updates, held, removed, deferred

    def _removals(
        self,
        state: _TypeState,
        available: Mapping[str, Resource],
        candidates: Iterable[str] | None = None,
    ) -> tuple[list[str], bool]:
        """The names the node has that may go now, and whether some were kept back;
        `candidates` narrows the names looked at (those gone since the stream was level)."""
        names = state.known if candidates is None else candidates
        known = state.known
        removed = sorted(
            n for n in names if n in known and (n not in available or not state.wants(n))
        )
        if not removed:
            return removed, False
        if state.type_url is _CDS and not self._routes_settled():
            return [], True  # make-before-break: routes still point at these
        if state.type_url is _LDS:
            current = {n: r for n, r in available.items() if state.wants(n)}
            kept = kept_until_replaced(current, state.acked, self._listeners_known)
            if kept:  # make-before-break: the node has not accepted their replacement yet
                return [n for n in removed if n not in kept], True
        return removed, False

    def _resend_endpoints(self, clusters: list[Resource], before: dict[str, str]) -> DeltaOutcome:
        """Re-send the endpoints of clusters the node had and that were just updated.

        Envoy replaces an updated cluster with a new one that stays warming until it receives
        its ClusterLoadAssignment, and it does not ask again for a name it is subscribed to
        (go-control-plane#245; Istio pushes EDS after every CDS change).
        """
        endpoints = self._types[_EDS]
        updated = [r.name for r in clusters if before.get(r.name) not in (None, r.version)]
        stale = [name for name in updated if name in endpoints.known]
        if not stale:
            return Outcome()
        endpoints.level_with = None  # what is popped below is sent again
        for name in stale:
            endpoints.known.pop(name)
        outcome = self._maybe_respond(endpoints)
        # The new cluster's LEDS subscriptions share the old one's (still subscribed, so
        # Envoy asks for nothing): they fill only from what is sent next. Send them again.
        leds = self._types[_LEDS]
        assert self._snapshot is not None
        again = [m for name in stale for m in self._snapshot.members.get(name, ())]
        if leds.requested and again:
            leds.level_with = None
            for name in again:
                leds.known.pop(name, None)
            outcome.extend(self._maybe_respond(leds))
        return outcome

    def _fill_new_watches(self, updates: list[Resource], removed: list[str]) -> DeltaOutcome:
        """Send again the members of collections that a just-sent assignment names for the
        first time while the node already subscribes to them.

        Localities with the same endpoints share a collection (heliostat.xds.translate.leds.
        leds_forms). An assignment naming one the node already has (another cluster's)
        adds a second watch on it in Envoy 1.40, which asks for nothing (still subscribed):
        that cluster would stay warming, without hosts, until a member changed
        (bench/measure/leds_probe.py --shared). Envoy hands a collection's update to every
        watch on it, so the members sent again after the assignment fill the new one."""
        assert self._snapshot is not None
        leds = self._types[_LEDS]
        members = self._snapshot.members
        named_by = named_collections(members)  # once per snapshot, for every stream
        named = self._named
        again: set[str] = set()
        for resource in updates:
            now = named_by.get(resource.name, _NO_COLLECTIONS)
            before = named.get(resource.name)
            if before is now:  # the common case: what it named before (the very set)
                continue
            named[resource.name] = now
            if leds.globs:
                again.update(now.difference(before or ()).intersection(leds.globs))
        for name in removed:
            named.pop(name, None)
        if not again or not leds.requested:
            return Outcome()
        stale = {
            member
            for resource in updates
            for member in members.get(resource.name, ())
            if member[: member.rfind("/") + 1] in again
        }
        leds.level_with = None  # what is popped below is sent again
        for member in stale:
            leds.known.pop(member, None)
        return self._maybe_respond(leds)

    def _as_held(
        self, assignment: Resource, known: str | None, held: Callable[[str], bool]
    ) -> Resource:
        """`assignment` under its own version if the node holds every endpoint it covers
        (ACKed, nothing of LEDS in flight), else under a pending version (heliostat.xds.
        protocol.held): a node must never list a version whose endpoints it lacks. One
        the node has pending stays so until the stream settles (`settle`)."""
        if (self._settling or not is_pending(known)) and held(assignment.name):
            return assignment
        return pending_form(assignment)

    def _members_held(self) -> Callable[[str], bool]:
        """Whether the node holds every endpoint a cluster's assignment covers (ACKed,
        nothing of LEDS in flight, subscribed to all of its collections), for the clusters
        of one snapshot: what is the same for all of them is looked at once (a change
        asks for each assignment that moved, on every stream)."""
        assert self._snapshot is not None
        members_of = self._snapshot.members
        leds = self._types[_LEDS]
        ready = leds.requested and not leds.pending and leds.level_with is not None
        changed = (
            moved(leds.level_with, self._snapshot.resources(_LEDS))
            if ready and leds.level_with is not None
            else frozenset()
        )

        def held(cluster: str) -> bool:
            members = members_of.get(cluster, ())
            if not members:
                return True
            if not ready:
                return False
            covered = collections(members)
            if not leds.wildcard and not covered <= leds.globs:
                return False  # the node does not take (all of) them yet
            return covered.isdisjoint(changed)

        return held

    def _seed(self, leds: _TypeState) -> None:  # any type's state: only LEDS is seeded
        """A reconnecting node lists no LEDS endpoint, but each assignment it lists at the
        version this snapshot gives it stands for exactly that assignment's members at
        this snapshot's versions (heliostat.xds.protocol.held): take those as held."""
        snapshot = self._snapshot
        initial = self._types[_EDS].initial
        if leds.type_url is not _LEDS or not initial:
            return
        if snapshot is None or not snapshot.members:
            return
        assignments = snapshot.resources(_EDS)
        endpoints = snapshot.resources(_LEDS)
        held = [
            (member, endpoints[member].version)
            for cluster, version in initial.items()
            if (a := assignments.get(cluster)) is not None and a.version == version
            for member in snapshot.members.get(cluster, ())
            if member in endpoints
        ]
        leds.known.update(held)
        leds.acked.update(held)
        self._types[_EDS].initial = {}  # once, before anything of LEDS is sent

    def _routes_settled(self) -> bool:
        """True when listeners and routes on the node match the snapshot (or are unused)."""
        if self._snapshot is None:
            return True
        for type_url in (_LDS, _RDS):
            state = self._types[type_url]
            if not state.requested:
                continue
            if state.pending:
                return False
            for name, resource in self._snapshot.resources(type_url).items():
                if state.wants(name) and state.known.get(name) != resource.version:
                    return False
        return True


class _OnFirstCall:
    """`make()`'s function, made when first called (`DeltaStream._members_held` looks at
    every collection that moved: not needed when every assignment that moved is pending)."""

    __slots__ = ("_function", "_make")

    def __init__(self, make: Callable[[], Callable[[str], bool]]) -> None:
        self._make = make
        self._function: Callable[[str], bool] | None = None

    def __call__(self, name: str) -> bool:
        if self._function is None:
            self._function = self._make()
        return self._function(name)


def _rebase(table: Versions, base: Mapping[str, Resource]) -> None:
    """Move `table` onto `base`, looking only at the names that differ between its current
    base and `base` (one diff per pair of snapshots, shared by every stream)."""
    if table.base is base:
        table.rebase(base, ())
        return
    changed, gone = changes(table.base, base)
    table.rebase(base, changed | gone)
