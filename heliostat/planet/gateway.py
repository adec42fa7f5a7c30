"""One region's gateways in the fluid engine: a step's requests through routes, drops,
circuit breakers, the balancers, retries and outlier detection, as Envoy handles them.

The region's G Envoys see the same configuration and an equal share of its users; they are
handled as one, with per-Envoy quantities (requests in flight to a host, consecutive
failures of a host, a circuit breaker's count) taken as the region's divided by G.

For each class of request (interactive, batch) the route's clusters are taken by weight
(`planning.plan`: versions would split here); in a cluster, `drop_overload_percent`
is refused first (503, as `drop_overloads` does), then the circuit breaker refuses what
would hold more than `max_requests` in flight per Envoy; the rest goes through the
cluster's `envoy.Balancer`. Tries on a dead replica fail (after the connect timeout, or a
round trip when the connection is refused) and are retried on another host and, after a
failed priority, another priority (`previous_hosts`, `previous_priorities`), up to
`retries.num_retries` and within the retry budget; a replica's consecutive gateway failures
(or 500s) eject it for `base_ejection_time` x its ejections. Successful tries become flows:
(users' region, gateway region, replica group, mass, time lost on failed tries).

What the gateways did is also counted as Envoy's load reporting service would report it,
per cluster and upstream locality (`law.GatewayLoads`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from heliostat.balance import ClusterView, RegionView, TrafficClass
from heliostat.planet.envoy import Balancer, Exclusions, LbConfig
from heliostat.planet.groups import Group, Phase
from heliostat.planet.law import ClusterLoad, LocalityLoad
from heliostat.planning.plan import plan
from heliostat.policy import Breaker, Model, Policy
from heliostat.xds.translate.resilience import DEFAULT_RETRY_BUDGET

ENVOY_MAX_REQUESTS = 1024  # Envoy's circuit breaker default


@dataclass
class Flow:
    origin: str
    gateway: str
    group: Group
    mass: float
    delay_s: float = 0.0


@dataclass
class Outcome:
    flows: list[Flow] = field(default_factory=list)
    refused: float = 0.0
    failed: float = 0.0
    to_dead: float = 0.0  # tries sent to dead replicas


@dataclass
class _Ejection:
    """Outlier detection of one replica group in one region's Envoys. An ejection starts
    when the failure that completes the run is seen (a connect timeout after it was sent),
    so the requests sent meanwhile fail too; results seen while ejected do not count."""

    start: float = 0.0
    until: float = 0.0
    times: int = 0
    failures: float = 0.0  # consecutive gateway failures per host per Envoy
    runs_5xx: float = 0.0  # expected runs of consecutive 500s reaching the threshold

    def ejected(self, now: float) -> bool:
        return self.start <= now < self.until

    def pending(self, now: float) -> bool:
        """Decided, not yet in effect (its failures are still on their way back)."""
        return now < self.start


@dataclass
class _LocalityCount:
    issued: float = 0.0
    successful: float = 0.0
    errors: float = 0.0


@dataclass
class _Cluster:
    view: ClusterView
    model: Model
    balancer: Balancer
    priority_of: dict[str, int]
    hosts: int


class FluidGateway:
    """One region's gateways (see the module docstring)."""

    def __init__(
        self,
        region: str,
        envoys: int,
        rtt_ms: Callable[[str, str], float],
        heliostat: bool = False,
    ) -> None:
        self.region = region
        # heliostat's own clusters: their selection method follows the model (`envoy.LbConfig`)
        self.heliostat = heliostat
        self.envoys = envoys
        self.rtt_ms = rtt_ms
        self.ejections: dict[str, _Ejection] = {}
        self._cache_key: tuple[int, int] | None = None
        self._view: RegionView | None = None
        self._balancers: dict[object, tuple[object, Balancer, dict[str, int], int]] = {}
        self._targets: dict[TrafficClass, list[tuple[_Cluster, int]]] = {}
        self._lrs: dict[str, dict[str, _LocalityCount]] = {}
        self._dropped: dict[str, float] = {}

    # -- configuration -----------------------------------------------------------------------

    def configure(
        self, policy: Policy, view: RegionView, fleet_version: int, group_of: Callable[[str], str]
    ) -> None:
        """Clusters and routes of this view (rebuilt when the view or the fleet changed)."""
        key = (id(view), fleet_version)
        if key == self._cache_key:
            return
        self._cache_key = key
        self._view = view  # pins the id of the cache key
        built = plan(policy, view)
        clusters: dict[str, _Cluster] = {}
        for name, (cluster_view, model) in built.clusters.items():
            clusters[name] = self._built(name, cluster_view, model, fleet_version, group_of)
        self._targets = {}
        model_plan = built.models[0]
        for traffic_class in TrafficClass:
            target = model_plan.targets[(None, traffic_class)]
            self._targets[traffic_class] = [(clusters[n], w) for n, w in target.clusters]

    def _built(
        self,
        name: str,
        view: ClusterView,
        model: Model,
        fleet_version: int,
        group_of: Callable[[str], str],
    ) -> _Cluster:
        """A cluster's balancer, reused while its content holds (and shared by clusters of
        the same content: a model's interactive and batch clusters differ only in their
        drop percentage). The law hands back the same endpoint objects while an endpoint's
        weight and health hold, so the content is known by their identities (the cache
        keeps the localities alive, so an id is never reused while cached)."""
        content = (
            fleet_version,
            tuple(
                (loc.region, loc.priority, loc.weight, tuple(map(id, loc.endpoints)))
                for loc in view.localities
            ),
        )
        built = self._balancers.get(content)
        if built is None:
            config = LbConfig.of(view, model if self.heliostat else None)
            balancer = Balancer.of_view(view, config, group_of)
            priority_of = {
                entry.key: loc.priority for loc in balancer.localities for entry in loc.hosts
            }
            hosts = sum(len(loc.endpoints) for loc in view.localities)
            built = (view.localities, balancer, priority_of, hosts)
            if len(self._balancers) >= 8:  # the current and the previous views' clusters
                self._balancers.pop(next(iter(self._balancers)))
            self._balancers[content] = built
        return _Cluster(view, model, built[1], built[2], built[3])

    # -- a step ------------------------------------------------------------------------------

    def route(
        self,
        origin: str,
        masses: Mapping[TrafficClass, float],
        groups: Mapping[str, Group],
        now: float,
        dt: float,
    ) -> Outcome:
        """Route one step's requests of `origin`'s users (masses per class)."""
        outcome = Outcome()
        for traffic_class, mass in masses.items():
            targets = self._targets.get(traffic_class, [])
            total = sum(w for _, w in targets)
            if mass <= 0 or not total:
                outcome.failed += mass if not total else 0.0
                continue
            for cluster, weight in targets:
                self._cluster(
                    origin, cluster, mass * weight / total, groups, now, dt, outcome, traffic_class
                )
        return outcome

    def _cluster(
        self,
        origin: str,
        cluster: _Cluster,
        mass: float,
        groups: Mapping[str, Group],
        now: float,
        dt: float,
        outcome: Outcome,
        traffic_class: TrafficClass,
    ) -> None:
        name = cluster.view.name
        dropped = mass * cluster.view.drop_overload_percent / 100.0
        mass -= dropped
        entries = list(cluster.priority_of)
        per_envoy_active = {
            key: groups[key].by_origin.get(self.region, 0.0) / (groups[key].count * self.envoys)
            for key in entries
            if key in groups
        }
        in_flight = (
            sum(groups[key].by_origin.get(self.region, 0.0) for key in entries if key in groups)
            / self.envoys
        )
        breaker = _breaker(cluster.model, traffic_class)
        limit = breaker.max_requests if breaker.max_requests is not None else ENVOY_MAX_REQUESTS
        if cluster.view.max_requests is not None:  # the law's cap while it refuses
            limit = min(limit, cluster.view.max_requests)
        if in_flight >= limit and mass > 0:
            leaving = sum(
                groups[k].by_origin.get(self.region, 0.0) * groups[k].done_share
                for k in entries
                if k in groups
            )
            allowed = max(0.0, leaving - (in_flight - limit) * self.envoys)
            over = max(0.0, mass - allowed)
            dropped += over
            mass -= over
        outcome.refused += dropped
        self._dropped[name] = self._dropped.get(name, 0.0) + dropped
        if mass <= 0:
            return
        retries = cluster.model.retries.num_retries
        budget = _retry_budget(cluster.model, traffic_class, in_flight)
        tried_hosts: frozenset[str] = frozenset()
        tried_priorities: frozenset[int] = frozenset()
        delay = 0.0
        for attempt in range(retries + 1):
            failed_mass, failed_keys, fail_time = self._attempt(
                origin,
                cluster,
                mass,
                groups,
                now,
                dt,
                per_envoy_active,
                in_flight,
                delay,
                Exclusions(self._ejected(now, groups), tried_hosts, tried_priorities),
                outcome,
            )
            if failed_mass <= 1e-12:
                return
            if attempt == retries:
                outcome.failed += failed_mass
                return
            # Retries in flight at once, per Envoy, against the budget.
            concurrent = failed_mass / dt * max(fail_time, 0.001) / self.envoys
            if concurrent > budget:
                refused = failed_mass * (1.0 - budget / concurrent)
                outcome.failed += refused
                failed_mass -= refused
            mass = failed_mass
            delay += fail_time
            tried_hosts = tried_hosts | failed_keys
            tried_priorities = tried_priorities | {cluster.priority_of[k] for k in failed_keys}

    def _attempt(
        self,
        origin: str,
        cluster: _Cluster,
        mass: float,
        groups: Mapping[str, Group],
        now: float,
        dt: float,
        active: Mapping[str, float],
        in_flight: float,
        delay: float,
        exclusions: Exclusions,
        outcome: Outcome,
    ) -> tuple[float, frozenset[str], float]:
        """One try of `mass` requests; returns what failed and must be retried, the hosts it
        failed on, and how long the failure took."""
        lrs = self._lrs.setdefault(cluster.view.name, {})
        failed_mass = 0.0
        failed_keys: set[str] = set()
        fail_time = 0.0
        remaining = mass
        for _ in range(8):  # re-split what newly ejected hosts would have taken
            split = cluster.balancer.split(active, exclusions, in_flight)
            if not split:
                outcome.refused += remaining  # no healthy upstream: a local 503
                return failed_mass, frozenset(failed_keys), fail_time
            newly_ejected = False
            leftover = 0.0
            for key, share in split.items():
                part = remaining * share
                if part <= 0:
                    continue
                group = groups.get(key)
                if group is None:  # released since the view was computed: refused
                    outcome.to_dead += part
                    failed_mass += part
                    failed_keys.add(key)
                    fail_time = max(fail_time, 0.001)
                    continue
                counts = lrs.setdefault(group.region, _LocalityCount())
                record = self.ejections.setdefault(key, _Ejection())
                per_host = part / (group.count * self.envoys)
                if group.phase is Phase.DEAD:
                    took = (
                        cluster.model.connect_timeout
                        if group.failure == "blackhole"
                        else self.rtt_ms(self.region, group.region) / 1000.0
                    )
                    threshold = float(cluster.model.outlier_detection.consecutive_gateway_failure)
                    if threshold > 0 and not record.ejected(now) and not record.pending(now):
                        need = max(0.0, threshold - record.failures)
                        if per_host >= need:
                            # Ejected once the failure completing the run comes back; what
                            # is sent until then fails too.
                            self._eject(record, cluster.model, now + took)
                            window = min(1.0, took / dt)
                            hit = min(part, need * group.count * self.envoys + part * window)
                            if hit < part:
                                newly_ejected = True
                                leftover += part - hit
                                part = hit
                        else:
                            record.failures += per_host
                    counts.issued += part
                    counts.errors += part
                    outcome.to_dead += part
                    failed_mass += part
                    failed_keys.add(key)
                    fail_time = max(fail_time, took)
                    continue
                record.failures = 0.0
                counts.issued += part
                if group.error_rate > 0:
                    errors = part * group.error_rate
                    outcome.failed += errors
                    counts.errors += errors
                    part -= errors
                    self._count_500s(record, cluster.model, per_host, group.error_rate, now)
                counts.successful += part
                outcome.flows.append(Flow(origin, self.region, group, part, delay))
            if not newly_ejected or leftover <= 1e-12:
                return failed_mass, frozenset(failed_keys), fail_time
            remaining = leftover
            exclusions = Exclusions(
                self._ejected_soon(now, groups),
                exclusions.tried_hosts,
                exclusions.tried_priorities,
            )
        return failed_mass, frozenset(failed_keys), fail_time

    # -- outlier detection -------------------------------------------------------------------

    def _eject(self, record: _Ejection, model: Model, start: float) -> None:
        record.times += 1
        record.start = start
        record.until = start + model.outlier_detection.base_ejection_time * record.times
        record.failures = 0.0
        record.runs_5xx = 0.0

    def _count_500s(
        self, record: _Ejection, model: Model, per_host: float, rate: float, now: float
    ) -> None:
        threshold = model.outlier_detection.consecutive_5xx
        if threshold <= 0 or record.ejected(now):
            return
        record.runs_5xx += per_host * (1.0 - rate) * rate**threshold
        if record.runs_5xx >= 1.0:
            self._eject(record, model, now)

    def _ejected(self, now: float, groups: Mapping[str, Group]) -> dict[str, int]:
        return {
            key: groups[key].count
            for key, record in self.ejections.items()
            if key in groups and record.ejected(now)
        }

    def _ejected_soon(self, now: float, groups: Mapping[str, Group]) -> dict[str, int]:
        """Ejected now, or decided with the ejection taking effect within this step."""
        return {
            key: groups[key].count
            for key, record in self.ejections.items()
            if key in groups and (record.ejected(now) or record.pending(now))
        }

    def healed(self, key: str) -> None:
        """A group came back (its region restored): Envoy's consecutive count restarts."""
        record = self.ejections.get(key)
        if record is not None:
            record.failures = 0.0

    # -- load reports ------------------------------------------------------------------------

    def report(self, groups: Mapping[str, Group]) -> dict[str, ClusterLoad]:
        """What LRS would report since the last call (then the counts start again)."""
        result = {}
        names = set(self._lrs) | set(self._dropped)
        for name in sorted(names):
            localities = {}
            for region, counts in sorted(self._lrs.get(name, {}).items()):
                in_progress = sum(
                    g.by_origin.get(self.region, 0.0) for g in groups.values() if g.region == region
                )
                localities[region] = LocalityLoad(
                    counts.issued, counts.successful, counts.errors, in_progress
                )
            result[name] = ClusterLoad(localities, self._dropped.get(name, 0.0))
        self._lrs.clear()
        self._dropped.clear()
        return result


def _breaker(model: Model, traffic_class: TrafficClass) -> Breaker:
    breakers = model.circuit_breakers
    return breakers.batch if traffic_class is TrafficClass.BATCH else breakers.interactive


def _retry_budget(model: Model, traffic_class: TrafficClass, in_flight: float) -> float:
    """Concurrent retries one Envoy allows for the class."""
    breaker = _breaker(model, traffic_class)
    if breaker.retry_budget is None and breaker.max_retries is not None:
        return float(breaker.max_retries)
    budget = breaker.retry_budget or DEFAULT_RETRY_BUDGET
    return max(float(budget.min_retry_concurrency), budget.budget_percent / 100.0 * in_flight)
