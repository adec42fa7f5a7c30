"""The fluid engine's fleet: replicas that were treated alike share one state (a group).

Replicas of one region that run the same build, started together and have seen the same
traffic are indistinguishable: heliostat's law gives them the same signals, weights and
health, and Envoy's balancers the same share. They are kept as one group with one state per
replica (requests in it; how many came from each origin; its success counter) and a member
list (their addresses, for the policy). A group splits when its members stop being alike
(part of a region gets a canary build, part of it is drained), and a newer group merges into
an older one once their states agree and the law treats them alike.

Lifecycle of a replica: provisioning (GPUs held, not serving, not in the policy) ->
serving -> draining (in the policy as drained: finishes what it holds, gets nothing new) ->
released. A region's loss makes its groups `dead` (still in the policy, failing every
connection) until it comes back, empty.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.topology import ReplicaId

CANARY_VERSION = "canary"
MERGE_TOLERANCE = 0.02  # relative difference of requests per replica that still merges


class Phase(StrEnum):
    PROVISIONING = "provisioning"
    SERVING = "serving"
    DRAINING = "draining"
    DEAD = "dead"


@dataclass(eq=False)
class Group:
    gid: str
    region: str
    members: list[ReplicaId]
    model: FastReplica
    phase: Phase = Phase.SERVING
    error_rate: float = 0.0
    ready_at: float = 0.0
    drained_since: float = 0.0
    # Per replica: requests in the replica and its success counter.
    n: float = 0.0
    served_total: float = 0.0
    # Over the whole group: requests in it, by origin region (for each gateway's counts).
    by_origin: dict[str, float] = field(default_factory=dict)
    # Arrivals per replica per second, smoothed over a few seconds (what the random part of
    # its queue follows; `fluid.RATE_TAU_S`).
    rate: float = 0.0
    # The random part of its queue as far as it has built up (mean requests waiting), and
    # that over its stationary level at `rate` (see `fastmodel.FastReplica.relaxation_s`).
    queue: float = 0.0
    built: float = 0.0
    build: str | None = None
    # How its connections fail while dead ("blackhole": the connect timeout runs out;
    # "refuse": at once), and the share of its in-system requests completed last step.
    failure: str = "blackhole"
    done_share: float = 0.0

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def routable(self) -> bool:
        """In the policy and taking new requests (what a view may send to)."""
        return self.phase in (Phase.SERVING, Phase.DEAD)

    @property
    def listed(self) -> bool:
        """In the policy heliostat serves."""
        return self.phase is not Phase.PROVISIONING

    def in_system(self) -> float:
        return self.n * self.count


class Fleet:
    """Every group of the planet, and the bookkeeping that moves replicas between them."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self._ids = itertools.count()
        self._next_index: dict[str, int] = {}
        self._member_of: dict[ReplicaId, str] = {}
        # A member's success counter is its group's plus this offset, so a replica's counter
        # runs on smoothly when its group merges into another (a jump would read as a burst
        # of completions, a fall as a restart).
        self.counter_offset: dict[ReplicaId, float] = {}
        self.version = 0  # bumped whenever membership or phases change

    # -- building ----------------------------------------------------------------------------

    def new_replicas(self, region: str, count: int, build: str | None = None) -> list[ReplicaId]:
        start = self._next_index.get(region, 0)
        self._next_index[region] = start + count
        return [ReplicaId(region, start + i, build) for i in range(count)]

    def add(self, group: Group) -> Group:
        self.groups[group.gid] = group
        for member in group.members:
            self._member_of[member] = group.gid
        self.version += 1
        return group

    def new_gid(self, region: str) -> str:
        return f"{region}#{next(self._ids)}"

    def group_of(self, replica: ReplicaId) -> Group:
        return self.groups[self._member_of[replica]]

    def served_total(self, replica: ReplicaId, group: Group) -> float:
        return group.served_total + self.counter_offset.get(replica, 0.0)

    def restarted(self, group: Group) -> None:
        """The group's replicas restarted: their counters start again at zero."""
        group.served_total = 0.0
        for member in group.members:
            self.counter_offset.pop(member, None)

    # -- views of the fleet ------------------------------------------------------------------

    def __iter__(self) -> Iterator[Group]:
        return iter(list(self.groups.values()))

    def in_region(self, region: str) -> list[Group]:
        return [g for g in self.groups.values() if g.region == region]

    def listed(self) -> list[ReplicaId]:
        return [m for g in self.groups.values() if g.listed for m in g.members]

    def drained(self) -> list[ReplicaId]:
        return [m for g in self.groups.values() if g.phase is Phase.DRAINING for m in g.members]

    def live_regions(self) -> set[str]:
        return {g.region for g in self.groups.values() if g.phase is Phase.SERVING and g.count}

    def allocated(self) -> int:
        """Replicas holding GPUs (every phase)."""
        return sum(g.count for g in self.groups.values())

    # -- changes -----------------------------------------------------------------------------

    def split(self, group: Group, count: int, **changes: object) -> Group:
        """`count` members of `group` become a new group with the same state (then changed)."""
        count = min(count, group.count)
        moved, group.members = group.members[:count], group.members[count:]
        part = Group(
            gid=self.new_gid(group.region),
            region=group.region,
            members=moved,
            model=group.model,
            phase=group.phase,
            error_rate=group.error_rate,
            ready_at=group.ready_at,
            n=group.n,
            served_total=group.served_total,
            by_origin={o: v * count / (count + group.count) for o, v in group.by_origin.items()},
            rate=group.rate,
            queue=group.queue,
            built=group.built,
            build=group.build,
            failure=group.failure,
            done_share=group.done_share,
        )
        for o in group.by_origin:
            group.by_origin[o] -= part.by_origin[o]
        for key, value in changes.items():
            setattr(part, key, value)
        if not group.members:
            del self.groups[group.gid]
        return self.add(part)

    def remove(self, group: Group) -> None:
        for member in group.members:
            self._member_of.pop(member, None)
            self.counter_offset.pop(member, None)
        self.groups.pop(group.gid, None)
        self.version += 1

    def touch(self) -> None:
        self.version += 1

    def merge(self, alike: Iterable[tuple[Group, Group]]) -> None:
        """Merge each (younger, older) pair: the older keeps the combined state."""
        for young, old in alike:
            if young.gid not in self.groups or old.gid not in self.groups:
                continue
            total = young.count + old.count
            old.n = (old.n * old.count + young.n * young.count) / total
            old.rate = (old.rate * old.count + young.rate * young.count) / total
            for o, v in young.by_origin.items():
                old.by_origin[o] = old.by_origin.get(o, 0.0) + v
            old.members.extend(young.members)
            for member in young.members:
                self._member_of[member] = old.gid
                shift = young.served_total - old.served_total
                self.counter_offset[member] = self.counter_offset.get(member, 0.0) + shift
            del self.groups[young.gid]
            self.version += 1


def mergeable(a: Group, b: Group) -> bool:
    """Whether two groups are alike enough to be one (the caller checks the law's views)."""
    if a.region != b.region or a.phase is not b.phase or a.model is not b.model:
        return False
    if a.error_rate != b.error_rate or a.build != b.build or a.phase is not Phase.SERVING:
        return False
    scale = max(1.0, a.n, b.n)
    return abs(a.n - b.n) <= MERGE_TOLERANCE * scale
