"""Where each origin region's users are served: a small min-cost flow over the RTT graph.

One model, one tick. Every region o brings its users' demand D_o (requests/s, or endpoint
units when no rates are known: the allocation only needs one unit per model) and offers a
capacity C_o (what its live endpoints can serve now, backlog drain already taken out). A
region with gateways and no GPUs (an edge) has C_o = 0.

1. **Local first.** o serves L_o = min(D_o, C_o) of its own users itself. The rest,
   E_o = D_o - L_o, is its excess.
2. **Rescue within budget, ceiling first.** A rescuer q takes others' users only into its
   room R_q = max(0, ceiling * C_q - L_q - G_q): its own users are served first, and what it
   lends never plans it past the ceiling. G_q (`Origin.rising`) is how far its own users'
   demand is already measured beyond the D_q the plan reads (`overflow.rising`): the plan
   reads a smoothed demand, which lags a ramp by seconds, and a rescuer whose own users are
   rising is going full itself; room planned on its lagging level is room its own users
   take within seconds, and what was lent into it waits behind them.
3. **Onward lending.** q may also pass some of its own local users on to a region p within
   *q's* budget, which frees as many of its slots for users of o. Every request still makes
   exactly one hop, from its own gateway to the region that serves it, so each hop stays
   within its own region's budget; chains (p passing on again) follow from the same rule.
4. **Strain, then refuse.** Excess that no region within budget has room for is served by
   o's own slots beyond their planning level, up to its `strain` (what they carry before
   more admitted means fewer served within the SLO, `queueing.admission`): late-ish is
   better than refused. Then by a rescuer's strain (cost 2 STRAIN: after every origin's
   own), never past `ceiling` of what the rescuer admits: a region whose replicas all
   died, or an edge, is otherwise refused what its neighbours could still serve. What is
   left is unplaced: the gateways refuse it (see `refusal`).

Costs make the flow prefer, in this order: serving over refusing (a refusal costs REFUSE,
far more than any round trip), then the least total round trip (a hop costs its RTT in ms
plus HOP, so equal RTTs still prefer fewer hops). The network, for every region o:

    source -> excess:o                      capacity E_o
    excess:o -> strain:o                    cost STRAIN                    (home, strained)
    away:o -> lend:q -> strain:q            cost rtt(o, q) + HOP + 2 STRAIN, at most
                                            ceiling x (C_q + strain_q) - C_q
    strain:q -> sink                        capacity strain_q
    excess:o -> sink                        cost REFUSE                (refused)
    excess:o -> out:o -> away:o             capacity m * D_o           (o's users leaving)
    away:o -> serve:q                       cost rtt(o, q) + HOP, for q within o's budget
    serve:q -> sink                         capacity R_q
    serve:q -> out:q                        capacity m_q * L_q             (q passes users on)

m = `max_sent_o` bounds the share of o's users served elsewhere. It is the operator's
`overflow.max_share` when given, and 1 (no bound) otherwise; a region whose demand is
inferred from its engines (no gateway reports) keeps at least MIN_KEPT of its users (see
`demand`), so its own share stays measurable. An edge (no endpoints) has no bound. (When a
cap binds, in-budget room is left, nothing is refused and o admits all its demand, so the
bound on its demand is the bound on its locality weights.)

Successive shortest paths (Bellman-Ford on the residual graph) solve it exactly; with a
handful of regions the graph has a few dozen arcs. Nodes and arcs are built in sorted
order and ties are broken by that order, so the result is deterministic.

Being a pure function of its inputs, a problem solved once is not solved again: `allocate`
keeps its last SOLVED_KEPT answers by the problem's exact content (every float to the bit,
`_content`). A fleet whose smoothed demands and capacities stand still poses the very same
problems tick after tick (several per model: `overflow._settled` bisects over the same
ones), and building the graph and its shortest paths was about a quarter of a tick with
nothing changed (10,000 endpoints x 3 views). An answer is shared between the callers that
posed the same problem: it is read, never changed.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

REFUSE = 1e6  # the cost of refusing one unit of demand, in ms-equivalents of round trip
HOP = 1.0  # added to every hop: with equal RTTs, fewer hops win
# Serving a user past its region's planning level: dearer than any round trip within budget
# (and any chain of them), far cheaper than refusing.
STRAIN = 1e4
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Origin:
    """One region's part of the problem."""

    demand: float  # its users' demand (>= 0)
    capacity: float  # what its endpoints can serve now (>= 0; 0 for an edge region)
    reach: Mapping[str, float]  # other regions within its budget -> RTT (ms)
    max_sent: float = 1.0  # most of its admitted users that may be served elsewhere (0..1)
    # The most it is planned to with others' users (None: `ceiling` x capacity).
    rescue: float | None = None
    # What its slots carry for its own users beyond `capacity` when no region in budget has
    # room (see `overflow`): planned at cost STRAIN, before anything is refused.
    strain: float = 0.0
    # How far its own users' demand is measured beyond `demand` (the smoothed estimate
    # lags a ramp): taken off the room it offers others, its own strain's included.
    rising: float = 0.0


