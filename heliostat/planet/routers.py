"""Who configures the gateways: heliostat's law, or the baselines' static configuration.

Each gives, for the gateways of a region, the view Envoy holds now (a `RegionView`, turned
into clusters and routes by `heliostat.planning.plan`, exactly as `serve` would):

- `heliostat`: the control law ticked on every scrape round (`law.ControlLaw`), its views
  applied by Envoy `push_delay` after the tick;
- `least_request`: static Envoys, every region's replicas at equal weight, priorities by
  RTT (own region first, regions beyond the budget last or never, as the policy says),
  least request inside, failover by Envoy's own health (outlier detection): the views
  heliostat serves before any signal arrives (`balance.static_views`);
- `nearest_region`: GeoDNS alone: a region's users go to the nearest region that has
  replicas and that GeoDNS's health checks see up (`GeoDns`), and only to it.

The endpoint picker is not a view: see `picker.py`.
"""

from __future__ import annotations

from collections.abc import Mapping

from heliostat.balance import EndpointView, RegionView, Views, static_views
from heliostat.planet.law import ControlLaw, GatewayLoads, Key
from heliostat.planet.scenario import PolicyName, Scenario
from heliostat.planning.subsets import subset
from heliostat.policy import Policy
from heliostat.signals.record import Signal


class GeoDns:
    """Which regions GeoDNS answers with: a region's change of health is seen `delay` later
    (its health checks must fail, or pass, for that long)."""

    def __init__(self, scenario: Scenario, delay: float) -> None:
        self.scenario = scenario
        self.delay = delay
        self._up: dict[str, bool] = {}
        self._since: dict[str, float] = {}
        self._seen: dict[str, bool] = {}

    def observe(self, now: float, up: Mapping[str, bool]) -> None:
        for region, state in up.items():
            if self._up.get(region) != state:
                self._up[region] = state
                self._since[region] = now
                self._seen.setdefault(region, state)
            elif now - self._since.get(region, now) >= self.delay:
                self._seen[region] = state

    def seen_up(self, region: str) -> bool:
        return self._seen.get(region, self._up.get(region, False))

    def nearest(self, origin: str, candidates: set[str]) -> str | None:
        """The nearest region among `candidates` GeoDNS sees up (the origin itself first)."""
        live = [r for r in candidates if self.seen_up(r)]
        if not live:
            return None
        return min(live, key=lambda r: (self.scenario.rtt_ms(origin, r), r))


class Router:
    """A source of views for every region's gateways."""

    name: PolicyName

    def on_policy(self, policy: Policy) -> None:
        """The fleet, hence the policy, changed."""

    def on_round(
        self,
        now: float,
        policy: Policy,
        signals: Mapping[Key, Signal],
        drained: frozenset[Key],
        loads: GatewayLoads | None,
    ) -> None:
        """A scrape round landed."""

    def view(self, region: str, now: float) -> RegionView | None:
        raise NotImplementedError


class HeliostatRouter(Router):
    name = PolicyName.HELIOSTAT

    def __init__(self, policy: Policy, push_delay: float) -> None:
        self.law = ControlLaw()
        self.push_delay = push_delay
        self._applied: Views = static_views(policy)  # what serve publishes at start-up
        self._pending: list[tuple[float, Views]] = []
        self.tick_times: list[float] = []

    def on_round(
        self,
        now: float,
        policy: Policy,
        signals: Mapping[Key, Signal],
        drained: frozenset[Key],
        loads: GatewayLoads | None,
    ) -> None:
        views = self.law.tick(policy, signals, now, drained, loads)
        self._pending.append((now + self.push_delay, views))
        self.tick_times.append(now)

    def view(self, region: str, now: float) -> RegionView:
        while self._pending and self._pending[0][0] <= now:
            self._applied = self._pending.pop(0)[1]
        return self._applied.for_region(region)


class LeastRequestRouter(Router):
    name = PolicyName.LEAST_REQUEST

    def __init__(self, policy: Policy) -> None:
        self._views = static_views(policy)

    def on_policy(self, policy: Policy) -> None:
        self._views = static_views(policy)

    def view(self, region: str, now: float) -> RegionView:
        return self._views.for_region(region)


class NearestRegionRouter(Router):
    name = PolicyName.NEAREST_REGION

    def __init__(self, policy: Policy, dns: GeoDns, serving_regions: set[str]) -> None:
        self._views = static_views(policy)
        self._dns = dns
        self.serving_regions = set(serving_regions)
        self._cache: dict[tuple[str, str], RegionView] = {}

    def on_policy(self, policy: Policy) -> None:
        self._views = static_views(policy)
        self._cache.clear()

    def view(self, region: str, now: float) -> RegionView | None:
        target = self._dns.nearest(region, self.serving_regions)
        if target is None:
            return None
        key = (region, target)
        cached = self._cache.get(key)
        if cached is None:
            own = self._views.for_region(region)

            def there(endpoint: EndpointView) -> bool:
                return endpoint.region == target

            clusters = tuple(subset(c, c.name, there) for c in own.clusters)
            cached = RegionView(own.region, clusters, own.fallbacks)
            self._cache[key] = cached
        return cached
