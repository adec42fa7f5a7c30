"""The fluid engine: one policy's run of a scenario, in small time steps.

Per step of `scenario.step` seconds (see `groups`, `gateway`, `fastmodel`):

1. events that are due (a region lost or back, a canary build, replicas becoming ready,
   drained replicas released); the policy is rebuilt when the fleet changed;
2. on a scrape round (every `signals.interval` of the policy) every listed replica is
   scraped (heliostat only: the baselines do not read signals) and, when the round lands,
   the control law ticks (`law.ControlLaw`, as `serve` does); the autoscaler acts on its
   interval;
3. each region's users' requests of the step (their rate times the step) go through their
   gateways (`gateway.FluidGateway`, or the picker), which yields flows to replica groups,
   refusals and failures;
4. each group's time to first token for this step's arrivals is computed once
   (`fastmodel`), each flow adds its network round trips and lost time and is recorded
   (exact SLO attainment, percentile points); then every group advances by one step.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from heliostat.balance import TrafficClass
from heliostat.balance.priorities import within_budget
from heliostat.balance.scaling import scaling_signals
from heliostat.planet.autoscaler import Autoscaler, desired_from_rates, gateway_demand
from heliostat.planet.demand import DemandModel, Mix
from heliostat.planet.fastmodel import FastReplica
from heliostat.planet.gateway import Flow, FluidGateway, Outcome
from heliostat.planet.groups import CANARY_VERSION, Fleet, Group, Phase, mergeable
from heliostat.planet.law import GatewayLoads, ReplicaSample, Scrapes
from heliostat.planet.picker import FluidPicker
from heliostat.planet.record import Record, StepSample
from heliostat.planet.routers import (
    GeoDns,
    HeliostatRouter,
    LeastRequestRouter,
    NearestRegionRouter,
    Router,
)
from heliostat.planet.scenario import (
    Canary,
    PolicyName,
    RegionLoss,
    ScalingSignal,
    Scenario,
)
from heliostat.planet.topology import PolicyCache, ReplicaId, address_of
from heliostat.sim.engine import EngineConfig

T0 = 1_700_000_000.0  # virtual wall clock at the scenario's start (signals carry it)
DRAIN_LIMIT_S = 600.0  # a draining replica is released at the latest after this
EVENT_WINDOW = (-30.0, 600.0)  # fine samples around a region's loss
LOSS_EVENT = "region_loss"
PERCENTILE_EVERY = 4  # steps between the ones whose latency points feed the percentiles
# The random part of a replica's queue follows its sustained arrival rate, not one step's:
# balancers that chase the least loaded (the picker, two choices between groups) alternate
# between groups from step to step, which the queue averages out.
RATE_TAU_S = 2.0
MAX_BUILT = 5.0  # a queue built at a higher rate drains towards a lower one's level


@dataclass(frozen=True, slots=True)
class RunOptions:
    policy: PolicyName
    scaling: bool = False
    # Replicas per region instead of the scenario's (e.g. a fleet sized for each peak).
    fleet: dict[str, int] | None = None
    label: str = ""


def engine_config(scenario: Scenario) -> EngineConfig:
    return EngineConfig(**scenario.model.engine.model_dump())


def _gathered(
    flows: list[Flow],
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[tuple[str, str, str, float], float]]:
    """A step's flows summed: per group, per group and gateway, and per (origin, gateway,
    group, delay)."""
    arrivals: dict[str, float] = {}
    by_gateway: dict[str, dict[str, float]] = {}
    merged: dict[tuple[str, str, str, float], float] = {}
    for flow in flows:
        gid = flow.group.gid
        arrivals[gid] = arrivals.get(gid, 0.0) + flow.mass
        per = by_gateway.setdefault(gid, {})
        per[flow.gateway] = per.get(flow.gateway, 0.0) + flow.mass
        key = (flow.origin, flow.gateway, gid, flow.delay_s)
        merged[key] = merged.get(key, 0.0) + flow.mass
    return arrivals, by_gateway, merged


class FluidRun:
    """One policy, one scenario (see the module docstring)."""

    def __init__(self, scenario: Scenario, options: RunOptions) -> None:
        self.scenario = scenario
        self.options = options
        self.dt = scenario.step
        self.rng = random.Random(f"{scenario.seed}-{options.policy.value}-{options.label}")
        self.mix = Mix.of(scenario)
        self.base_model = FastReplica.of(engine_config(scenario), self.mix)
        self.demand = DemandModel(scenario)
        self.fleet = Fleet()
        counts = options.fleet or {r: reg.replicas for r, reg in scenario.regions.items()}
        self.serving_regions = {r for r, c in counts.items() if c > 0}
        for region, count in sorted(counts.items()):
            if count:
                self.fleet.add(
                    Group(
                        self.fleet.new_gid(region),
                        region,
                        self.fleet.new_replicas(region, count),
                        self.base_model,
                    )
                )
        self.policies = PolicyCache(scenario)
        self.policy = self.policies.policy(self.fleet.listed())
        self.model = self.policy.spec.models[0]
        self.dns = GeoDns(scenario, scenario.dns_failover)
        self.router = self._router(options.policy)
        self.picker = (
            FluidPicker(self._candidates, scenario.rtt_ms, self.model.connect_timeout)
            if options.policy is PolicyName.PICKER
            else None
        )
        self.gateways = {
            r: FluidGateway(
                r,
                scenario.gateways_of(r),
                scenario.rtt_ms,
                heliostat=isinstance(self.router, HeliostatRouter),
            )
            for r in scenario.regions
        }
        self.scrapes = Scrapes()
        # About 288 buckets per run (5 minutes in a day), each a whole number of steps.
        bucket = self.dt * max(1, round(scenario.duration / 288 / self.dt))
        self.record = Record(scenario.regions, scenario.duration, bucket)
        self.autoscaler = (
            Autoscaler(scenario, self.serving_regions | set(scenario.scaling.limits))
            if options.scaling
            else None
        )
        self._policy_version = self.fleet.version
        self._address_group: dict[str, str] = {}
        self._listed_cache: list[ReplicaId] = []
        self._addresses: dict[ReplicaId, str] = {}
        self._lost_gateways: set[str] = set()
        self._offered_ewma: dict[str, float] = {}
        self._pending_tick: float | None = None
        self._step_index = 0
        self._lrs_since = 0.0
        self.wall_s = 0.0

    # -- wiring ------------------------------------------------------------------------------

    def _router(self, name: PolicyName) -> Router | None:
        if name is PolicyName.HELIOSTAT:
            return HeliostatRouter(self.policy, self.scenario.push_delay)
        if name is PolicyName.LEAST_REQUEST:
            return LeastRequestRouter(self.policy)
        if name is PolicyName.NEAREST_REGION:
            return NearestRegionRouter(self.policy, self.dns, self.serving_regions)
        return None

    def _candidates(self, gateway: str) -> list[str]:
        return [gateway, *within_budget(self.policy, self.model, gateway)]

    def _address(self, replica: ReplicaId) -> str:
        address = self._addresses.get(replica)
        if address is None:
            address = self._addresses[replica] = address_of(self.scenario, replica)
        return address

    def _group_key(self, address: str) -> str:
        """The group an endpoint of a view belongs to; an endpoint gone from the fleet (a
        view computed before it was released) is a group of its own that no longer
        exists: Envoy's connections to it are refused."""
        return self._address_group.get(address, f"gone:{address}")

    def _refresh_policy(self) -> None:
        if self.fleet.version == self._policy_version:
            return
        self._policy_version = self.fleet.version
        before = {address_of(self.scenario, r) for r in self._listed_cache}
        self.policy = self.policies.policy(self.fleet.listed())
        self.model = self.policy.spec.models[0]
        if self.router is not None:
            self.router.on_policy(self.policy)
        now_listed = set(self.fleet.listed())
        gone = before - {address_of(self.scenario, r) for r in now_listed}
        self.scrapes.forget((self.model.name, a) for a in gone)
        self._index()

    def _index(self) -> None:
        self._address_group = {}
        self._listed_cache = self.fleet.listed()
        for group in self.fleet:
            for member in group.members:
                self._address_group[address_of(self.scenario, member)] = group.gid

    # -- the run -----------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> Record:
        started = time.perf_counter()
        self._listed_cache = self.fleet.listed()
        self._index()
        interval = self.model.signals.interval
        next_round = 0.0
        next_scale = self.scenario.scaling.interval
        events = sorted(
            [(e.at, i, "start") for i, e in enumerate(self.scenario.events)]
            + [
                (e.until, i, "end")
                for i, e in enumerate(self.scenario.events)
                if isinstance(e, RegionLoss | Canary) and e.until is not None
            ]
        )
        steps = round(self.scenario.duration / self.dt)
        for step in range(steps):
            t = step * self.dt
            self._step_index = step
            while events and events[0][0] <= t:
                _, index, kind = events.pop(0)
                self._event(index, kind, t)
            self._lifecycle(t)
            self._refresh_policy()
            self.dns.observe(t, self._regions_up())
            if t >= next_round - 1e-9:
                self._scrape_round(t)
                next_round += interval
            if self._pending_tick is not None and t >= self._pending_tick - 1e-9:
                self._tick(t)
            if self.autoscaler is not None and t >= next_scale - 1e-9:
                self._autoscale(t)
                next_scale += self.scenario.scaling.interval
            self._step(t)
            if progress is not None and step % 2000 == 0:
                progress(t / self.scenario.duration)
        self.wall_s = time.perf_counter() - started
        if isinstance(self.router, HeliostatRouter):
            self.record.ticks = [t - T0 for t in self.router.tick_times]
        else:
            self.record.ticks = [
                i * interval for i in range(int(self.scenario.duration / interval))
            ]
        if self.autoscaler is not None:
            self.record.notes["autoscaler"] = self.autoscaler.decisions
        return self.record

    # -- events ------------------------------------------------------------------------------

    def _event(self, index: int, kind: str, t: float) -> None:
        event = self.scenario.events[index]
        if isinstance(event, RegionLoss):
            if kind == "start":
                self._lose(event, t)
            else:
                self._restore(event)
        elif isinstance(event, Canary):
            if kind == "start":
                self._canary(event)
            else:
                self._canary_end(event)

    def _lose(self, event: RegionLoss, t: float) -> None:
        for group in self.fleet.in_region(event.region):
            if group.phase is Phase.PROVISIONING:
                continue
            # Requests in flight on the lost replicas break. They were recorded when they
            # arrived, with the time to first token they would get: those still waiting
            # would have missed the SLO anyway behind a backlog, the others had their first
            # token (the discrete engine counts the ones without one as failed).
            group.by_origin.clear()
            group.n = 0.0
            group.phase = Phase.DEAD
            group.failure = event.failure.value
        if event.gateways == "lost":
            self._lost_gateways.add(event.region)
        self.fleet.touch()

    def _restore(self, event: RegionLoss) -> None:
        for group in self.fleet.in_region(event.region):
            if group.phase is Phase.DEAD:
                group.phase = Phase.SERVING
                self.fleet.restarted(group)
                for gateway in self.gateways.values():
                    gateway.healed(group.gid)
        self._lost_gateways.discard(event.region)
        self.fleet.touch()

    def _canary(self, event: Canary) -> None:
        model = self.base_model.with_speed(event.speed_factor)
        for group in self.fleet.in_region(event.region):
            if group.phase is not Phase.SERVING or group.build is not None:
                continue
            count = max(1, round(group.count * event.share))
            part = self.fleet.split(group, count, model=model, error_rate=event.error_rate)
            part.build = CANARY_VERSION

    def _canary_end(self, event: Canary) -> None:
        for group in self.fleet.in_region(event.region):
            if group.build == CANARY_VERSION:
                group.build = None
                group.model = self.base_model
                group.error_rate = 0.0
        self.fleet.touch()

    def _lifecycle(self, t: float) -> None:
        for group in self.fleet:
            if group.phase is Phase.PROVISIONING and t >= group.ready_at:
                group.phase = Phase.SERVING
                self.fleet.touch()
            elif group.phase is Phase.DRAINING and (
                group.in_system() < 0.5 or t - group.drained_since > DRAIN_LIMIT_S
            ):
                self.fleet.remove(group)
        self._merge()

    def _merge(self) -> None:
        serving = [g for g in self.fleet if g.phase is Phase.SERVING]
        pairs = []
        used: set[str] = set()
        for i, young in enumerate(serving):
            for old in serving[:i]:
                if young.gid in used or old.gid in used:
                    continue
                if mergeable(young, old) and self._treated_alike(young, old):
                    pairs.append((young, old))
                    used |= {young.gid, old.gid}
        if pairs:
            self.fleet.merge(pairs)

    def _treated_alike(self, a: Group, b: Group) -> bool:
        """Whether the law publishes the same weight and health for both groups' members."""
        if not isinstance(self.router, HeliostatRouter):
            return True
        state = self.router.law.state
        if state is None:
            return True
        name = self.model.name
        seen = set()
        for group in (a, b):
            for member in group.members:
                endpoint = state.endpoints.get((name, address_of(self.scenario, member)))
                if endpoint is None:
                    return False
                seen.add((endpoint.published, endpoint.state))
        return len(seen) == 1

    def _regions_up(self) -> dict[str, bool]:
        up = dict.fromkeys(self.scenario.regions, False)
        for group in self.fleet:
            if group.phase is Phase.SERVING and group.count:
                up[group.region] = True
        return up

    # -- control -----------------------------------------------------------------------------

    def _scrape_round(self, t: float) -> None:
        if not isinstance(self.router, HeliostatRouter):
            return
        now = T0 + t
        name = self.model.name
        config = self.base_model.config
        blackholed = False
        for group in self.fleet:
            if not group.listed:
                continue
            if group.phase is Phase.DEAD:
                reason = "timeout" if group.failure == "blackhole" else "connect"
                blackholed |= group.failure == "blackhole"
                for member in group.members:
                    self.scrapes.failed((name, self._address(member)), reason)
                continue
            offsets = self.fleet.counter_offset
            draws = group.model.scrapes(
                group.n, group.rate, self.rng, group.built, len(group.members)
            )
            samples = [
                (
                    (name, self._address(member)),
                    ReplicaSample(
                        float(waiting),
                        float(running),
                        kv,
                        group.served_total + offsets.get(member, 0.0),
                        config.max_num_seqs,
                        config.num_gpu_blocks,
                        config.block_size,
                    ),
                )
                for member, (waiting, running, kv) in zip(group.members, draws, strict=True)
            ]
            self.scrapes.scraped_each(samples, now)
        # A round lands when its slowest scrape is done: a black-holed one times out.
        self._pending_tick = t + (self.model.signals.timeout if blackholed else 0.0)

    def _tick(self, t: float) -> None:
        self._pending_tick = None
        assert isinstance(self.router, HeliostatRouter)
        drained = frozenset(
            (self.model.name, address_of(self.scenario, r)) for r in self.fleet.drained()
        )
        loads = GatewayLoads(
            interval_s=t - self._lrs_since,
            clusters={
                (region, name): load
                for region, gateway in sorted(self.gateways.items())
                for name, load in gateway.report(self.fleet.groups).items()
            },
        )
        self._lrs_since = t
        self.router.on_round(T0 + t, self.policy, self.scrapes.signals(), drained, loads)

    def _autoscale(self, t: float) -> None:
        assert self.autoscaler is not None
        scaling = self.scenario.scaling
        scalable = set(self.autoscaler.scalable)
        if scaling.signal is ScalingSignal.LAW:
            state = self.router.law.state if isinstance(self.router, HeliostatRouter) else None
            signals = scaling_signals(self.policy, state, scaling.target_utilisation)
            desired = {s.region: s.desired for s in signals if s.region in scalable}
        else:
            demand = gateway_demand(self.scenario, self._offered_ewma, scalable)
            desired = desired_from_rates(
                demand, self.base_model.capacity, scaling.target_utilisation
            )
        active: dict[str, int] = {}
        for group in self.fleet:
            if group.phase in (Phase.SERVING, Phase.PROVISIONING, Phase.DEAD):
                active[group.region] = active.get(group.region, 0) + group.count
        moves = self.autoscaler.decide(t, desired, active, self.fleet.allocated())
        for move in moves:
            if move.add:
                members = self.fleet.new_replicas(move.region, move.add)
                self.fleet.add(
                    Group(
                        self.fleet.new_gid(move.region),
                        move.region,
                        members,
                        self.base_model,
                        phase=Phase.PROVISIONING,
                        ready_at=t + scaling.provisioning_delay,
                    )
                )
            if move.drain:
                self._drain(move.region, move.drain, t)

    def _drain(self, region: str, count: int, t: float) -> None:
        serving = sorted(
            (g for g in self.fleet.in_region(region) if g.phase is Phase.SERVING),
            key=lambda g: g.gid,
            reverse=True,
        )
        provisioning = [g for g in self.fleet.in_region(region) if g.phase is Phase.PROVISIONING]
        for group in provisioning:  # cancel what is not serving yet first
            if count <= 0:
                return
            take = min(count, group.count)
            part = self.fleet.split(group, take)
            self.fleet.remove(part)
            count -= take
        for group in serving:
            if count <= 0:
                return
            take = min(count, group.count)
            self.fleet.split(group, take, phase=Phase.DRAINING, drained_since=t)
            count -= take

    # -- one step ----------------------------------------------------------------------------

    def _gateway_of(self, origin: str) -> str | None:
        """The gateway region serving `origin`'s users (their own, or after GeoDNS moved
        them from lost gateways)."""
        if origin not in self._lost_gateways:
            return origin
        if self.dns.seen_up(origin):
            return None  # GeoDNS still sends them to the lost gateways
        alive = {r for r in self.scenario.regions if r not in self._lost_gateways}
        return self.dns.nearest(origin, alive) if alive else None

    def _step(self, t: float) -> None:
        dt = self.dt
        groups = self.fleet.groups
        batch_share = self.scenario.model.batch_share
        flows: list[Flow] = []
        placed: dict[str, float] = {}
        loss_samples: dict[str, list[float]] = {}
        for origin in self.demand.origins:
            rate = self.demand.rate(origin, t + dt / 2)
            mass = rate * dt
            previous = self._offered_ewma.get(origin, rate)
            self._offered_ewma[origin] = previous + 0.05 * (rate - previous)
            if mass <= 0:
                continue
            self.record.offered(origin, t, mass)
            gateway = self._gateway_of(origin)
            outcome = Outcome()
            if gateway is None:
                outcome.failed = mass
            elif self.picker is not None:
                outcome = self.picker.route(origin, gateway, mass, groups, placed, t, dt)
            else:
                assert self.router is not None
                view = self.router.view(gateway, T0 + t)
                if view is None:
                    outcome.refused = mass
                else:
                    gw = self.gateways[gateway]
                    gw.configure(self.policy, view, self.fleet.version, self._group_key)
                    outcome = gw.route(
                        origin,
                        {
                            TrafficClass.INTERACTIVE: mass * (1.0 - batch_share),
                            TrafficClass.BATCH: mass * batch_share,
                        },
                        groups,
                        t,
                        dt,
                    )
            if outcome.refused:
                self.record.refused(origin, t, outcome.refused)
            if outcome.failed:
                self.record.failed(origin, t, outcome.failed)
            flows.extend(outcome.flows)
            loss_samples[origin] = [mass, outcome.failed, outcome.refused, outcome.to_dead]
        self._serve(flows, t, loss_samples)

    def _advance_queues(self, arrivals: Mapping[str, float]) -> None:
        """Every serving group's arrival rate (smoothed) and queue, one step on."""
        dt = self.dt
        gain = 1.0 - math.exp(-dt / RATE_TAU_S)
        for group in self.fleet:
            if group.count:
                now_rate = arrivals.get(group.gid, 0.0) / (group.count * dt)
                group.rate += gain * (now_rate - group.rate)
                stationary = group.model.occupancy(group.rate).waiting
                relax = 1.0 - math.exp(-dt / group.model.relaxation_s(group.rate))
                group.queue += relax * (stationary - group.queue)
                group.built = min(MAX_BUILT, group.queue / stationary) if stationary > 1e-9 else 0.0

    def _serve(self, flows: list[Flow], t: float, loss_samples: dict[str, list[float]]) -> None:
        dt = self.dt
        scenario = self.scenario
        slo = scenario.slo.end_to_end_ms / 1000.0
        budget = scenario.slo.network_budget_ms
        arrivals, by_gateway, merged = _gathered(flows)
        # Percentiles come from every PERCENTILE_EVERY-th step (a systematic sample, each
        # standing for the steps around it); SLO attainment and counts are exact every step.
        sampled = self._step_index % PERCENTILE_EVERY == 0
        ttfts = {}
        points = {}
        self._advance_queues(arrivals)
        for gid in arrivals:
            group = self.fleet.groups[gid]
            ttft = group.model.ttft(group.n, group.rate, group.built)
            ttfts[gid] = ttft
            if sampled:
                points[gid] = ttft.points()
        met_by_origin: dict[str, float] = {}
        beyond_by_origin: dict[str, float] = {}
        rtt = scenario.rtt_ms
        for (origin, gateway, gid, delay), mass in merged.items():
            group = self.fleet.groups[gid]
            ttft = ttfts[gid]
            offset = (rtt(origin, gateway) + rtt(gateway, group.region)) / 1000.0 + delay
            met = mass * ttft.cdf(slo - offset)
            beyond = rtt(origin, group.region) > budget
            if sampled:
                base = points[gid]
                shifted = [(sec + offset, w) for sec, w in base]
                server = base if group.region == origin else ()
            else:
                shifted, server = [], ()
            self.record.served(
                origin,
                group.region,
                t,
                mass,
                met,
                shifted,
                beyond_budget=beyond,
                server_points=server,
                weight=PERCENTILE_EVERY,
            )
            met_by_origin[origin] = met_by_origin.get(origin, 0.0) + met
            if beyond:
                beyond_by_origin[origin] = beyond_by_origin.get(origin, 0.0) + mass
        self._sample_events(t, loss_samples, met_by_origin, beyond_by_origin)
        gpus = scenario.model.gpus_per_replica
        per_region: dict[str, list[float]] = {}
        for group in self.fleet:
            mass = arrivals.get(group.gid, 0.0)
            row = per_region.setdefault(group.region, [0.0, 0.0, 0.0])
            row[0] += group.count
            if group.phase in (Phase.SERVING, Phase.DRAINING):
                row[1] += group.count
            if group.phase in (Phase.PROVISIONING, Phase.DEAD) or not group.count:
                continue
            rate = mass / (group.count * dt)
            before = group.n
            after, done = group.model.advance(before, rate, dt)
            group.n = after
            group.served_total += done
            held = before * group.count + mass
            remaining = after * group.count
            keep = remaining / held if held > 0 else 0.0
            group.done_share = 1.0 - keep
            for gateway, m in by_gateway.get(group.gid, {}).items():
                group.by_origin[gateway] = group.by_origin.get(gateway, 0.0) + m
            for gateway in group.by_origin:
                group.by_origin[gateway] *= keep
            row[2] += done * group.count / group.model.capacity
        for region, (allocated, serving, busy) in per_region.items():
            self.record.gpus(region, t, dt, int(allocated), int(serving), busy, gpus)

    def _sample_events(
        self,
        t: float,
        samples: dict[str, list[float]],
        met: dict[str, float],
        beyond: dict[str, float],
    ) -> None:
        for event in self.scenario.events:
            if not isinstance(event, RegionLoss):
                continue
            if not EVENT_WINDOW[0] <= t - event.at <= EVENT_WINDOW[1]:
                continue
            key = f"{LOSS_EVENT}:{event.region}@{event.at:g}"
            total = [0.0, 0.0, 0.0, 0.0]
            for row in samples.values():
                total = [a + b for a, b in zip(total, row, strict=True)]
            own = samples.get(event.region, [0.0, 0.0, 0.0, 0.0])
            self.record.sample(
                key,
                StepSample(
                    t=t,
                    offered=own[0],
                    failed=own[1],
                    refused=own[2],
                    to_dead=total[3],
                    beyond_budget=sum(beyond.values()),
                    met=met.get(event.region, 0.0),
                ),
            )
            self.record.sample(
                key + ":all",
                StepSample(t, total[0], total[1], total[2], total[3], 0.0, sum(met.values())),
            )
            util = self._utilisation()
            self.record.notes.setdefault(key + ":utilisation", []).append((t, util))

    def _utilisation(self) -> dict[str, float]:
        """Each region's arrivals over its serving capacity, this step."""
        rate: dict[str, float] = {}
        capacity: dict[str, float] = {}
        for group in self.fleet:
            if group.phase is not Phase.SERVING:
                continue
            rate[group.region] = rate.get(group.region, 0.0) + group.rate * group.count
            capacity[group.region] = capacity.get(group.region, 0.0) + (
                group.model.capacity * group.count
            )
        return {r: round(rate[r] / capacity[r], 4) for r in sorted(rate) if capacity[r] > 0}