@dataclass(frozen=True, slots=True)
class Allocation:
    """The plan: origin -> serving region -> demand served there; and what is refused."""

    placed: Mapping[str, Mapping[str, float]]
    unplaced: Mapping[str, float]
    local: Mapping[str, float]  # L_o: what o planned to serve itself before passing users on
    room: Mapping[str, float]  # R_q: what q offered to others below its ceiling

    def served_at(self, region: str) -> float:
        """Everything planned onto `region`'s endpoints, from every origin."""
        return sum(plan.get(region, 0.0) for plan in self.placed.values())


# Demand and capacity beyond this (requests/s, or endpoint units) are read as this: sums of
# readings near the float range overflow to inf (then nan), which no flow can place.
LARGEST = 1e12


def _bounded(origin: Origin) -> Origin:
    """The origin with its demand and capacity finite, within [0, LARGEST]."""

    def clamp(value: float) -> float:
        return min(LARGEST, value) if value >= 0.0 else 0.0  # nan fails the test: 0

    demand, capacity = clamp(origin.demand), clamp(origin.capacity)
    if demand == origin.demand and capacity == origin.capacity:
        return origin
    return dataclasses.replace(origin, demand=demand, capacity=capacity)


# Answers kept by their problem's content (see the module docstring); emptied when full: it
# can only be too small, never wrong.
SOLVED_KEPT = 256
_solved: dict[Hashable, Allocation] = {}


def allocate(origins: Mapping[str, Origin], ceiling: float) -> Allocation:
    """The min-cost placement of every origin's demand (see the module docstring); the
    answer kept for the same problem, if one was solved."""
    key = _content(origins, ceiling)
    if key is None:
        return solve(origins, ceiling)
    found = _solved.get(key)
    if found is None:
        found = solve(origins, ceiling)
        if len(_solved) >= SOLVED_KEPT:
            _solved.clear()
        _solved[key] = found
    return found


def _content(origins: Mapping[str, Origin], ceiling: float) -> Hashable | None:
    """The problem as a key equal only for problems `solve` cannot tell apart: its names in
    order and every number's bits (0.0 and -0.0 differ, as they may in the answer). None
    when some number is not a float (an int's answer may differ in type): not kept."""
    names = sorted(origins)
    numbers: list[float] = [ceiling]
    shape: list[object] = []
    for name in names:
        origin = origins[name]
        reach = sorted(origin.reach)
        rescue = origin.rescue
        shape.append((name, tuple(reach), rescue is None))
        numbers.extend(
            (origin.demand, origin.capacity, origin.max_sent, origin.strain, origin.rising)
        )
        if rescue is not None:
            numbers.append(rescue)
        numbers.extend(origin.reach[q] for q in reach)
    for number in numbers:
        if type(number) is not float:
            return None
    return tuple(shape), struct.pack(f"{len(numbers)}d", *numbers)


def solve(origins: Mapping[str, Origin], ceiling: float) -> Allocation:
    """`allocate`, worked out afresh (the specification of what `allocate` keeps)."""
    origins = {o: _bounded(origin) for o, origin in origins.items()}
    names = sorted(origins)
    local = {o: min(origins[o].demand, origins[o].capacity) for o in names}
    excess = {o: origins[o].demand - local[o] for o in names}
    room = {
        q: max(0.0, _rescue(origins[q], ceiling) - local[q] - _rising(origins[q])) for q in names
    }
    graph = _Graph()
    source, sink = graph.node("source"), graph.node("sink")
    refused: dict[str, int] = {}
    strained: dict[str, int] = {}
    leaving: dict[str, dict[str, int]] = {}
    passed: dict[str, int] = {}
    serve = {q: graph.node(f"serve:{q}") for q in names}
    out = {o: graph.node(f"out:{o}") for o in names}
    away = {o: graph.node(f"away:{o}") for o in names}
    strain = {q: graph.node(f"strain:{q}") for q in names}
    lend = {q: graph.node(f"lend:{q}") for q in names}
    straining: dict[str, dict[str, int]] = {}
    for q in names:
        spare = max(0.0, min(LARGEST, origins[q].strain))
        graph.arc(strain[q], sink, spare, 0.0)
        # Others' users never plan it past `ceiling` of what it admits at most.
        admits = origins[q].capacity + spare
        lendable = ceiling * admits - origins[q].capacity - _rising(origins[q])
        graph.arc(lend[q], strain[q], max(0.0, lendable), 0.0)
    for o in names:
        origin = origins[o]
        node = graph.node(f"excess:{o}")
        if excess[o] > _EPS:
            graph.arc(source, node, excess[o], 0.0)
        refused[o] = graph.arc(node, sink, math.inf, REFUSE)
        # Its own slots beyond its planning level, its own users first, and only once no
        # region in budget has room: STRAIN.
        strained[o] = graph.arc(node, strain[o], math.inf, STRAIN)
        graph.arc(node, out[o], math.inf, 0.0)
        graph.arc(out[o], away[o], _sendable(origin.max_sent, origin.demand), 0.0)
        leaving[o] = {}
        straining[o] = {}
        for q in sorted(origin.reach):
            if q != o and q in origins and origins[q].capacity > 0:
                cost = origin.reach[q] + HOP
                leaving[o][q] = graph.arc(away[o], serve[q], math.inf, cost)
                # A rescuer's own strain, for others' users only instead of refusing them.
                straining[o][q] = graph.arc(away[o], lend[q], math.inf, cost + 2 * STRAIN)
    for q in names:
        graph.arc(serve[q], sink, room[q], 0.0)
        # Passing users on counts against q's own bound: it passes at most m of them. A
        # region with an excess of its own passes users on too: each one it passes frees a
        # slot for a user of o, whose only region in budget may be q.
        bound = max(0.0, min(1.0, origins[q].max_sent))
        passed[q] = graph.arc(serve[q], out[q], bound * local[q], 0.0)
    graph.flow(source, sink)
    placed: dict[str, dict[str, float]] = {}
    unplaced: dict[str, float] = {}
    for o in names:
        home = local[o] - graph.flow_on(passed[o]) + graph.flow_on(strained[o])
        plan = {o: home} if home > _EPS else {}
        for q, arc in leaving[o].items():
            amount = graph.flow_on(arc) + graph.flow_on(straining[o][q])
            if amount > _EPS:
                plan[q] = amount
        placed[o] = {q: max(0.0, v) for q, v in sorted(plan.items()) if v > _EPS}
        unplaced[o] = max(0.0, graph.flow_on(refused[o]))
    return Allocation(placed=placed, unplaced=unplaced, local=local, room=room)


