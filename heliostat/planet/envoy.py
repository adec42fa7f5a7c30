"""Envoy's load balancing of one cluster, as one Envoy applies it: a model, per request and
in expectation.

What heliostat publishes (`heliostat.xds.translate`) reaches Envoy as EDS localities with a
priority, a locality weight and endpoints with a weight and a health status, on clusters that
balance with LEAST_REQUEST (RING_HASH or MAGLEV with bounded load for a model with
affinity), locality-weighted LB on, the default overprovisioning factor (1.4) and a panic
threshold of 25%. Envoy then, for every request (as in its `load_balancer_impl.cc`):

1. gives each priority a health score min(100, 140 * healthy / hosts) (integer; hosts
   without DRAINING ones, which are excluded; outlier-ejected hosts count as unhealthy) and
   the same for degraded hosts, and spreads 100% of the load over priorities in order of
   these scores, normalised by their sum when it is below 100;
2. puts a priority in panic when that normalised sum is below 100 and the priority's
   healthy + degraded share of hosts is below the panic threshold: it then uses all its
   hosts, whatever their health; when every priority is in panic the load follows host
   counts;
3. inside the chosen priority picks a locality in proportion to its weight times its
   availability, min(1, 1.4 * eligible / hosts) (a locality without a weight gets nothing);
4. inside the locality picks a host: least request with two random choices when all the
   locality's eligible hosts weigh the same (or, as heliostat's clusters are configured
   while outlier detection ejects a replica failing fast in time, `xds.translate.clusters.
   full_scan`, `selection_method: FULL_SCAN`: the host with the fewest requests in flight,
   ties drawn at random), else in proportion to weight / (active + 1)
   (active: this Envoy's requests in flight to that host); ring hash places a request by
   its hash with each host's share of the ring proportional to its locality's normalised
   weight times its own share of that locality, and with bounded load a host holding more
   than ceil(ceil((cluster active + 1) * factor / 100) * share) requests in flight passes
   the request on to other hosts in a random order.

`Balancer.split` gives the probability of each host (or group of identical hosts) for the
next request; `Balancer.pick` draws one host as Envoy would. Both take this Envoy's active
counts, the hosts ejected by outlier detection, and what a retry excludes (previously tried
hosts and priorities).
"""

from __future__ import annotations

import hashlib
import math
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from statistics import NormalDist
from typing import TypeVar

from heliostat.balance import ClusterView, Health
from heliostat.balance.view import LbPolicy
from heliostat.policy import Model
from heliostat.xds.translate.affinity import host_count
from heliostat.xds.translate.clusters import PANIC_THRESHOLD_PERCENT, full_scan

OVERPROVISIONING = 140  # Envoy's default overprovisioning factor 1.4, as Envoy stores it
_NORMAL = NormalDist()


class LbKind(StrEnum):
    LEAST_REQUEST = "least_request"
    RING_HASH = "ring_hash"  # Maglev balances the same way for this model


@dataclass(frozen=True, slots=True)
class HostEntry:
    """A host, or `count` identical hosts (a replica group of the fluid engine)."""

    key: str
    region: str
    weight: int
    health: Health
    count: int = 1


@dataclass(frozen=True, slots=True)
class Locality:
    region: str
    priority: int
    weight: int | None
    hosts: tuple[HostEntry, ...]


@dataclass(frozen=True, slots=True)
class LbConfig:
    kind: LbKind = LbKind.LEAST_REQUEST
    hash_balance_factor: int | None = None  # percent (150 = bounded load 1.5)
    panic_threshold: float = PANIC_THRESHOLD_PERCENT
    locality_weighted: bool = True
    # Least request over every eligible host of the locality (Envoy's FULL_SCAN selection
    # method), not two random choices: what heliostat's clusters use while the model's
    # outlier detection ejects a replica failing fast in time (`LbConfig.of`).
    full_scan: bool = False

    @classmethod
    def of(cls, view: ClusterView, model: Model | None = None) -> LbConfig:
        """What heliostat's translation gives the cluster (`xds.translate.affinity`): the
        law's choice carried by the view (`ClusterView.balancing`), least-request without one
        (a model without affinity, or a view published before the law chose). With `model`
        (heliostat's own clusters; a static Envoy's default is two random choices) the
        selection method `xds.translate.clusters.full_scan` chooses for it."""
        balancing = view.balancing
        if balancing is None or balancing.policy is LbPolicy.LEAST_REQUEST:
            return cls(full_scan=model is not None and full_scan(model, host_count(view)))
        # Ring hash and Maglev both place a key by host weight, with the same bounded load.
        return cls(LbKind.RING_HASH, balancing.hash_balance_factor)


