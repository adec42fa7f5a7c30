"""Builders shared by the control-law tests: a three-region policy, signals, tick loops."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from heliostat.balance import ClusterView, ControlState, EndpointView, LocalityView, Views, compute
from heliostat.policy import Policy, parse_policy
from heliostat.signals.record import Signal

MODEL = "llama"
T0 = 1_700_000_000.0
INTERVAL = 2.0
# us-east <-> eu-west 80 ms, eu-west <-> ap-southeast 160, us-east <-> ap-southeast 210;
# with a 150 ms budget eu-west and us-east rescue each other, ap-southeast is on its own.
REGIONS = ("ap-southeast", "eu-west", "us-east")

Signals = dict[tuple[str, str], Signal]


def policy_of(
    counts: Mapping[str, int] | None = None,
    *,
    budget: float = 150.0,
    beyond: str = "last_resort",
    max_share: float | None = 0.3,
    slots: int | None = None,
    extra_model: bool = False,
) -> Policy:
    """One model with `counts[region]` endpoints per region (default 2 / 2 / 1)."""
    counts = counts or {"us-east": 2, "eu-west": 2, "ap-southeast": 1}
    lines = []
    for index, region in enumerate(REGIONS):
        for n in range(counts.get(region, 0)):
            slot = f", slots: {slots}" if slots else ""
            lines.append(
                f"        - {{address: '10.{index}.{n // 250}.{n % 250 + 1}:8000', "
                f"region: {region}{slot}}}"
            )
    endpoints = "\n".join(lines)
    cap = "" if max_share is None else f"max_share: {max_share}, "
    extra = ""
    if extra_model:
        extra = (
            "    - name: other\n      endpoints:\n"
            "        - {address: '10.9.0.1:8000', region: eu-west}\n"
        )
    text = f"""\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {{name: t}}
spec:
  regions:
    us-east: {{rtt_ms: {{eu-west: 80, ap-southeast: 210}}}}
    eu-west: {{rtt_ms: {{ap-southeast: 160}}}}
    ap-southeast: {{}}
  models:
    - name: {MODEL}
      slo: {{network_budget_ms: {budget}}}
      overflow: {{{cap}beyond_budget: {beyond}}}
      endpoints:
{endpoints}
{extra}"""
    return parse_policy(text, "t.yaml")


def addresses(policy: Policy, region: str | None = None, model: str = MODEL) -> list[str]:
    found = policy.model(model)
    assert found is not None
    return [e.address for e in found.endpoints if region is None or e.region == region]


def signal(
    address: str,
    *,
    waiting: float | None = 0.0,
    kv: float | None = 0.0,
    running: float | None = None,
    max_num_seqs: int | None = None,
    at: float = T0,
    failures: int = 0,
    model: str = MODEL,
) -> Signal:
    return Signal(
        model=model,
        address=address,
        engine="vllm",
        waiting=waiting,
        running=running,
        kv_usage=kv,
        max_num_seqs=max_num_seqs,
        scraped_at=at,
        error="timeout" if failures else None,
        consecutive_failures=failures,
    )


def pressure_signals(policy: Policy, pressure: Mapping[str, float], at: float = T0) -> Signals:
    """Every endpoint of a region at the given pressure, expressed as queue depth (4 = 1.0)."""
    result: Signals = {}
    for region, p in pressure.items():
        for address in addresses(policy, region):
            result[(MODEL, address)] = signal(address, waiting=4.0 * p, kv=0.0, at=at)
    return result


def run(
    policy: Policy,
    signals_at: Callable[[int, float], Signals],
    ticks: int,
    *,
    interval: float = INTERVAL,
    state: ControlState | None = None,
    start: float = T0,
) -> list[tuple[Views, ControlState]]:
    """Call compute `ticks` times, `interval` apart; signals_at(tick, now) gives the signals."""
    out = []
    for tick in range(ticks):
        now = start + tick * interval
        views, state = compute(policy, signals_at(tick, now), state, now)
        out.append((views, state))
    return out


def cluster(views: Views, region: str | None, name: str = MODEL) -> ClusterView:
    found = views.for_region(region).cluster(name)
    assert found is not None
    return found


def locality(view: ClusterView, region: str) -> LocalityView:
    return next(loc for loc in view.localities if loc.region == region)


def endpoint(views: Views, address: str) -> EndpointView:
    return next(e for e in cluster(views, None).endpoints() if e.address == address)


def weights(views: Views) -> dict[str, int]:
    return {e.address: e.weight for e in cluster(views, None).endpoints()}


def shares_in(views: Views, region: str) -> dict[str, float]:
    """What region's gateways send where: its priority-0 locality weights, normalised."""
    view = cluster(views, region)
    first = [loc for loc in view.localities if loc.priority == 0]
    total = sum(loc.weight or 0 for loc in first)
    return {loc.region: (loc.weight or 0) / total for loc in first}


class Plant:
    """A stylised fleet: each region's gateways bring `demand` (in endpoint capacities), refuse
    what the view's interactive cluster drops and split the rest by the views last published;
    every endpoint of a region then runs at load / capacity, reported as queue depth
    (pressure 1.0 = thresholds.queue waiting requests). No completion counters: the law works
    in endpoint units."""

    def __init__(
        self, policy: Policy, demand: Mapping[str, float], interval: float = INTERVAL
    ) -> None:
        self.policy = policy
        self.interval = interval
        self.demand = dict(demand)
        self.views: Views | None = None
        self.state: ControlState | None = None
        self.tick = 0

    def loads(self) -> dict[str, float]:
        load = dict.fromkeys(REGIONS, 0.0)
        for region, amount in self.demand.items():
            if self.views is None:
                load[region] += amount
                continue
            admitted = 1.0 - cluster(self.views, region).drop_overload_percent / 100.0
            for target, share in shares_in(self.views, region).items():
                load[target] += admitted * share * amount
        return load

    def pressures(self) -> dict[str, float]:
        load = self.loads()
        return {r: load[r] / len(addresses(self.policy, r)) for r in REGIONS}

    def signals(self, tick: int, now: float) -> Signals:
        return pressure_signals(self.policy, self.pressures(), at=now)

    def run(self, ticks: int) -> list[tuple[Views, ControlState]]:
        """Tick the law `ticks` times, each seeing the fleet as the last views left it."""
        out = []
        for _ in range(ticks):
            now = T0 + self.tick * self.interval
            self.views, self.state = compute(
                self.policy, self.signals(self.tick, now), self.state, now
            )
            self.tick += 1
            out.append((self.views, self.state))
        return out
