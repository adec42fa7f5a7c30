"""The fallback share: open loop, and against a stylised two-model fleet (`TwoModels`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest

from heliostat.balance import ControlState, Views, compute, describe
from heliostat.policy import Policy, parse_policy
from tests.balance.helpers import INTERVAL, REGIONS, T0, Signals, shares_in, signal

MAIN, SMALL = "llama", "small"


def two_models(
    main: Mapping[str, int],
    small: Mapping[str, int],
    *,
    max_share: float = 0.5,
    tenants: str = "",
) -> Policy:
    """`main` falls back to `small`; counts of endpoints per region, 150 ms budget for both."""

    def endpoints(counts: Mapping[str, int], octet: int) -> str:
        lines = [
            f"        - {{address: '10.{octet}.{REGIONS.index(r)}.{n + 1}:8000', region: {r}}}"
            for r in REGIONS
            for n in range(counts.get(r, 0))
        ]
        return "\n".join(lines)

    text = f"""\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {{name: t}}
spec:
  regions:
    us-east: {{rtt_ms: {{eu-west: 80, ap-southeast: 210}}}}
    eu-west: {{rtt_ms: {{ap-southeast: 160}}}}
    ap-southeast: {{}}
{tenants}  models:
    - name: {MAIN}
      fallback: {{model: {SMALL}, max_share: {max_share}}}
      endpoints:
{endpoints(main, 1)}
    - name: {SMALL}
      endpoints:
{endpoints(small, 2)}
"""
    return parse_policy(text, "t.yaml")


def _addresses(policy: Policy, model: str, region: str) -> list[str]:
    found = policy.model(model)
    assert found is not None
    return [e.address for e in found.endpoints if e.region == region]


class TwoModels:
    """Each region's gateways bring `demand` of the main model and `own` of the small one (in
    endpoint capacities). The last views decide where it goes: the fallback share of the main
    model's requests moves to the small model (its own region), the main model's gateways
    refuse what its cluster drops, the rest follows the main model's locality weights. Every
    endpoint then reports load / capacity as queue depth."""

    def __init__(
        self,
        policy: Policy,
        demand: Mapping[str, float],
        own: Mapping[str, float] | None = None,
    ) -> None:
        self.policy = policy
        self.demand = dict(demand)
        self.own = dict(own or {})
        self.views: Views | None = None
        self.state: ControlState | None = None
        self.tick = 0
        self.moved: dict[str, float] = {}

    def share(self, region: str | None) -> float:
        if self.views is None:
            return 0.0
        found = self.views.for_region(region).fallback(MAIN)
        return found.share if found else 0.0

    def loads(self) -> tuple[dict[str, float], dict[str, float]]:
        main = dict.fromkeys(REGIONS, 0.0)
        small = {r: self.own.get(r, 0.0) for r in REGIONS}
        for region, amount in self.demand.items():
            moved = self.share(region) * amount
            self.moved[region] = moved
            small[region] += moved
            if self.views is None:
                main[region] += amount - moved
                continue
            # What the main model's interactive cluster refuses at the gateway never arrives.
            admitted = 1.0 - self.views.for_region(region).clusters[0].drop_overload_percent / 100
            for target, part in shares_in(self.views, region).items():
                main[target] += part * (amount - moved) * admitted
        return main, small

    def pressures(self) -> tuple[dict[str, float], dict[str, float]]:
        main, small = self.loads()
        per_main = {
            r: main[r] / len(_addresses(self.policy, MAIN, r))
            for r in REGIONS
            if _addresses(self.policy, MAIN, r)
        }
        per_small = {
            r: small[r] / len(_addresses(self.policy, SMALL, r))
            for r in REGIONS
            if _addresses(self.policy, SMALL, r)
        }
        return per_main, per_small

    def signals(self, now: float) -> Signals:
        main, small = self.pressures()
        result: Signals = {}
        for model, pressures in ((MAIN, main), (SMALL, small)):
            for region, p in pressures.items():
                for address in _addresses(self.policy, model, region):
                    result[(model, address)] = signal(address, waiting=4.0 * p, at=now, model=model)
        return result

    def run(self, ticks: int) -> list[dict[str | None, float]]:
        """Tick `ticks` times; the published share of every view after each tick."""
        out = []
        for _ in range(ticks):
            now = T0 + self.tick * INTERVAL
            self.views, self.state = compute(self.policy, self.signals(now), self.state, now)
            self.tick += 1
            out.append({r: self.share(r) for r in (*REGIONS, None)})
        return out


def reversals(values: list[float]) -> int:
    """How often a series turned round."""
    turns = direction = 0
    for a, b in itertools.pairwise(values):
        step = (b > a) - (b < a)
        if step and direction and step != direction:
            turns += 1
        if step:
            direction = step
    return turns


EVEN = {"us-east": 2, "eu-west": 2, "ap-southeast": 2}


def _decision(plant: TwoModels, region: str) -> dict[str, object]:
    assert plant.state is not None
    model = describe(plant.state)["models"][MAIN]
    return dict(model["regions"][region]["fallback"])


def test_below_saturation_nothing_falls_back() -> None:
    plant = TwoModels(two_models(EVEN, EVEN), {r: 1.4 for r in REGIONS})
    history = plant.run(20)
    assert all(share == 0.0 for shares in history for share in shares.values())
    assert _decision(plant, "us-east")["state"] == "idle"
    assert plant.views is not None
    view = plant.views.for_region("us-east").fallback(MAIN)
    assert view is not None and view.fallback == SMALL and view.reason["state"] == "idle"


def test_a_saturated_region_that_overflow_can_relieve_does_not_fall_back() -> None:
    # eu-west at 1.2 x its capacity; us-east (80 ms away) nearly idle takes the excess.
    policy = two_models({"us-east": 4, "eu-west": 2, "ap-southeast": 1}, EVEN)
    plant = TwoModels(policy, {"eu-west": 2.4, "us-east": 0.8, "ap-southeast": 0.3})
    history = plant.run(25)
    assert all(shares["eu-west"] == 0.0 for shares in history)
    assert plant.views is not None
    assert shares_in(plant.views, "eu-west").get("us-east", 0.0) > 0.05
    assert _decision(plant, "eu-west")["state"] == "absorbed"


def test_when_every_in_budget_region_is_saturated_the_share_goes_to_its_need_and_settles() -> None:
    policy = two_models(EVEN, {"us-east": 4, "eu-west": 4, "ap-southeast": 4})
    plant = TwoModels(policy, {r: 3.0 for r in REGIONS})  # 1.5 x the main model's capacity
    history = plant.run(40)
    for region in REGIONS:
        shares = [h[region] for h in history]
        assert shares[-1] > 0.0
        assert max(shares) <= 0.5 + 1e-9
        # Feed-forward: once engaged, the share is at its need within a few ticks (the
        # demand estimate converging), not ramped in 5% steps.
        engaged = next(i for i, share in enumerate(shares) if share > 0.0)
        assert shares[engaged + 3] >= 0.8 * shares[-1]
        # Then holds: never turns round while the pressure lasts.
        assert reversals(shares) == 0
    # Settled: the last ticks publish the same share (and the same routes' reason).
    last = plant.views
    assert last is not None
    tail = plant.run(8)
    assert all(shares == tail[0] for shares in tail)
    assert plant.views is not None
    assert plant.views.for_region("us-east").fallbacks == last.for_region("us-east").fallbacks
    # The excess is 1 - 1 / 1.5, a third of the demand (endpoint units: the main model's
    # replicas carry 1.0 each at their thresholds, what the allocation places): that moved.
    assert tail[-1]["us-east"] == pytest.approx(1 / 3, abs=0.04)
    decision = _decision(plant, "us-east")
    assert decision["state"] == "exhausted" and decision["engaged"] is True
    reason = plant.views.for_region("us-east").fallback(MAIN)
    assert reason is not None and reason.reason["state"] == "exhausted"
    assert "no GPU within budget" in str(reason.reason["detail"])


def test_the_share_returns_to_zero_when_the_pressure_goes() -> None:
    policy = two_models(EVEN, {"us-east": 4, "eu-west": 4, "ap-southeast": 4})
    plant = TwoModels(policy, {r: 3.0 for r in REGIONS})
    plant.run(30)
    assert plant.share("us-east") > 0.0
    plant.demand = {r: 1.0 for r in REGIONS}
    after = plant.run(20)
    shares = [h["us-east"] for h in after]
    assert all(b <= a for a, b in itertools.pairwise(shares))
    assert shares[-1] == 0.0
    assert all(share == 0.0 for share in after[-1].values())
    assert _decision(plant, "us-east")["state"] == "idle"


def test_the_share_is_capped_at_max_share() -> None:
    policy = two_models(EVEN, {"us-east": 20, "eu-west": 20, "ap-southeast": 20}, max_share=0.2)
    plant = TwoModels(policy, {r: 8.0 for r in REGIONS})  # 4 x capacity: 78% excess
    history = plant.run(30)
    assert max(h["us-east"] for h in history) == pytest.approx(0.2)
    assert history[-1]["us-east"] == pytest.approx(0.2)


def test_a_region_keeps_some_of_its_requests_whatever_max_share_says() -> None:
    policy = two_models(EVEN, {"us-east": 40, "eu-west": 40, "ap-southeast": 40}, max_share=1.0)
    plant = TwoModels(policy, {r: 40.0 for r in REGIONS})
    history = plant.run(40)
    assert max(h["us-east"] for h in history) == pytest.approx(0.8)


def test_no_fallback_into_a_fallback_model_without_room() -> None:
    # The small model is itself busy with its own traffic: nothing is moved onto it.
    policy = two_models(EVEN, EVEN)
    plant = TwoModels(policy, {r: 3.0 for r in REGIONS}, own={r: 1.9 for r in REGIONS})
    history = plant.run(25)
    assert all(h["us-east"] == 0.0 for h in history)
    assert _decision(plant, "us-east")["state"] == "no_fallback_room"


def test_the_fallback_stops_growing_at_the_fallback_models_ceiling() -> None:
    # One small replica per region: it can take about 0.9 of the main model's 3.0 per region.
    policy = two_models(EVEN, {"us-east": 1, "eu-west": 1, "ap-southeast": 1})
    plant = TwoModels(policy, {r: 3.0 for r in REGIONS})
    plant.run(40)
    _, small = plant.pressures()
    assert 0.0 < plant.share("us-east") <= 0.35
    assert all(p < 1.0 for p in small.values()), small


def test_a_fallback_model_past_its_thresholds_gets_the_share_back_at_once() -> None:
    policy = two_models(EVEN, {"us-east": 4, "eu-west": 4, "ap-southeast": 4})
    plant = TwoModels(policy, {r: 3.0 for r in REGIONS})
    plant.run(30)
    before = plant.share("us-east")
    assert before > 0.0
    plant.own = {r: 6.0 for r in REGIONS}  # the small model's own users arrive
    after = [h["us-east"] for h in plant.run(12)]
    assert after[0] < before or after[1] < before  # no confirmation wait
    assert after[-1] == 0.0


def test_a_pinned_tenant_falls_back_only_inside_its_regions() -> None:
    tenants = (
        "  tenants:\n    - {name: acme, header: x-tenant, value: acme, regions: [ap-southeast]}\n"
    )
    # Saturated everywhere; the small model has no endpoint in ap-southeast.
    policy = two_models(EVEN, {"us-east": 4, "eu-west": 4}, tenants=tenants)
    plant = TwoModels(policy, {r: 3.0 for r in REGIONS})
    plant.run(30)
    assert plant.views is not None
    for region in (*REGIONS, None):
        view = plant.views.for_region(region)
        acme = view.fallback(MAIN, "acme")
        assert acme is not None and acme.share == 0.0
    assert plant.share("us-east") > 0.0  # the region's own traffic does fall back
    assert plant.state is not None
    tenant = describe(plant.state)["models"][MAIN]["tenants"]["acme"]["fallback"]
    assert tenant["state"] == "no_fallback_room"

    # With small replicas in ap-southeast, the tenant's share is decided there.
    policy = two_models(EVEN, {"us-east": 4, "eu-west": 4, "ap-southeast": 4}, tenants=tenants)
    plant = TwoModels(policy, {"us-east": 1.0, "eu-west": 1.0, "ap-southeast": 3.0})
    plant.run(30)
    assert plant.views is not None
    shares = {r: plant.views.for_region(r).fallback(MAIN, "acme") for r in REGIONS}
    assert all(s is not None and s.share > 0.0 for s in shares.values())
    assert len({s.share for s in shares.values() if s is not None}) == 1  # one decision
    assert plant.share("us-east") == 0.0  # us-east's own traffic is fine


def test_the_neutral_view_falls_back_only_when_every_region_is_saturated() -> None:
    policy = two_models(EVEN, {"us-east": 4, "eu-west": 4, "ap-southeast": 4})
    plant = TwoModels(policy, {"us-east": 3.0, "eu-west": 3.0, "ap-southeast": 0.5})
    history = plant.run(25)
    assert all(h[None] == 0.0 for h in history)
    plant.demand["ap-southeast"] = 3.0
    history = plant.run(25)
    assert history[-1][None] > 0.0


def test_a_model_without_fallback_has_no_fallback_views() -> None:
    policy = two_models(EVEN, EVEN)
    views, state = compute(policy, {}, None, T0)
    assert [f.model for f in views.for_region("us-east").fallbacks] == [MAIN]
    assert state.models[SMALL].fallback is None
    assert views.for_region("us-east").fallback(SMALL) is None
    static = views.for_region(None).fallback(MAIN)
    assert static is not None and static.share == 0.0
