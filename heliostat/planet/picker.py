"""The routing benchmark's endpoint picker (`bench/routing_picker.py`), on the planet.

Global, fresh, uncapped: every request of a region's users is given to the replica with the
highest score among the replicas of that region and of the regions within the network
budget, scored as llm-d's defaults score them (queue 2 x min-max normalised waiting, KV 2 x
(1 - KV use), prefix 3 x the share of the prompt matched: 0 on the planet, whose prompts share
no prefix), ties to the nearer region. Metrics older than 200 ms score as a full replica
(0). The scores do not see round trips: the picker pays them, as heliostat does, and keeps
to the same budget. Envoy sends the request to the endpoint named in a header (one host per
cluster: a retry goes back to it).

On the planet each region's users send thousands of requests per 50 ms refresh. A literal
max-score picker would hand all of them to one replica per refresh; the planet gives the
picker the benefit of the doubt instead: each decision also sees the requests it placed
since the last refresh (as if its scores were kept current between scrapes), so its
choices equalise scores across the candidates. This is generous to the anchor, like the
benchmark's uncharged ext_proc hop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from heliostat.planet.gateway import Flow, Outcome
from heliostat.planet.groups import Group, Phase

QUEUE_WEIGHT = 2.0
KV_WEIGHT = 2.0
PREFIX_WEIGHT = 3.0
REFRESH_S = 0.05
STALE_AFTER_S = 0.2
CHUNKS = 16  # decisions a step's requests are placed in (each sees the ones before)


def scores(waiting: Sequence[float], kv: Sequence[float], fresh: Sequence[bool]) -> list[float]:
    """The picker's score of each candidate (same order as the inputs)."""
    live = [w for w, ok in zip(waiting, fresh, strict=True) if ok]
    low, high = (min(live), max(live)) if live else (0.0, 0.0)
    result = []
    for w, k, ok in zip(waiting, kv, fresh, strict=True):
        if not ok:
            result.append(0.0)
            continue
        queue = 1.0 if high == low else (high - w) / (high - low)
        result.append(QUEUE_WEIGHT * queue + KV_WEIGHT * (1.0 - min(1.0, max(0.0, k))))
    return result


class FluidPicker:
    """Places one step's requests of a region's users over candidate replica groups."""

    def __init__(
        self,
        candidates: Callable[[str], Sequence[str]],
        rtt_ms: Callable[[str, str], float],
        connect_timeout: float,
    ) -> None:
        self.candidates = candidates  # gateway region -> regions it may pick in
        self.rtt_ms = rtt_ms
        self.connect_timeout = connect_timeout
        self.dead_since: dict[str, float] = {}

    def route(
        self,
        origin: str,
        gateway: str,
        mass: float,
        groups: Mapping[str, Group],
        placed: dict[str, float],
        now: float,
        dt: float,
    ) -> Outcome:
        """`placed`: requests per replica already given to each group this step (by any
        region's picker); updated in place."""
        outcome = Outcome()
        regions = set(self.candidates(gateway))
        pool = [g for g in groups.values() if g.region in regions and g.routable and g.count]
        if not pool:
            outcome.refused += mass
            return outcome
        for g in pool:
            if g.phase is Phase.DEAD:
                self.dead_since.setdefault(g.gid, now)
            else:
                self.dead_since.pop(g.gid, None)
        chunk = mass / CHUNKS
        # What the last scrape showed (the random part of the queue at the group's rate),
        # and whether it is fresh; the placements of this step come on top.
        queued = [
            g.model.waiting(g.n, g.rate, g.built) - max(0.0, g.n - g.model.slots) for g in pool
        ]
        fresh = [
            g.phase is not Phase.DEAD or now - self.dead_since.get(g.gid, now) <= STALE_AFTER_S
            for g in pool
        ]
        for _ in range(CHUNKS):
            waiting, kv = [], []
            for g, base in zip(pool, queued, strict=True):
                n = g.n + placed.get(g.gid, 0.0)
                waiting.append(base + max(0.0, n - g.model.slots))
                kv.append(g.model.kv_usage(min(n, g.model.slots)))
            scored = scores(waiting, kv, fresh)
            best = max(scored)
            tied = [g for g, s in zip(pool, scored, strict=True) if best - s <= 1e-9]
            nearest = min(self.rtt_ms(gateway, g.region) for g in tied)
            chosen = [g for g in tied if self.rtt_ms(gateway, g.region) == nearest]
            replicas = sum(g.count for g in chosen)
            for g in chosen:
                part = chunk * g.count / replicas
                if g.phase is Phase.DEAD:
                    # Envoy retries on the same one-host cluster: every try fails.
                    outcome.to_dead += part
                    outcome.failed += part
                    continue
                placed[g.gid] = placed.get(g.gid, 0.0) + part / g.count
                outcome.flows.append(Flow(origin, gateway, g, part, 0.0))
        return outcome
