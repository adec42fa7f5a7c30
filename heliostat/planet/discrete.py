"""The discrete engine: every request routed as Envoy routes it, served by its own engine.

The reference the fluid engine is checked against, for scenarios small enough to play
request by request: each replica is a `heliostat.sim.engine.Engine` stepped in virtual
time; each region has its G Envoys (a request goes to one at random), each with its own
counts of requests in flight per host, circuit breaker, retry budget and outlier detector;
each request is placed by `envoy.Balancer.pick` (or the picker's per-request choice) and its
time to first token is the engine's plus the round trips. Demand arrives as a Poisson
process at the scenario's rate; prompt and output lengths are drawn from the mix.

Each region's gateways report their load as Envoy's LRS does, per tick: per cluster and
upstream locality the attempts issued (a retry counts once per attempt, as Envoy counts it),
and the requests dropped (drop_overloads, circuit breakers), so the law measures each
origin's demand at its gateways as it does in `serve`.

Not played here: the scaling loop.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from heliostat.balance import TrafficClass
from heliostat.balance.priorities import within_budget
from heliostat.planet import picker as picker_scores
from heliostat.planet.demand import DemandModel, Mix, Spread
from heliostat.planet.envoy import NO_EXCLUSIONS, Balancer, Exclusions, LbConfig, LbKind
from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.fluid import (
    EVENT_WINDOW,
    LOSS_EVENT,
    T0,
    RunOptions,
    engine_config,
)
from heliostat.planet.gateway import ENVOY_MAX_REQUESTS, _breaker, _retry_budget
from heliostat.planet.law import ClusterLoad, GatewayLoads, LocalityLoad, ReplicaSample, Scrapes
from heliostat.planet.record import Record, StepSample
from heliostat.planet.routers import (
    GeoDns,
    HeliostatRouter,
    LeastRequestRouter,
    NearestRegionRouter,
    Router,
)
from heliostat.planet.scenario import Canary, PolicyName, RegionLoss, Scenario
from heliostat.planet.topology import PolicyCache, ReplicaId, address_of
from heliostat.planning.plan import plan
from heliostat.policy import Model
from heliostat.sim.engine import Engine, EngineObserver, EngineRequest, Step


@dataclass(eq=False)
class _Request:
    rid: int
    origin: str
    gateway: str
    envoy: _Envoy
    sent_at: float  # by the user
    prompt: int
    output: int
    traffic_class: TrafficClass
    cluster: str = ""
    host: str | None = None
    delay_s: float = 0.0  # lost on failed tries
    tried_hosts: frozenset[str] = frozenset()
    tried_priorities: frozenset[int] = frozenset()
    tries: int = 0
    retry: bool = False
    engine_request: EngineRequest | None = None
    done: bool = False
    group: int | None = None  # its shared prompt prefix (`ModelSpec.prefix_groups`)


@dataclass(eq=False)
class _Replica:
    id: ReplicaId
    address: str
    region: str
    engine: Engine
    capacity: float
    alive: bool = True
    failure: str = "blackhole"
    error_rate: float = 0.0
    served_total: float = 0.0
    stepping: bool = False
    incarnation: int = 0
    busy_s: float = 0.0


class LentPlacement(StrEnum):
    """Where a lent request (one the lender's balancer sent to another region) lands: a
    what-if for `bench/measure/prefix_planet.py --lent`, heliostat's clusters being
    `LENDER_RING`."""

    LENDER_RING = "lender_ring"  # the lender's cluster as published: its counts, its ring
    LENDER_LEAST = "lender_least"  # least-request over the rescuer's replicas, lender's counts
    RESCUER_RING = "rescuer_ring"  # the rescuer's gateway places it on its own ring
    RESCUER_LEAST = "rescuer_least"  # the rescuer's gateway, least-request


LENT_PLACEMENT = LentPlacement.LENDER_RING


@dataclass(eq=False)
class _Envoy:
    region: str
    active: dict[str, int] = field(default_factory=dict)
    cluster_active: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    consecutive: dict[str, int] = field(default_factory=dict)
    consecutive_5xx: dict[str, int] = field(default_factory=dict)
    ejected_until: dict[str, float] = field(default_factory=dict)
    ejections: dict[str, int] = field(default_factory=dict)

    def ejected(self, now: float) -> dict[str, int]:
        return {a: 1 for a, until in self.ejected_until.items() if now < until}


class _Observer(EngineObserver):
    def __init__(self, run: DiscreteRun, replica: _Replica) -> None:
        self.run = run
        self.replica = replica

    def on_first_token(self, req: EngineRequest) -> None:
        self.run._first_token(self.replica, req)

    def on_finish(self, req: EngineRequest) -> None:
        self.replica.served_total += 1
        self.run._finished(self.replica, req)


class DiscreteRun:
    """One policy, one scenario, request by request (see the module docstring)."""

    def __init__(self, scenario: Scenario, options: RunOptions) -> None:
        if options.scaling:
            raise ValueError("the discrete engine does not play the scaling loop")
        self.scenario = scenario
        self.options = options
        self.rng = random.Random(f"{scenario.seed}-{options.policy.value}-discrete")
        self.demand = DemandModel(scenario)
        mix = Mix.of(scenario)
        self.blocks_share = mix.blocks_per_request / scenario.model.engine.num_gpu_blocks
        self.prompts = Spread.of(scenario.model.prompt_tokens)
        self.outputs = Spread.of(scenario.model.output_tokens)
        self.config = engine_config(scenario)
        self.capacity = FastReplica.of(self.config, mix).capacity
        counts = options.fleet or {r: reg.replicas for r, reg in scenario.regions.items()}
        self.replicas: dict[str, _Replica] = {}
        for region, count in sorted(counts.items()):
            for index in range(count):
                rid = ReplicaId(region, index)
                address = address_of(scenario, rid)
                replica = _Replica(rid, address, region, Engine(self.config), self.capacity)
                replica.engine.observer = _Observer(self, replica)
                self.replicas[address] = replica
        self.serving_regions = {r for r, c in counts.items() if c > 0}
        self.policy = PolicyCache(scenario).policy([r.id for r in self.replicas.values()])
        self.model: Model = self.policy.spec.models[0]
        self.dns = GeoDns(scenario, scenario.dns_failover)
        self.router = self._router(options.policy)
        self.envoys = {
            r: [_Envoy(r) for _ in range(scenario.gateways_of(r))] for r in scenario.regions
        }
        self.scrapes = Scrapes()
        bucket_steps = max(1, round(scenario.duration / 288 / scenario.step))
        self.record = Record(scenario.regions, scenario.duration, scenario.step * bucket_steps)
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._by_engine_request: dict[int, _Request] = {}
        # By the view's identity; each entry keeps its view, so the id is not reused.
        self._balancers: dict[tuple[int, str], tuple[Any, Balancer]] = {}
        self._routes: dict[int, tuple[Any, Any]] = {}
        self._lost_gateways: set[str] = set()
        self._metrics: dict[str, tuple[float, float, float]] = {}  # picker: last scrape
        self._placed: dict[str, int] = {}
        self._dead_since: dict[str, float] = {}
        # LRS since the last tick: (gateway region, cluster) -> upstream locality -> attempts
        # issued, and -> requests dropped.
        self._issued: dict[tuple[str, str], dict[str, int]] = {}
        self._dropped: dict[tuple[str, str], int] = {}
        self._lrs_since = 0.0
        self.now = 0.0
        self.wall_s = 0.0

    def fleet_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for replica in self.replicas.values():
            counts[replica.region] = counts.get(replica.region, 0) + 1
        return counts

    def _router(self, name: PolicyName) -> Router | None:
        if name is PolicyName.HELIOSTAT:
            return HeliostatRouter(self.policy, self.scenario.push_delay)
        if name is PolicyName.LEAST_REQUEST:
            return LeastRequestRouter(self.policy)
        if name is PolicyName.NEAREST_REGION:
            return NearestRegionRouter(self.policy, self.dns, self.serving_regions)
        return None

    # -- events ------------------------------------------------------------------------------

    def _at(self, when: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, payload))

    def run(self) -> Record:
        started = time.perf_counter()
        scenario = self.scenario
        for origin in self.demand.origins:
            self._next_arrival(origin, 0.0)
        interval = self.model.signals.interval
        for k in range(int(scenario.duration / interval) + 1):
            self._at(k * interval, "scrape")
        if self.router is None:  # the picker refreshes its metrics every 50 ms
            for k in range(int(scenario.duration / picker_scores.REFRESH_S) + 1):
                self._at(k * picker_scores.REFRESH_S, "refresh")
        for index, event in enumerate(scenario.events):
            self._at(event.at, "event", (index, "start"))
            until = getattr(event, "until", None)
            if until is not None:
                self._at(until, "event", (index, "end"))
        for k in range(int(scenario.duration / scenario.step) + 1):
            self._at(k * scenario.step, "account")
        while self._heap:
            when, _, kind, payload = heapq.heappop(self._heap)
            if when > scenario.duration:
                break
            self.now = when
            getattr(self, f"_on_{kind}")(payload)
        self.wall_s = time.perf_counter() - started
        if isinstance(self.router, HeliostatRouter):
            self.record.ticks = [t - T0 for t in self.router.tick_times]
        else:
            self.record.ticks = [i * interval for i in range(int(scenario.duration / interval))]
        return self.record

    def _next_arrival(self, origin: str, after: float) -> None:
        rate = self.demand.rate(origin, after)
        if rate <= 0:
            self._at(after + 1.0, "idle_origin", origin)
            return
        self._at(after + self.rng.expovariate(rate), "arrival", origin)

    def _on_idle_origin(self, origin: str) -> None:
        self._next_arrival(origin, self.now)

    def _on_account(self, _: Any) -> None:
        dt = self.scenario.step
        per_region: dict[str, list[float]] = {}
        for replica in self.replicas.values():
            row = per_region.setdefault(replica.region, [0.0, 0.0, 0.0])
            row[0] += 1
            row[1] += 1 if replica.alive else 0
            row[2] += replica.busy_s
            replica.busy_s = 0.0
        gpus = self.scenario.model.gpus_per_replica
        for region, (allocated, serving, busy) in per_region.items():
            self.record.gpus(region, self.now, dt, int(allocated), int(serving), busy, gpus)
        self.dns.observe(self.now, self._regions_up())

    def _regions_up(self) -> dict[str, bool]:
        up = dict.fromkeys(self.scenario.regions, False)
        for replica in self.replicas.values():
            if replica.alive:
                up[replica.region] = True
        return up

    def _on_event(self, payload: tuple[int, str]) -> None:
        index, kind = payload
        event = self.scenario.events[index]
        if isinstance(event, RegionLoss):
            for replica in self.replicas.values():
                if replica.region != event.region:
                    continue
                if kind == "start":
                    replica.alive = False
                    replica.failure = event.failure.value
                    replica.incarnation += 1
                    replica.stepping = False
                    for req in [*replica.engine.running, *replica.engine.waiting]:
                        self._broken(req)
                    replica.engine = Engine(replica.engine.config)
                    replica.engine.observer = _Observer(self, replica)
                else:
                    replica.alive = True
                    replica.served_total = 0.0
            if event.gateways == "lost":
                if kind == "start":
                    self._lost_gateways.add(event.region)
                else:
                    self._lost_gateways.discard(event.region)
        elif isinstance(event, Canary):
            chosen = [r for r in self.replicas.values() if r.region == event.region]
            count = max(1, round(len(chosen) * event.share))
            for replica in chosen[:count]:
                if kind == "start":
                    speed = self.config.speed * event.speed_factor
                    replica.engine.config = dataclasses.replace(self.config, speed=speed)
                    replica.error_rate = event.error_rate
                else:
                    replica.engine.config = self.config
                    replica.error_rate = 0.0

    def _broken(self, req: EngineRequest) -> None:
        request = self._by_engine_request.pop(id(req), None)
        if request is None or request.done:
            return
        request.done = True
        self._release(request)
        if req.first_token_time is None:
            self.record.failed(request.origin, self.now, 1.0)
            self._sample(request.origin, failed=1.0)

    # -- control -----------------------------------------------------------------------------

    def _on_scrape(self, _: Any) -> None:
        if not isinstance(self.router, HeliostatRouter):
            return
        name = self.model.name
        blackholed = False
        for replica in self.replicas.values():
            key = (name, replica.address)
            if not replica.alive:
                blackholed |= replica.failure == "blackhole"
                self.scrapes.failed(key, "timeout" if replica.failure == "blackhole" else "connect")
                continue
            engine = replica.engine
            sample = ReplicaSample(
                waiting=float(engine.num_waiting),
                running=float(engine.num_running),
                kv_usage=engine.pool.usage,
                served_total=replica.served_total,
                max_num_seqs=engine.config.max_num_seqs,
                num_gpu_blocks=engine.config.num_gpu_blocks,
                block_size=engine.config.block_size,
                prefix_hits_total=float(engine.prefix_hits),
                prefix_queries_total=float(engine.prefix_queries),
                prefill_seconds_total=engine.prefill_seconds,
                prefill_requests_total=float(engine.prefilled),
            )
            self.scrapes.scraped(key, sample, T0 + self.now)
        delay = self.model.signals.timeout if blackholed else 0.0
        self._at(self.now + delay, "tick")

    def _on_tick(self, _: Any) -> None:
        assert isinstance(self.router, HeliostatRouter)
        loads = self._load_reports()
        self.router.on_round(T0 + self.now, self.policy, self.scrapes.signals(), frozenset(), loads)

    def _load_reports(self) -> GatewayLoads:
        """What every region's gateways reported over LRS since the last tick (then the
        counts start again)."""
        keys = sorted(set(self._issued) | set(self._dropped))
        clusters = {
            key: ClusterLoad(
                {
                    region: LocalityLoad(issued=float(count))
                    for region, count in sorted(self._issued.get(key, {}).items())
                },
                float(self._dropped.get(key, 0)),
            )
            for key in keys
        }
        loads = GatewayLoads(interval_s=self.now - self._lrs_since, clusters=clusters)
        self._issued.clear()
        self._dropped.clear()
        self._lrs_since = self.now
        return loads

    def _drop(self, request: _Request) -> None:
        """The gateway dropped the request (drop_overloads or its circuit breaker)."""
        key = (request.gateway, request.cluster)
        self._dropped[key] = self._dropped.get(key, 0) + 1

    def _on_refresh(self, _: Any) -> None:
        for replica in self.replicas.values():
            if replica.alive:
                engine = replica.engine
                self._metrics[replica.address] = (
                    float(engine.num_waiting),
                    float(engine.num_running),
                    engine.pool.usage,
                )
                self._dead_since.pop(replica.address, None)
            else:
                self._dead_since.setdefault(replica.address, self.now)
        self._placed.clear()

    # -- requests ----------------------------------------------------------------------------

    def _gateway_of(self, origin: str) -> str | None:
        if origin not in self._lost_gateways:
            return origin
        if self.dns.seen_up(origin):
            return None
        alive = {r for r in self.scenario.regions if r not in self._lost_gateways}
        return self.dns.nearest(origin, alive) if alive else None

    def _on_arrival(self, origin: str) -> None:
        self._next_arrival(origin, self.now)
        self.record.offered(origin, self.now, 1.0)
        self._sample(origin, offered=1.0)
        gateway = self._gateway_of(origin)
        if gateway is None:
            self.record.failed(origin, self.now, 1.0)
            self._sample(origin, failed=1.0)
            return
        envoy = self.rng.choice(self.envoys[gateway])
        batch = self.rng.random() < self.scenario.model.batch_share
        request = _Request(
            next(self._ids),
            origin,
            gateway,
            envoy,
            self.now - self.scenario.rtt_ms(origin, gateway) / 2000.0,
            self.prompts.draw(self.rng),
            self.outputs.draw(self.rng),
            TrafficClass.BATCH if batch else TrafficClass.INTERACTIVE,
        )
        groups = self.scenario.model.prefix_groups
        if groups:  # drawn only then: scenarios without groups play the same requests
            request.group = self.rng.randrange(groups)
        if self.router is None:
            self._pick(request)
            return
        view = self.router.view(gateway, T0 + self.now)
        if view is None:
            self.record.refused(origin, self.now, 1.0)
            self._sample(origin, refused=1.0)
            return
        routes = self._routes_of(view)
        targets = routes.models[0].targets[(None, request.traffic_class)].clusters
        names = [n for n, _ in targets]
        weights = [w for _, w in targets]
        request.cluster = self.rng.choices(names, weights)[0]
        cluster_view, _model = routes.clusters[request.cluster]
        if self.rng.random() * 100 < cluster_view.drop_overload_percent:
            self._drop(request)
            self.record.refused(origin, self.now, 1.0)
            self._sample(origin, refused=1.0)
            return
        breaker = _breaker(self.model, request.traffic_class)
        limit = breaker.max_requests if breaker.max_requests is not None else ENVOY_MAX_REQUESTS
        if cluster_view.max_requests is not None:  # the law's cap while it refuses
            limit = min(limit, cluster_view.max_requests)
        if envoy.cluster_active.get(request.cluster, 0) >= limit:
            self._drop(request)
            self.record.refused(origin, self.now, 1.0)
            self._sample(origin, refused=1.0)
            return
        self._try(request, view)

    def _routes_of(self, view: Any) -> Any:
        key = id(view)
        cached = self._routes.get(key)
        if cached is None or cached[0] is not view:
            cached = (view, plan(self.policy, view))
            self._routes[key] = cached
        return cached[1]

    def _balancer(self, view: Any, name: str) -> Balancer:
        key = (id(view), name)
        cached = self._balancers.get(key)
        if cached is None or cached[0] is not view:
            cluster_view, model = self._routes_of(view).clusters[name]
            config = LbConfig.of(
                cluster_view, model if isinstance(self.router, HeliostatRouter) else None
            )
            cached = (view, Balancer.of_view(cluster_view, config))
            self._balancers[key] = cached
        return cached[1]

    def _try(self, request: _Request, view: Any) -> None:
        envoy = request.envoy
        balancer = self._balancer(view, request.cluster)
        exclusions = Exclusions(
            envoy.ejected(self.now), request.tried_hosts, request.tried_priorities
        )
        host = self._host(balancer, envoy, exclusions, request)
        if host is not None and LENT_PLACEMENT is not LentPlacement.LENDER_RING:
            host = self._place_lent(request, view, balancer, host)
        if host is None:
            self.record.refused(request.origin, self.now, 1.0)
            self._sample(request.origin, refused=1.0)
            return
        priority = next(
            loc.priority for loc in balancer.localities for e in loc.hosts if e.key == host
        )
        request.tried_priorities = request.tried_priorities | {priority}
        self._send(request, host)

    def _host(
        self, balancer: Balancer, envoy: _Envoy, exclusions: Exclusions, request: _Request
    ) -> str | None:
        """A host for `request` from `balancer`, by `envoy`'s in-flight counts."""
        return balancer.pick(
            self.rng,
            envoy.active,
            exclusions,
            envoy.cluster_active.get(request.cluster, 0),
            key=request.group,
        )

    def _place_lent(self, request: _Request, view: Any, balancer: Balancer, host: str) -> str:
        """A what-if (`LENT_PLACEMENT`): a request the lender's balancer sent to another
        region is placed again among that region's replicas only: by the rescuer's gateway
        (its own view's local locality and its own in-flight counts, on its own
        balancer: ring hash while it hashes), or by least-request with the lender's or the
        rescuer's counts. The request is then counted by the Envoy that placed it."""
        rescuer = self.replicas[host].region
        if rescuer == request.gateway:
            return host
        envoy = request.envoy
        config = balancer.config
        localities = [loc for loc in balancer.localities if loc.region == rescuer]
        if LENT_PLACEMENT in (LentPlacement.RESCUER_RING, LentPlacement.RESCUER_LEAST):
            assert self.router is not None
            own = self.router.view(rescuer, T0 + self.now)
            if own is None or request.cluster not in self._routes_of(own).clusters:
                return host
            mine = self._balancer(own, request.cluster)
            localities = [
                loc for loc in mine.localities if loc.region == rescuer and loc.priority == 0
            ] or localities
            config = mine.config
            envoy = self.rng.choice(self.envoys[rescuer])
        if LENT_PLACEMENT in (LentPlacement.LENDER_LEAST, LentPlacement.RESCUER_LEAST):
            config = dataclasses.replace(config, kind=LbKind.LEAST_REQUEST, full_scan=True)
        local = Balancer(
            [dataclasses.replace(loc, priority=0, weight=1) for loc in localities], config
        )
        placed = self._host(local, envoy, NO_EXCLUSIONS, request)
        if placed is None:
            return host
        request.envoy = envoy
        return placed

    def _send(self, request: _Request, host: str) -> None:
        envoy = request.envoy
        request.host = host
        request.tries += 1
        envoy.active[host] = envoy.active.get(host, 0) + 1
        envoy.cluster_active[request.cluster] = envoy.cluster_active.get(request.cluster, 0) + 1
        replica = self.replicas[host]
        if isinstance(self.router, HeliostatRouter):  # only heliostat reads the reports
            issued = self._issued.setdefault((request.gateway, request.cluster), {})
            issued[replica.region] = issued.get(replica.region, 0) + 1
        one_way = self.scenario.rtt_ms(request.gateway, replica.region) / 2000.0
        if not replica.alive:
            self._sample(request.origin, to_dead=1.0)
            took = self.model.connect_timeout if replica.failure == "blackhole" else 2 * one_way
            self._at(self.now + took, "connect_failed", (request, took))
            return
        self._at(self.now + one_way, "at_replica", request)

    def _on_connect_failed(self, payload: tuple[_Request, float]) -> None:
        request, took = payload
        envoy = request.envoy
        host = request.host
        assert host is not None
        self._release(request)
        threshold = self.model.outlier_detection.consecutive_gateway_failure
        if self.now >= envoy.ejected_until.get(host, 0.0):  # an ejected host's results wait
            envoy.consecutive[host] = envoy.consecutive.get(host, 0) + 1
            if threshold and envoy.consecutive[host] >= threshold:
                self._eject(envoy, host)
        request.delay_s += took
        request.tried_hosts = request.tried_hosts | {host}
        self._retry_or_fail(request)

    def _retry_or_fail(self, request: _Request) -> None:
        envoy = request.envoy
        if request.tries > self.model.retries.num_retries:
            self.record.failed(request.origin, self.now, 1.0)
            self._sample(request.origin, failed=1.0)
            return
        budget = _retry_budget(
            self.model, request.traffic_class, envoy.cluster_active.get(request.cluster, 0)
        )
        if envoy.retries >= budget:
            self.record.failed(request.origin, self.now, 1.0)
            self._sample(request.origin, failed=1.0)
            return
        if self.router is None:  # the picker's one-host cluster: the retry goes back to it
            assert request.host is not None
            self._send(request, request.host)
            return
        request.retry = True
        envoy.retries += 1
        view = self.router.view(request.gateway, T0 + self.now)
        if view is None or request.cluster not in self._routes_of(view).clusters:
            envoy.retries -= 1
            self.record.failed(request.origin, self.now, 1.0)
            self._sample(request.origin, failed=1.0)
            return
        self._try(request, view)
        envoy.retries -= 1

    def _eject(self, envoy: _Envoy, host: str) -> None:
        times = envoy.ejections.get(host, 0) + 1
        envoy.ejections[host] = times
        envoy.ejected_until[host] = (
            self.now + self.model.outlier_detection.base_ejection_time * times
        )
        envoy.consecutive[host] = 0
        envoy.consecutive_5xx[host] = 0

    def _on_at_replica(self, request: _Request) -> None:
        assert request.host is not None
        replica = self.replicas[request.host]
        envoy = request.envoy
        if not replica.alive:  # died while the request travelled
            took = self.model.connect_timeout if replica.failure == "blackhole" else 0.0
            self._at(self.now + took, "connect_failed", (request, took))
            return
        envoy.consecutive[replica.address] = 0
        if replica.error_rate and self.rng.random() < replica.error_rate:
            back = self.scenario.rtt_ms(request.gateway, replica.region) / 2000.0
            self._at(self.now + back, "server_error", request)
            return
        engine_request = EngineRequest(
            prompt=[*self._prefix(request.group)]
            + [self.rng.getrandbits(31) for _ in range(request.prompt)],
            max_tokens=request.output,
        )
        request.engine_request = engine_request
        self._by_engine_request[id(engine_request)] = request
        replica.engine.submit(engine_request, self.now)
        if not replica.stepping:
            self._schedule(replica)

    def _prefix(self, group: int | None) -> range:
        """The tokens of a group's shared system prompt (negative: no drawn token is one)."""
        if group is None:
            return range(0)
        n = self.scenario.model.prefix_tokens
        return range(-(group + 1) * n, -group * n)

    def _on_server_error(self, request: _Request) -> None:
        envoy = request.envoy
        assert request.host is not None
        self._release(request)
        if self.now >= envoy.ejected_until.get(request.host, 0.0):
            count = envoy.consecutive_5xx.get(request.host, 0) + 1
            envoy.consecutive_5xx[request.host] = count
            threshold = self.model.outlier_detection.consecutive_5xx
            if threshold and count >= threshold:
                self._eject(envoy, request.host)
        self.record.failed(request.origin, self.now, 1.0)
        self._sample(request.origin, failed=1.0)

    def _schedule(self, replica: _Replica) -> None:
        step = replica.engine.schedule(self.now)
        if step is None:
            replica.stepping = False
            return
        replica.stepping = True
        self._at(self.now + step.duration, "step", (replica, replica.incarnation, step))

    def _on_step(self, payload: tuple[_Replica, int, Step]) -> None:
        replica, incarnation, step = payload
        if incarnation != replica.incarnation:
            return
        replica.engine.complete(step, self.now)
        self._schedule(replica)

    def _first_token(self, replica: _Replica, req: EngineRequest) -> None:
        request = self._by_engine_request.get(id(req))
        if request is None:
            return
        back = self.scenario.rtt_ms(request.gateway, replica.region) / 2000.0
        user = self.scenario.rtt_ms(request.origin, request.gateway) / 2000.0
        ttft = self.now + back + user - request.sent_at
        met = 1.0 if ttft <= self.scenario.slo.end_to_end_ms / 1000.0 else 0.0
        beyond = self.scenario.rtt_ms(request.origin, replica.region) > (
            self.scenario.slo.network_budget_ms
        )
        server = (
            [(self.now - (req.arrival_time or 0.0), 1.0)]
            if replica.region == request.origin
            else []
        )
        self.record.served(
            request.origin,
            replica.region,
            self.now,
            1.0,
            met,
            [(ttft, 1.0)],
            beyond_budget=beyond,
            server_points=server,
        )
        self._sample(request.origin, met=met, beyond=1.0 if beyond else 0.0)

    def _finished(self, replica: _Replica, req: EngineRequest) -> None:
        replica.busy_s += 1.0 / replica.capacity
        request = self._by_engine_request.pop(id(req), None)
        if request is None:
            return
        back = self.scenario.rtt_ms(request.gateway, replica.region) / 2000.0
        self._at(self.now + back, "stream_done", request)

    def _on_stream_done(self, request: _Request) -> None:
        request.done = True
        self._release(request)

    def _release(self, request: _Request) -> None:
        envoy, host = request.envoy, request.host
        if host is None:
            return
        envoy.active[host] = max(0, envoy.active.get(host, 0) - 1)
        envoy.cluster_active[request.cluster] = max(
            0, envoy.cluster_active.get(request.cluster, 0) - 1
        )

    # -- the picker --------------------------------------------------------------------------

    def _pick(self, request: _Request) -> None:
        regions = [request.gateway, *within_budget(self.policy, self.model, request.gateway)]
        candidates = [r for r in self.replicas.values() if r.region in regions]
        slots = self.config.max_num_seqs
        blocks = self.blocks_share
        waiting, kv, fresh = [], [], []
        for replica in candidates:
            metrics = self._metrics.get(replica.address)
            placed = self._placed.get(replica.address, 0)
            dead_for = self.now - self._dead_since.get(replica.address, self.now)
            if metrics is None:
                waiting.append(0.0)
                kv.append(0.0)
                fresh.append(False)
                continue
            w, r, k = metrics
            n = w + r + placed
            waiting.append(max(0.0, n - slots))
            kv.append(min(1.0, k + placed * blocks))
            fresh.append(replica.alive or dead_for <= picker_scores.STALE_AFTER_S)
        scored = picker_scores.scores(waiting, kv, fresh)
        best = max(scored)
        tied = [c for c, s in zip(candidates, scored, strict=True) if best - s <= 1e-9]
        nearest = min(self.scenario.rtt_ms(request.gateway, c.region) for c in tied)
        chosen = self.rng.choice(
            [c for c in tied if self.scenario.rtt_ms(request.gateway, c.region) == nearest]
        )
        self._placed[chosen.address] = self._placed.get(chosen.address, 0) + 1
        request.cluster = "picked"
        self._send(request, chosen.address)

    # -- event windows -----------------------------------------------------------------------

    def _sample(
        self,
        origin: str,
        *,
        offered: float = 0.0,
        failed: float = 0.0,
        refused: float = 0.0,
        to_dead: float = 0.0,
        met: float = 0.0,
        beyond: float = 0.0,
    ) -> None:
        for event in self.scenario.events:
            if not isinstance(event, RegionLoss):
                continue
            if not EVENT_WINDOW[0] <= self.now - event.at <= EVENT_WINDOW[1]:
                continue
            key = f"{LOSS_EVENT}:{event.region}@{event.at:g}"
            t = self.scenario.step * math.floor(self.now / self.scenario.step)
            mine = origin == event.region
            self._accumulate(
                key,
                t,
                (
                    offered if mine else 0,
                    failed if mine else 0,
                    refused if mine else 0,
                    to_dead,
                    beyond,
                    met if mine else 0,
                ),
            )
            self._accumulate(key + ":all", t, (offered, failed, refused, to_dead, 0.0, met))

    def _accumulate(self, key: str, t: float, values: tuple[float, ...]) -> None:
        samples = self.record.events.setdefault(key, [])
        if samples and samples[-1].t == t:
            last = samples[-1]
            samples[-1] = StepSample(
                t,
                last.offered + values[0],
                last.failed + values[1],
                last.refused + values[2],
                last.to_dead + values[3],
                last.beyond_budget + values[4],
                last.met + values[5],
            )
        else:
            samples.append(StepSample(t, *values))