def _rising(origin: Origin) -> float:
    """What of a rescuer's room its own users' measured rise takes (finite, >= 0)."""
    return min(LARGEST, origin.rising) if origin.rising > 0.0 else 0.0


def _rescue(origin: Origin, ceiling: float) -> float:
    """The most q is planned to once it takes others' users."""
    if origin.rescue is None:
        return ceiling * origin.capacity
    return max(0.0, min(LARGEST, origin.rescue))


def _sendable(max_sent: float, demand: float) -> float:
    """The most of its users o may send away: max_sent of its demand (no bound at 1)."""
    share = max(0.0, min(1.0, max_sent))
    return math.inf if share >= 1.0 else share * demand


class _Graph:
    """A residual graph for successive shortest paths; arcs in pairs (forward, backward)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.heads: list[int] = []  # arc -> head node
        self.capacity: list[float] = []
        self.cost: list[float] = []
        self.out: list[list[int]] = []  # node -> arcs leaving it
        self.original: list[float] = []

    def node(self, name: str) -> int:
        self.names.append(name)
        self.out.append([])
        return len(self.names) - 1

    def arc(self, tail: int, head: int, capacity: float, cost: float) -> int:
        index = len(self.heads)
        for a, b, cap, c in ((tail, head, capacity, cost), (head, tail, 0.0, -cost)):
            self.heads.append(b)
            self.capacity.append(cap)
            self.original.append(cap)
            self.cost.append(c)
            self.out[a].append(len(self.heads) - 1)
        return index

    def flow_on(self, arc: int) -> float:
        """The flow on a forward arc: what its backward twin can return."""
        return self.capacity[arc + 1]

    def flow(self, source: int, sink: int) -> None:
        """Push everything the source offers along successively cheapest paths. What is
        left on an arc is judged relative to the largest capacity: with demands near the
        float range, subtraction leaves residues far above an absolute epsilon, and paths
        of such residues would be pushed forever."""
        tiny = _EPS * max(1.0, max((c for c in self.original if math.isfinite(c)), default=1.0))
        while True:
            # Arcs with no more than `tiny` left count as full: a cheapest path through a
            # residue would carry nothing and stop the flow before the rest (the refusals)
            # is pushed (a rescuer with 1e-8 of room left a whole excess unaccounted).
            distance, via = self._shortest(source, tiny)
            if math.isinf(distance[sink]):
                return
            path = []
            node = sink
            while node != source:
                arc = via[node]
                path.append(arc)
                node = self.heads[arc ^ 1]
            amount = min(self.capacity[arc] for arc in path)
            if amount <= tiny:
                return
            for arc in path:
                self.capacity[arc] -= amount
                self.capacity[arc ^ 1] += amount

    def _shortest(self, source: int, tiny: float = _EPS) -> tuple[list[float], list[int]]:
        """Bellman-Ford (residual costs may be negative; there is no negative cycle)."""
        count = len(self.names)
        distance = [math.inf] * count
        via = [-1] * count
        distance[source] = 0.0
        for _ in range(count):
            changed = False
            for node in range(count):
                if math.isinf(distance[node]):
                    continue
                for arc in self.out[node]:
                    if self.capacity[arc] <= tiny:
                        continue
                    head = self.heads[arc]
                    candidate = distance[node] + self.cost[arc]
                    if candidate < distance[head] - 1e-9:
                        distance[head] = candidate
                        via[head] = arc
                        changed = True
            if not changed:
                break
        return distance, via
