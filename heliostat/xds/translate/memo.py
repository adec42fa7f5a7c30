"""What one publisher remembers between translation rounds, as one object passed down.

Every tick rebuilds the snapshot of every node group, and most of it is what the last
round built. The tables that let translation reuse it live here, owned by whoever publishes
(`heliostat.runtime.publisher.Publisher`) and handed to `build_snapshot` explicitly, so two
publishers in one process (tests, benchmarks, two control planes) never share or rotate each
other's memory, and a caller without one gets a fresh, empty memo: correct, only slower.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import compress
from typing import TYPE_CHECKING, Protocol

from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message

from heliostat.balance import EndpointView
from heliostat.balance.view import ReasonValue
from heliostat.planning.subsets import Picked
from heliostat.xds.resources.memo import RoundMemo
from heliostat.xds.resources.snapshot import Resource

if TYPE_CHECKING:  # leds.py builds on this module
    from heliostat.xds.translate.leds import Collection, EndpointMap, LedsAssignment


class _Rotating(Protocol):
    def rotate(self) -> None: ...


AssignmentKey = tuple[str, float, tuple[int, ...]]
LedsKey = tuple[
    str,
    float,
    tuple[tuple[str, int, int | None, str | None, tuple[tuple[str, ReasonValue], ...]], ...],
]
LocalityKey = tuple[str, int, int | None, int, int, tuple[tuple[str, ReasonValue], ...]]
Entry = tuple[EndpointView, bytes]
Payload = tuple[EndpointView, str, Any, bytes]  # the view, version, packed bytes, version
Slot = tuple[str, str]  # a locality's cluster and region: where its last members are found


class TranslationMemo:
    """The serialized parts of the last two rounds, keyed by what they were made of.

    - `serialized`: Resources by the identity of their message (the Resource holds the
      message, pinning the id): translators hand back the same message for content that held.
    - `assignments`: ClusterLoadAssignments by name, drop percentage and their localities'
      bytes by identity (pinned by the list in the value).
    - `localities`: serialized `endpoints` entries by region, priority, weight, scale, the
      identity of their members' bytes (pinned by the value) and the reason by content.
    - `member_tuples`: a locality's `lb_endpoints` entries joined, by the identity of its
      endpoint tuple (pinned): every region's view of a model holds the same tuple in each
      region's locality, and so do its batch and derived clusters, with other priorities,
      weights and reasons.
    - `slots`: by cluster and region, the endpoint tuple last joined there (pinned), each
      of its entries and their join: a new tuple is compared with it position by position,
      so a round encodes and looks up only the endpoints whose view changed.
    - `entries`: serialized `lb_endpoints` entries by the identity of their EndpointView
      (pinned): the control law hands back the same view while an endpoint's weight, health
      and reason hold, and one view appears in every region's view and every derived cluster.
    - `picks`: derived clusters' subsets of a locality's endpoints (`planning.subsets`), by
      the identity of the source tuple (pinned) and the filter.
    - `messages`: the messages a node group's snapshot rebuilds on every round although
      they rarely change (clusters, the listener, the routes), by what they are made of;
      the same message object lets `serialized` skip serializing and hashing it again.
    - `leds_assignments`: the LEDS form of assignments (heliostat.xds.translate.leds) by
      name, drop percentage and each locality's shape; `collections`: each collection's
      LbEndpoint resources by its name (the endpoint tuple they were made from pinned,
      for the next round to compare with); `leds_forms`: a cluster's whole LEDS form by
      the identity of its assignment and collections (pinned); `leds_payloads`: an
      endpoint's LbEndpoint bytes, packed, and their version by the identity of its
      EndpointView (pinned), shared by every collection it is a member of;
      `endpoint_maps`: by node group, its collections and LbEndpoint resources by name
      (`leds.endpoint_map`), which the group's next round copies and brings up to date;
      `shared_maps`: those maps by the identity of the last map and of the collections
      (both pinned), so node groups with the same collections share one.
    - `region_labels`: whether endpoints carry their region in `envoy.lb` metadata (the
      east-west hop's subsets, `east_west.py`): every encoded endpoint part above follows
      it, so `label_regions` forgets them when it changes.
    """

    __slots__ = (
        "assignments",
        "collections",
        "endpoint_maps",
        "entries",
        "leds_assignments",
        "leds_forms",
        "leds_payloads",
        "localities",
        "member_tuples",
        "messages",
        "picks",
        "region_labels",
        "serialized",
        "shared_maps",
        "slots",
    )

    def __init__(self) -> None:
        self.serialized: RoundMemo[int, Resource] = RoundMemo()
        self.assignments: RoundMemo[AssignmentKey, tuple[list[bytes], Resource]] = RoundMemo()
        self.localities: RoundMemo[LocalityKey, tuple[bytes, bytes]] = RoundMemo()
        self.member_tuples: RoundMemo[int, tuple[tuple[EndpointView, ...], bytes]] = RoundMemo()
        self.slots: RoundMemo[Slot, tuple[tuple[EndpointView, ...], list[bytes], bytes]] = (
            RoundMemo()
        )
        self.entries = EntryTable()
        self.messages: RoundMemo[Hashable, tuple[object, Message]] = RoundMemo()
        self.picks: RoundMemo[tuple[int, str, Hashable], Picked] = RoundMemo()
        self.leds_assignments: RoundMemo[LedsKey, Resource] = RoundMemo()
        self.collections: RoundMemo[str, Collection] = RoundMemo()
        self.endpoint_maps: RoundMemo[str, EndpointMap] = RoundMemo()
        self.leds_payloads: RoundMemo[int, Payload] = RoundMemo()
        self.leds_forms: RoundMemo[tuple[int, ...], tuple[Resource, LedsAssignment]] = RoundMemo()
        self.shared_maps: RoundMemo[
            tuple[int, frozenset[int]], tuple[EndpointMap | None, EndpointMap]
        ] = RoundMemo()
        self.region_labels = False

    def label_regions(self, on: bool) -> None:
        """Label endpoints with their region from now on (or stop): a change forgets every
        encoded endpoint part, whose bytes hold the label or not."""
        if on == self.region_labels:
            return
        self.region_labels = on
        for table in self._encoded_endpoints():
            table.rotate()
            table.rotate()

    def _encoded_endpoints(self) -> tuple[_Rotating, ...]:
        """The tables holding encoded endpoint parts (what a region label changes)."""
        return (
            self.serialized,
            self.assignments,
            self.localities,
            self.member_tuples,
            self.slots,
            self.entries,
            self.leds_assignments,
            self.collections,
            self.endpoint_maps,
            self.leds_forms,
            self.leds_payloads,
            self.shared_maps,
        )

    def new_round(self) -> None:
        """Start a translation round: the last round's parts stay reachable, older ones go."""
        for table in (*self._encoded_endpoints(), self.messages, self.picks):
            table.rotate()

    def __len__(self) -> int:
        return (
            len(self.serialized)
            + len(self.assignments)
            + len(self.localities)
            + len(self.member_tuples)
            + len(self.slots)
            + len(self.messages)
            + len(self.picks)
            + len(self.entries)
            + len(self.leds_assignments)
            + len(self.collections)
            + len(self.endpoint_maps)
            + len(self.leds_forms)
            + len(self.leds_payloads)
            + len(self.shared_maps)
        )


class EntryTable(RoundMemo[int, Entry]):
    """Encoded `lb_endpoints` entries by the identity of their EndpointView, the value
    pinning the view (so an id found here is that very object, never a recycled id); the
    current and the last round's, as a RoundMemo keeps them.

    The first locality of every round finds its endpoints in the last round's table; a
    RoundMemo moves them over one by one in Python, which was a pass over the whole fleet
    every tick. `get_many` moves a locality's worth in C.
    """

    __slots__ = ()

    def this_round(self, keys: Sequence[int]) -> list[Entry | None]:
        """Every key's entry put or carried this round, or None: for views new to a
        locality, which only another locality of this round can have encoded already."""
        return list(map(self._current.get, keys))

    def get_many(self, keys: Sequence[int]) -> list[Entry | None]:
        """Every key's entry or None (what the last round had is carried into this one)."""
        current = self._current
        found = list(map(current.get, keys))
        if None in found:
            earlier = list(map(self._previous.get, keys))
            # Carry over what the last round had: compress keeps the keys whose entry was
            # found, filter the entries themselves, in the same order.
            current.update(zip(compress(keys, earlier), filter(None, earlier), strict=True))
            found = list(map(current.get, keys))
        return found