@dataclass(frozen=True, slots=True)
class Exclusions:
    """What one try must avoid: hosts ejected by outlier detection (count per entry), and
    for a retry the hosts and priorities already tried."""

    ejected: Mapping[str, int] = field(default_factory=dict)
    tried_hosts: frozenset[str] = frozenset()
    tried_priorities: frozenset[int] = frozenset()


NO_EXCLUSIONS = Exclusions()


@dataclass(frozen=True, slots=True)
class _Level:
    """One priority's hosts, sorted out as Envoy's host set would."""

    priority: int
    localities: tuple[Locality, ...]
    hosts: int  # all hosts
    counted: int  # hosts minus excluded (draining)
    healthy: int
    degraded: int


def _spread(health: list[int], degraded: list[int], total: int) -> tuple[list[int], list[int]]:
    """Envoy's priority load: healthy, then degraded, in priority order, normalised to
    `total`; the rounding remainder to the first priority with healthy (else degraded)
    hosts."""
    healthy_load = [0] * len(health)
    degraded_load = [0] * len(degraded)
    remaining = 100
    first_h = first_d = -1
    for i, value in enumerate(health):
        if first_h < 0 and value > 0:
            first_h = i
        healthy_load[i] = min(remaining, value * 100 // total)
        remaining -= healthy_load[i]
    for i, value in enumerate(degraded):
        if first_d < 0 and value > 0:
            first_d = i
        degraded_load[i] = min(remaining, value * 100 // total)
        remaining -= degraded_load[i]
    if remaining:
        if first_h >= 0:
            healthy_load[first_h] += remaining
        else:
            degraded_load[first_d] += remaining
    return healthy_load, degraded_load


def _usable(entry: HostEntry, ejected: Mapping[str, int]) -> tuple[int, int]:
    """(healthy, degraded) hosts of an entry, ejected ones taken out."""
    out = min(entry.count, ejected.get(entry.key, 0))
    if entry.health is Health.HEALTHY:
        return entry.count - out, 0
    if entry.health is Health.DEGRADED:
        return 0, entry.count - out
    return 0, 0


class Balancer:
    """One cluster (one view's ClusterView) as one Envoy balances it."""

    def __init__(self, localities: Sequence[Locality], config: LbConfig = LbConfig()) -> None:
        self.config = config
        self.localities = tuple(localities)
        priorities = sorted({loc.priority for loc in self.localities})
        self.priorities = priorities
        self._by_priority = {
            p: tuple(loc for loc in self.localities if loc.priority == p) for p in priorities
        }

    @classmethod
    def of_view(
        cls,
        view: ClusterView,
        config: LbConfig = LbConfig(),
        group_of: Callable[[str], str] | None = None,
    ) -> Balancer:
        """A cluster view's balancer; with `group_of`, endpoints mapped to the same group
        and having the same health are one entry."""
        localities = []
        for locality in view.localities:
            if group_of is None:
                hosts = tuple(
                    HostEntry(e.address, locality.region, max(1, e.weight), e.health)
                    for e in locality.endpoints
                )
            else:
                # One entry per group and health: an entry's key is its group, and keys must
                # be unique (the split is keyed by them). Members of a group whose weights
                # differ (each replica's own capacity tier or band) weigh their mean.
                merged: dict[tuple[str, Health], tuple[int, int]] = {}
                get = merged.get
                for e in locality.endpoints:
                    key = (group_of(e.address), e.health)
                    count, total = get(key, (0, 0))
                    merged[key] = (count + 1, total + (e.weight or 1))
                hosts = tuple(
                    HostEntry(g, locality.region, max(1, round(total / n)), h, n)
                    for (g, h), (n, total) in merged.items()
                )
            localities.append(Locality(locality.region, locality.priority, locality.weight, hosts))
        return cls(localities, config)

    # -- priorities ------------------------------------------------------------------------

    def _levels(self, exclusions: Exclusions) -> list[_Level]:
        levels = []
        for p in self.priorities:
            hosts = counted = healthy = degraded = 0
            for loc in self._by_priority[p]:
                for entry in loc.hosts:
                    hosts += entry.count
                    if entry.health is not Health.DRAINING:
                        counted += entry.count
                    h, d = _usable(entry, exclusions.ejected)
                    healthy += h
                    degraded += d
            if p in exclusions.tried_priorities:
                healthy = degraded = 0  # previous_priorities: as if it had no healthy host
            levels.append(_Level(p, self._by_priority[p], hosts, counted, healthy, degraded))
        if exclusions.tried_priorities and not any(lv.healthy or lv.degraded for lv in levels):
            # every priority was tried: previous_priorities starts over
            return self._levels(Exclusions(exclusions.ejected, exclusions.tried_hosts))
        return levels

    def priority_loads(
        self, exclusions: Exclusions = NO_EXCLUSIONS
    ) -> list[tuple[_Level, int, int, bool]]:
        """Per priority: (level, healthy load %, degraded load %, in panic)."""
        levels = self._levels(exclusions)
        if not levels:
            return []
        health = [
            min(100, OVERPROVISIONING * lv.healthy // lv.counted) if lv.counted else 0
            for lv in levels
        ]
        degraded = [
            min(100, OVERPROVISIONING * lv.degraded // lv.counted) if lv.counted else 0
            for lv in levels
        ]
        total = min(100, sum(health) + sum(degraded))
        healthy_load = [0] * len(levels)
        degraded_load = [0] * len(levels)
        threshold = self.config.panic_threshold
        if total > 0:
            healthy_load, degraded_load = _spread(health, degraded, total)
        elif threshold == 0:
            healthy_load[0] = 100
            return [(lv, healthy_load[i], 0, False) for i, lv in enumerate(levels)]
        panic = []
        for lv in levels:
            share = 100.0 * (lv.healthy + lv.degraded) / lv.counted if lv.counted else 0.0
            panic.append(total < 100 and share < threshold)
        if all(panic):  # total panic: load follows host counts
            hosts = sum(lv.hosts for lv in levels)
            if hosts == 0:
                return [(lv, 100 if i == 0 else 0, 0, True) for i, lv in enumerate(levels)]
            loads = [100 * lv.hosts // hosts for lv in levels]
            first = next(i for i, lv in enumerate(levels) if lv.hosts)
            loads[first] += 100 - sum(loads)
            return [(lv, loads[i], 0, True) for i, lv in enumerate(levels)]
        return [(lv, healthy_load[i], degraded_load[i], panic[i]) for i, lv in enumerate(levels)]

    # -- expected split ----------------------------------------------------------------------

    def split(
        self,
        active: Mapping[str, float],
        exclusions: Exclusions = NO_EXCLUSIONS,
        cluster_active: float | None = None,
    ) -> dict[str, float]:
        """Probability that the next request goes to each entry (summing over its hosts).

        `active` is this Envoy's requests in flight per host of each entry (a mean for a
        group). Empty when no host can be chosen."""
        result: dict[str, float] = {}
        for level, healthy_load, degraded_load, panic in self.priority_loads(exclusions):
            for load, degraded in ((healthy_load, False), (degraded_load, True)):
                if load <= 0:
                    continue
                for key, p in self._within(
                    level, panic, degraded, active, exclusions, cluster_active
                ).items():
                    result[key] = result.get(key, 0.0) + p * load / 100.0
        return result

    def _within(
        self,
        level: _Level,
        panic: bool,
        degraded: bool,
        active: Mapping[str, float],
        exclusions: Exclusions,
        cluster_active: float | None,
    ) -> dict[str, float]:
        """The split inside one priority."""
        if self.config.kind is LbKind.RING_HASH:
            return self._ring(level, panic, active, exclusions, cluster_active)
        if panic:
            hosts = [e for loc in level.localities for e in loc.hosts]
            counts = {e.key: e.count for e in hosts}
            return _choose_hosts(hosts, counts, active, exclusions, self.config.full_scan)
        sources = self._locality_shares(level, degraded, exclusions)
        result: dict[str, float] = {}
        for loc, share in sources:
            eligible = _eligible(loc.hosts, degraded, exclusions)
            chosen = _choose_hosts(loc.hosts, eligible, active, exclusions, self.config.full_scan)
            for key, p in chosen.items():
                result[key] = result.get(key, 0.0) + share * p
        return result

    def _locality_shares(
        self, level: _Level, degraded: bool, exclusions: Exclusions
    ) -> list[tuple[Locality, float]]:
        """Localities of a priority with their chance; the whole priority as one source
        when locality weighting is off or gives nothing (Envoy then uses the priority's
        healthy hosts)."""
        if self.config.locality_weighted:
            weights = []
            for loc in level.localities:
                counted = sum(e.count for e in loc.hosts if e.health is not Health.DRAINING)
                eligible = sum(_eligible(loc.hosts, degraded, exclusions).values())
                if not counted or not eligible or not loc.weight:
                    weights.append(0.0)
                    continue
                available = min(1.0, OVERPROVISIONING / 100.0 * eligible / counted)
                weights.append(loc.weight * available)
            total = sum(weights)
            if total > 0:
                return [
                    (loc, w / total)
                    for loc, w in zip(level.localities, weights, strict=True)
                    if w > 0
                ]
        merged = Locality(
            "", level.priority, None, tuple(e for loc in level.localities for e in loc.hosts)
        )
        return [(merged, 1.0)]

    def _ring(
        self,
        level: _Level,
        panic: bool,
        active: Mapping[str, float],
        exclusions: Exclusions,
        cluster_active: float | None,
    ) -> dict[str, float]:
        """Ring hash (bounded load) with random keys: first choice by ring share, the
        excess of hosts over their bound spread over the hosts still under theirs."""
        shares = self._ring_shares(level, panic, exclusions)
        if not shares:
            return {}
        factor = self.config.hash_balance_factor
        if factor is None:
            return shares
        total_active = cluster_active if cluster_active is not None else 0.0
        slots = math.ceil((total_active + 1) * factor / 100)
        counts = _entry_counts(level)
        over: dict[str, bool] = {}
        for key, share in shares.items():
            per_host_share = share / counts[key]
            bound = max(1, math.ceil(slots * per_host_share))
            over[key] = active.get(key, 0.0) > bound
        spill = sum(share for key, share in shares.items() if over[key])
        under = {key: counts[key] for key in shares if not over[key]}
        if not under:  # everyone over its bound: the least overloaded, i.e. first choices
            return shares
        hosts_under = sum(under.values())
        result = {key: share for key, share in shares.items() if not over[key]}
        for key, n in under.items():
            result[key] += spill * n / hosts_under
        return result

    def _ring_shares(self, level: _Level, panic: bool, exclusions: Exclusions) -> dict[str, float]:
        """Each entry's share of the ring: normalised locality weight x its share of the
        locality's weight (healthy hosts, or all in panic). Envoy does not scale locality
        weights by availability for hashing."""
        per_locality: list[tuple[Locality, dict[str, int]]] = []
        for loc in level.localities:
            if panic:
                members = {e.key: e.count for e in loc.hosts}
            else:
                members = _eligible(loc.hosts, False, exclusions)
            per_locality.append((loc, members))
        weights = {e.key: e.weight for loc in level.localities for e in loc.hosts}
        use_localities = self.config.locality_weighted and any(
            loc.weight for loc, _ in per_locality
        )
        result: dict[str, float] = {}
        if use_localities:
            total = sum(loc.weight or 0 for loc, members in per_locality)
            for loc, members in per_locality:
                mass = sum(weights[k] * n for k, n in members.items())
                if not loc.weight or not mass or not total:
                    continue
                for key, n in members.items():
                    result[key] = (loc.weight / total) * weights[key] * n / mass
        else:
            flat = {k: n for _, members in per_locality for k, n in members.items()}
            mass = sum(weights[k] * n for k, n in flat.items())
            for key, n in flat.items():
                result[key] = weights[key] * n / mass if mass else 0.0
        norm = sum(result.values())
        return {k: v / norm for k, v in result.items()} if norm > 0 else {}

    # -- one request -------------------------------------------------------------------------

    def pick(
        self,
        rng: random.Random,
        active: Mapping[str, int],
        exclusions: Exclusions = NO_EXCLUSIONS,
        cluster_active: int = 0,
        key: int | None = None,
    ) -> str | None:
        """The host Envoy sends this try to (entries are single hosts), None when none.

        `key`: the request's hash (a prompt prefix's, `affinity.prefix_chars`), for ring
        hash: as Envoy does with a hash, the priority is chosen by it (hash % 100) and the
        host by it (`_by_key`); None: a random key, as before."""
        loads = self.priority_loads(exclusions)
        if not loads:
            return None
        keyed = key is not None and self.config.kind is LbKind.RING_HASH
        draw = (_mix(key, 0) % 100 + 1) if keyed and key is not None else rng.randrange(100) + 1
        acc = 0
        chosen: tuple[_Level, bool, bool] | None = None
        for level, healthy_load, _degraded, panic in loads:
            acc += healthy_load
            if draw <= acc:
                chosen = (level, panic, False)
                break
        if chosen is None:
            for level, _healthy, degraded_load, panic in loads:
                acc += degraded_load
                if draw <= acc:
                    chosen = (level, panic, True)
                    break
        if chosen is None:
            return None
        level, panic, degraded = chosen
        attempts = 6  # host_selection_retry_max_attempts 5, plus the first
        host = None
        for attempt in range(attempts):
            hashed = key if keyed and attempt == 0 else None  # a retry rehashes: random
            host = self._pick_within(
                rng, level, panic, degraded, active, exclusions, cluster_active, hashed
            )
            if host is None or host not in exclusions.tried_hosts:
                return host
        return host

    def _pick_ring(
        self,
        rng: random.Random,
        level: _Level,
        panic: bool,
        active: Mapping[str, int],
        exclusions: Exclusions,
        cluster_active: int,
        key: int | None = None,
    ) -> str | None:
        """Ring hash on the request's key (a random one when None); with bounded load, a
        host over its bound passes the request on (in random order) to the first one under
        its own, else the least over."""
        shares = self._ring_shares(level, panic, exclusions)
        if not shares:
            return None
        first = _weighted_choice(rng, shares) if key is None else _by_key(key, shares)
        factor = self.config.hash_balance_factor
        if factor is None:
            return first
        slots = math.ceil((cluster_active + 1) * factor / 100)

        def overload(host: str) -> float:
            bound = max(1, math.ceil(slots * shares[host]))
            return active.get(host, 0) / bound

        if overload(first) <= 1.0:
            return first
        best, best_load = first, overload(first)
        order = list(shares)
        rng.shuffle(order)
        for host in order:
            if host == first:
                continue
            load = overload(host)
            if load <= 1.0:
                return host
            if load < best_load:
                best, best_load = host, load
        return best

    def _pick_within(
        self,
        rng: random.Random,
        level: _Level,
        panic: bool,
        degraded: bool,
        active: Mapping[str, int],
        exclusions: Exclusions,
        cluster_active: int,
        key: int | None = None,
    ) -> str | None:
        if self.config.kind is LbKind.RING_HASH:
            return self._pick_ring(rng, level, panic, active, exclusions, cluster_active, key)
        if panic:
            hosts = [e for loc in level.localities for e in loc.hosts]
            return _pick_host(rng, hosts, [e.key for e in hosts], active, self.config.full_scan)
        sources = self._locality_shares(level, degraded, exclusions)
        if not sources:
            return None
        loc = _weighted_choice(rng, {i: share for i, (_, share) in enumerate(sources)})
        locality = sources[loc][0]
        eligible = [k for k, n in _eligible(locality.hosts, degraded, exclusions).items() if n]
        if not eligible:
            return None
        return _pick_host(rng, locality.hosts, eligible, active, self.config.full_scan)


def _entry_counts(level: _Level) -> dict[str, int]:
    return {e.key: e.count for loc in level.localities for e in loc.hosts}


def _eligible(hosts: Sequence[HostEntry], degraded: bool, exclusions: Exclusions) -> dict[str, int]:
    """Hosts of each entry that may take the request (healthy, or degraded for the
    degraded load), outlier-ejected ones left out."""
    result = {}
    for entry in hosts:
        healthy, degraded_count = _usable(entry, exclusions.ejected)
        count = degraded_count if degraded else healthy
        if count:
            result[entry.key] = count
    return result


def _choose_hosts(
    hosts: Sequence[HostEntry],
    eligible: Mapping[str, int],
    active: Mapping[str, float],
    exclusions: Exclusions,
    full_scan: bool = False,
) -> dict[str, float]:
    """Least request over the eligible hosts, in expectation (see the module docstring)."""
    entries = [(e, eligible[e.key]) for e in hosts if eligible.get(e.key)]
    if exclusions.tried_hosts:
        fresh = [(e, n) for e, n in entries if e.key not in exclusions.tried_hosts]
        entries = fresh or entries
    if not entries:
        return {}
    weights = {e.weight for e, _ in entries}
    if len(weights) > 1:  # weighted: EDF on weight / (active + 1)
        mass = {e.key: n * e.weight / (active.get(e.key, 0.0) + 1.0) for e, n in entries}
        total = sum(mass.values())
        return {k: v / total for k, v in mass.items()}
    if full_scan:
        return _fewest(entries, active)
    return _two_choices(entries, active)


def _fewest(
    entries: Sequence[tuple[HostEntry, int]], active: Mapping[str, float]
) -> dict[str, float]:
    """Every host compared (FULL_SCAN), the one with the fewest requests in flight wins, ties
    at random. Entries holding several hosts carry a mean count: a host of e is taken to
    have fewer than a host of f with probability q = Phi((a_f - a_e) / sqrt(a_e + a_f + 1))
    (one half between equal counts: a tie), and to be the least of all with the product of
    its q over every other host, its own entry's included; normalised. Equal counts share
    equally, as the random tie-break does."""
    logs = {}
    for e, count in entries:
        a_e = active.get(e.key, 0.0)
        total = (count - 1) * math.log(0.5)
        for f, other in entries:
            if f.key == e.key:
                continue
            a_f = active.get(f.key, 0.0)
            q = _NORMAL.cdf((a_f - a_e) / math.sqrt(a_e + a_f + 1.0))
            total += other * math.log(max(q, 1e-300))
        logs[e.key] = (count, total)
    top = max(t for _, t in logs.values())
    mass = {k: n * math.exp(t - top) for k, (n, t) in logs.items()}
    norm = sum(mass.values())
    return {k: v / norm for k, v in mass.items()}


def _two_choices(
    entries: Sequence[tuple[HostEntry, int]], active: Mapping[str, float]
) -> dict[str, float]:
    """Two random hosts (with replacement), the one with fewer requests in flight wins, the
    first on a tie. Entries holding several hosts carry a mean count: two different
    entries compare as two Poisson-spread counts would, so near-equal groups share as the
    integer counts of real hosts would, not all-or-nothing."""
    n = sum(count for _, count in entries)
    result = {}
    for e, count in entries:
        a_e = active.get(e.key, 0.0)
        beaten = 0.0  # P(a random host has strictly fewer than a host of e)
        beats = 0.0  # P(a host of e has strictly fewer than a random host)
        for f, other in entries:
            if f.key == e.key:
                continue
            a_f = active.get(f.key, 0.0)
            spread = math.sqrt(a_e + a_f + 1.0)
            beaten += other / n * _NORMAL.cdf((a_e - a_f - 0.5) / spread)
            beats += other / n * _NORMAL.cdf((a_f - a_e - 0.5) / spread)
        result[e.key] = count / n * ((1.0 - beaten) + beats)
    total = sum(result.values())
    return {k: v / total for k, v in result.items()} if total > 0 else {}


def _pick_host(
    rng: random.Random,
    hosts: Sequence[HostEntry],
    eligible: Sequence[str],
    active: Mapping[str, int],
    full_scan: bool = False,
) -> str:
    """One least-request pick among single hosts."""
    weight = {e.key: e.weight for e in hosts}
    if len({weight[k] for k in eligible}) > 1:
        return _weighted_choice(rng, {k: weight[k] / (active.get(k, 0) + 1) for k in eligible})
    if full_scan:  # the fewest in flight; ties at random (Envoy's reservoir sampling)
        least = min(active.get(k, 0) for k in eligible)
        tied = [k for k in eligible if active.get(k, 0) == least]
        return tied[rng.randrange(len(tied))]
    first = eligible[rng.randrange(len(eligible))]
    second = eligible[rng.randrange(len(eligible))]
    return second if active.get(second, 0) < active.get(first, 0) else first


K = TypeVar("K")


def _mix(key: int, salt: int) -> int:
    """A 64-bit hash of (key, salt), the same in every process (no PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{key}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _by_key(key: int, shares: Mapping[str, float]) -> str:
    """The host a key hashes to, each with a chance in proportion to its ring share, and
    consistent as a ring is: weighted rendezvous hashing (the least -ln(u) / share, u the
    hash of key and host), so one host's share moving moves only the keys it gains or
    loses, and every gateway with the same hosts and shares places a key alike."""
    best, best_score = "", math.inf
    for host, share in shares.items():
        if share <= 0.0:
            continue
        u = (_mix(key, zlib.crc32(host.encode())) + 0.5) / 2.0**64
        score = -math.log(u) / share
        if score < best_score:
            best, best_score = host, score
    return best if best else next(iter(shares))


def _weighted_choice(rng: random.Random, weights: Mapping[K, float]) -> K:
    total = sum(weights.values())
    draw = rng.random() * total
    acc = 0.0
    last: K | None = None
    for key, w in weights.items():
        acc += w
        last = key
        if draw < acc:
            return key
    assert last is not None
    return last
