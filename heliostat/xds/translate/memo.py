"""What one publisher remembers between translation rounds, as one object passed down.

Every tick rebuilds the snapshot of every node group, and most of it is what the last
round built. The tables that let translation reuse it live here, owned by whoever publishes
(`heliostat.runtime.publisher.Publisher`) and handed to `build_snapshot` explicitly, so two
publishers in one process (tests, benchmarks, two control planes) never share or rotate each
other's memory, and a caller without one gets a fresh, empty memo: correct, only slower.
"""

from __future__ import annotations

from heliostat.balance import EndpointView
from heliostat.balance.view import ReasonValue
from heliostat.xds.cache.memo import RoundMemo
from heliostat.xds.cache.snapshot import Resource

AssignmentKey = tuple[str, float, tuple[int, ...]]
LedsKey = tuple[
    str, float, tuple[tuple[str, int, int | None, bool, tuple[tuple[str, ReasonValue], ...]], ...]
]
LocalityKey = tuple[str, int, int | None, int, tuple[int, ...], tuple[tuple[str, ReasonValue], ...]]


class TranslationMemo:
    """The serialized parts of the last two rounds, keyed by what they were made of.

    - `serialized`: Resources by the identity of their message (the Resource holds the
      message, pinning the id): translators hand back the same message for content that held.
    - `assignments`: ClusterLoadAssignments by name, drop percentage and their localities'
      bytes by identity (pinned by the list in the value).
    - `localities`: serialized `endpoints` entries by region, priority, weight, scale, the
      endpoints by identity (pinned by the tuple in the value) and the reason by content.
    - `entries`: serialized `lb_endpoints` entries by the identity of their EndpointView
      (pinned): the control law hands back the same view while an endpoint's weight, health
      and reason hold, and one view appears in every region's view and every derived cluster.
    - `leds_assignments`: the LEDS form of assignments (heliostat.xds.translate.leds) by
      name, drop percentage and each locality's shape; `leds_endpoints`: LbEndpoint
      resources by collection and the identity of their EndpointView (pinned).
    """

    __slots__ = (
        "assignments",
        "entries",
        "leds_assignments",
        "leds_endpoints",
        "localities",
        "serialized",
    )

    def __init__(self) -> None:
        self.serialized: RoundMemo[int, Resource] = RoundMemo()
        self.assignments: RoundMemo[AssignmentKey, tuple[list[bytes], Resource]] = RoundMemo()
        self.localities: RoundMemo[LocalityKey, tuple[tuple[EndpointView, ...], bytes]] = (
            RoundMemo()
        )
        self.entries: RoundMemo[int, tuple[EndpointView, bytes]] = RoundMemo()
        self.leds_assignments: RoundMemo[LedsKey, Resource] = RoundMemo()
        self.leds_endpoints: RoundMemo[tuple[str, int], tuple[EndpointView, Resource]] = RoundMemo()

    def new_round(self) -> None:
        """Start a translation round: the last round's parts stay reachable, older ones go."""
        for table in (
            self.serialized,
            self.assignments,
            self.localities,
            self.entries,
            self.leds_assignments,
            self.leds_endpoints,
        ):
            table.rotate()

    def __len__(self) -> int:
        return (
            len(self.serialized)
            + len(self.assignments)
            + len(self.localities)
            + len(self.entries)
            + len(self.leds_assignments)
            + len(self.leds_endpoints)
        )
