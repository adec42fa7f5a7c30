"""Where prefix-cache hits are lost: how steadily each shared prefix stayed on one replica.

A request hits its cached prefix only when it lands on a replica that served that prefix
recently. From the client's records alone (each request's prompt and the replica that
answered: nothing is read from the router under test) this module says, per origin region
and prefix key (the prompt's first characters, as heliostat and ring_hash hash them):

- `keys`: how many (origin, prefix) pairs were seen, and `replicas_per_key`: on how many
  replicas each one's requests landed, on average (1.0: perfectly sticky; a router that
  spreads a prefix makes every replica warm it);
- `home_share`: the share of requests served by their key's most used replica;
- `moves`: requests served by another replica than the previous request with the same
  key and origin (a ring that moves keys, or a bounded load that spills, shows here), of
  which `moves_across_regions` went to or came back from another region than the previous
  request's, and `returns`: moves back to a replica that already served the key (a spill
  that came back; cheap when the prefix is still cached there);
- `first_visits`: requests that were their key's first on that replica (at best one per
  (key, replica): the cold misses a placement forces);
- `abroad_on_local_home`: of the requests served outside their origin region, the share
  that landed on the replica the serving region's own users' requests with the same prefix
  used most (where the prefix is cached); the rest warm a second copy of it there, and
  crowd out that replica's own prefixes;
- `moves_by_fifth`: the moves in each fifth of the run (by send time): moves early on are
  a placement settling (caches warming, hashing on trial), later ones a placement that
  does not hold.

And per replica, from its own counters (`/sim/stats`): requests received, prefix-cache hits
and queries (tokens), and how many distinct prefixes it served. For heliostat's gateways,
`GATEWAY_STATS`: what changed in Envoy's own counters of the model's clusters over the run
(cluster updates and membership changes rebuild a ring; retries and ejections move requests).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.routing_fleet import PREFIX_CHARS as KEY_CHARS
from heliostat.sim.loadgen import Report, Result


def prefix_key(result: Result, chars: int = KEY_CHARS) -> str | None:
    prompt = result.shot.body.get("prompt")
    return prompt[:chars] if isinstance(prompt, str) else None


def placement(report: Report, chars: int = KEY_CHARS) -> dict[str, Any]:
    """The stickiness figures of the module docstring, over served requests in send order."""
    ordered: Sequence[Result] = sorted(
        (r for r in report.results if r.ok and r.replica), key=lambda r: r.started
    )
    last: dict[tuple[str, str], Result] = {}
    seen: dict[tuple[str, str], set[str]] = {}
    counts: dict[tuple[str, str], Counter[str]] = {}
    replica_keys: dict[str, set[str]] = {}
    moves = across = returns = first_visits = 0
    fifths = [0] * 5
    start = ordered[0].started if ordered else 0.0
    span = (ordered[-1].started - start) if ordered else 0.0
    for r in ordered:
        key = prefix_key(r, chars)
        if key is None or r.replica is None:
            continue
        pair = (r.shot.label, key)
        before = last.get(pair)
        visited = seen.setdefault(pair, set())
        if before is not None and before.replica != r.replica:
            moves += 1
            fifths[min(4, int(5 * (r.started - start) / span)) if span > 0 else 0] += 1
            across += before.replica_region != r.replica_region
            if r.replica in visited:
                returns += 1
        served_keys = replica_keys.setdefault(r.replica, set())
        if key not in served_keys:
            first_visits += 1
        served_keys.add(key)
        visited.add(r.replica)
        last[pair] = r
        counts.setdefault(pair, Counter())[r.replica] += 1
    abroad = [
        (r, key)
        for r in ordered
        if r.replica_region != r.shot.label and (key := prefix_key(r, chars)) is not None
    ]
    on_home = sum(
        1
        for r, key in abroad
        if (local := counts.get((str(r.replica_region), key)))
        and local.most_common(1)[0][0] == r.replica
    )
    total = sum(sum(c.values()) for c in counts.values())
    home = sum(c.most_common(1)[0][1] for c in counts.values())
    return {
        "requests": total,
        "keys": len(counts),
        "replicas_per_key": round(sum(len(c) for c in counts.values()) / len(counts), 2)
        if counts
        else 0.0,
        "home_share": round(home / total, 4) if total else 0.0,
        "moves": moves,
        "moves_across_regions": across,
        "returns": returns,
        "moves_by_fifth": fifths,
        "abroad": len(abroad),
        "abroad_on_local_home": round(on_home / len(abroad), 4) if abroad else None,
        "first_visits": first_visits,
        "keys_per_replica": {a: len(k) for a, k in sorted(replica_keys.items())},
    }


# Envoy's bounded-load balancer logs, at debug level of its `misc` component, each host it
# finds overloaded and each pick after the first ("selected host #k:ADDRESS (attempt:N)").
SPILL_LOG_LEVEL = "misc"
_OVERLOADED = re.compile(
    r"host (\S+) overloaded; overall_active (\d+), host_weight ([0-9.e-]+), "
    r"host_active (\d+) > slots (\d+)"
)
_SPILLED = re.compile(r"selected host #\d+:(\S+) \(attempt:(\d+)\)")


def spills(log: str, region_of: Callable[[str], str], gateway: str) -> dict[str, Any]:
    """Bounded-load spills in one gateway's debug log: how many picks left the ring's host,
    how many of those crossed to another region than the gateway's, and at what load the
    ring's host was found overloaded (its in-flight count against its slots)."""
    picks = [(m.group(1), int(m.group(2))) for m in _SPILLED.finditer(log)]
    spilled = [address for address, attempt in picks if attempt >= 2]
    abroad = sum(1 for address in spilled if _region(region_of, address) != gateway)
    overloaded = Counter(
        f"{m.group(4)}>{m.group(5)}" for m in _OVERLOADED.finditer(log)
    )  # "host_active>slots": how early the bound bit
    return {
        "spilled": len(spilled),
        "spilled_abroad": abroad,
        "overloaded_at": dict(sorted(overloaded.items())),
    }


def _region(region_of: Callable[[str], str], address: str) -> str:
    try:
        return region_of(address)
    except KeyError:
        return "?"


# Envoy counters that say why a request may leave its key's ring host (per gateway, per run).
GATEWAY_STATS = (
    r"^cluster\.[^.]+\.(membership_change|update_success|update_no_rebuild|upstream_rq_retry"
    r"|upstream_rq_total|outlier_detection\.ejections_enforced_total|lb_healthy_panic"
    r"|upstream_rq_pending_overflow|upstream_rq_503)$"
)


def stat_deltas(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """Per gateway, the counters that moved between two reads (gauges that rose count too)."""
    out: dict[str, dict[str, int]] = {}
    for gateway, now in sorted(after.items()):
        then = before.get(gateway, {})
        moved = {k: v - then.get(k, 0) for k, v in sorted(now.items()) if v != then.get(k, 0)}
        out[gateway] = moved
    return out


def per_replica(replica_stats: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each replica's own counters: requests received, prefix-cache hit rate (tokens)."""
    out: dict[str, dict[str, Any]] = {}
    for address, stats in sorted(replica_stats.items()):
        cache = stats.get("prefix_cache", {})
        queries, hits = int(cache.get("queries", 0)), int(cache.get("hits", 0))
        out[address] = {
            "received": stats.get("received"),
            "prefix_hit_rate": round(hits / queries, 4) if queries else 0.0,
            "prefix_queries": queries,
        }
    return out
