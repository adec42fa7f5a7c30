"""Hash or least-request: the control law's choice for a model with affinity, from the
engines' prefix-cache hit rates, with its hysteresis (`heliostat.balance.affinity`)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable

import pytest

from heliostat.balance import ControlState, compute, weights
from heliostat.balance import affinity as choice
from heliostat.balance.view import LbPolicy
from heliostat.policy import Policy, parse_policy
from heliostat.policy.traffic import Affinity
from heliostat.signals import Signal
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import build_snapshot
from tests.balance.helpers import MODEL, T0, Signals, addresses, cluster, signal

TICK = 0.5


def policy_with(affinity: str, engine: str = "vllm") -> Policy:
    return parse_policy(
        f"""\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {{name: t}}
spec:
  regions: {{us-east: {{rtt_ms: {{eu-west: 80}}}}, eu-west: {{}}}}
  models:
    - name: {MODEL}
      engine: {engine}
      affinity: {affinity}
      endpoints:
        - {{address: '10.0.0.1:8000', region: us-east, slots: 4}}
        - {{address: '10.0.0.2:8000', region: us-east, slots: 4}}
        - {{address: '10.0.0.3:8000', region: eu-west, slots: 4}}
""",
        "t.yaml",
    )


AUTO = policy_with("{prefix_chars: 1000}")


class Run:
    """Ticks the law every TICK seconds; `hit_rate(t)` is what every engine reports."""

    def __init__(self, policy: Policy = AUTO) -> None:
        self.policy = policy
        self.state: ControlState | None = None
        self.now = T0
        self.lb: list[tuple[float, LbPolicy]] = []

    def signals(self, rate: float | None, now: float, stale: bool = False) -> Signals:
        result: Signals = {}
        for address in addresses(self.policy):
            s = signal(address, waiting=0.0, running=2.0, kv=0.2, at=now - (60 if stale else 0))
            result[(MODEL, address)] = dataclasses.replace(s, prefix_hit_rate=rate)
        return result

    def play(self, seconds: float, hit_rate: Callable[[float], float | None]) -> LbPolicy:
        for _ in range(round(seconds / TICK)):
            self.now += TICK
            views, self.state = compute(
                self.policy, self.signals(hit_rate(self.now), self.now), self.state, self.now
            )
            balancing = cluster(views, "us-east").balancing
            assert balancing is not None
            self.lb.append((self.now, balancing.policy))
        return self.lb[-1][1]

    def switches(self) -> list[float]:
        return [t for (_, a), (t, b) in itertools.pairwise(self.lb) if a != b]

    @property
    def reason(self) -> dict[str, object]:
        assert self.state is not None
        views, _ = compute(self.policy, {}, self.state, self.now)
        balancing = cluster(views, "us-east").balancing
        assert balancing is not None
        return dict(balancing.reason)


def test_hashing_is_on_trial_until_the_first_evidence() -> None:
    """The operator asked for prefix affinity: hash from the start, and say it is a trial."""
    run = Run()
    assert run.play(120, lambda t: None) is LbPolicy.RING_HASH
    assert run.switches() == []
    assert str(run.reason["why"]).startswith("prefix affinity configured")
    assert run.state is not None
    decided = run.state.models[MODEL].affinity
    assert decided is not None and decided.trial


def test_no_shared_prefixes_end_the_trial_at_once_and_keep_least_request() -> None:
    run = Run()
    assert run.play(600, lambda t: 0.01) is LbPolicy.LEAST_REQUEST
    (left,) = run.switches()
    assert left - T0 <= choice.CONFIRM_S + 2 * TICK  # no dwell, no waiting for a baseline
    assert str(run.reason["why"]).startswith("prompts share no prefixes")


def test_a_trial_confirmed_by_hits_keeps_hashing_with_the_operators_bound() -> None:
    """Caches start cold: the hit rate climbs from 0 as each group's second request arrives.
    The trial hashes with the tightest bound; once hits show sharing, the operator's bound
    applies (the cluster changes, its policy does not)."""
    run = Run()
    run.play(TICK, lambda t: None)
    assert run.reason["bounded_load"] == choice.TRIAL_BOUNDED_LOAD
    assert run.play(20, lambda t: min(0.6, 0.2 * (t - T0))) is LbPolicy.RING_HASH
    assert run.switches() == []
    assert run.state is not None
    decided = run.state.models[MODEL].affinity
    assert decided is not None and not decided.trial
    reason = run.reason
    assert str(reason["why"]).startswith("prompts share prefixes: the engines' prefix caches")
    assert reason["bounded_load"] == Affinity().bounded_load
    # Sharing stops: no longer a trial, so the slow average and CONFIRM_S judge it.
    run.play(20, lambda t: 0.0)
    assert run.lb[-1][1] is LbPolicy.LEAST_REQUEST
    assert run.reason["why"] == "prompts no longer share prefixes"


def test_shared_prefixes_switch_to_hashing_once_the_evidence_lasts() -> None:
    run = Run()
    run.play(30, lambda t: 0.0)  # the trial ends: least-request
    began = run.now
    assert run.play(choice.CONFIRM_S, lambda t: 0.3) is LbPolicy.LEAST_REQUEST  # not yet
    assert run.play(10, lambda t: 0.3) is LbPolicy.RING_HASH
    _, switched = run.switches()  # the trial's end waived the dwell
    # The quick average crosses ENTER_HIT_RATE (half of 0.3) after tau x ln 2, then the
    # evidence must hold for CONFIRM_S.
    assert switched - began <= choice.ENTER_TAU_S * math.log(2) + choice.CONFIRM_S + TICK
    reason = run.reason
    assert reason["lb"] == "ring_hash" and reason["bounded_load"] == Affinity().bounded_load
    assert str(reason["why"]).startswith("prompts share prefixes")
    assert 0.15 <= float(str(reason["hit_rate"])) <= 0.3


def test_back_to_least_request_when_sharing_stops_but_not_within_the_dwell() -> None:
    run = Run()
    run.play(10, lambda t: 0.0)  # the trial ends
    run.play(20, lambda t: 0.3)
    _, entered = run.switches()
    run.play(20, lambda t: 0.0)  # sharing stops at once: the dwell still holds the choice
    assert run.lb[-1][1] is LbPolicy.RING_HASH
    run.play(60, lambda t: 0.0)
    assert run.lb[-1][1] is LbPolicy.LEAST_REQUEST
    _, _, left = run.switches()
    assert left - entered >= choice.MIN_DWELL_S
    assert run.reason["why"] == "prompts no longer share prefixes"


def test_a_hit_rate_wandering_across_the_thresholds_switches_at_most_once_a_minute() -> None:
    """Hysteresis: the hit rate drawn afresh every tick anywhere between 0 and 0.4."""
    rng = random.Random(4)
    run = Run()
    run.play(1800, lambda t: rng.uniform(0.0, 0.4))
    switches = run.switches()
    gaps = [b - a for a, b in itertools.pairwise(switches)]
    assert all(gap >= choice.MIN_DWELL_S for gap in gaps), gaps
    assert len(switches) <= 30 // 2  # in fact the smoothed rate sits at 0.2: it hashes


def test_hashing_that_does_not_raise_the_hit_rate_is_dropped_and_retried_later() -> None:
    """One system prompt shared by every request is cached on every replica anyway:
    least-request already hits 70%, hashing gets 72% and concentrates the load."""
    run = Run()
    run.play(10, lambda t: 0.0)  # unrelated prompts first: the trial ends
    run.play(10, lambda t: 0.7)
    assert run.lb[-1][1] is LbPolicy.RING_HASH
    run.play(choice.MIN_DWELL_S + 10, lambda t: 0.72)
    assert run.lb[-1][1] is LbPolicy.LEAST_REQUEST
    reason = run.reason
    assert reason["why"] == "hashing did not raise the prefix-cache hit rate over least-request's"
    assert reason["retry_after_s"] == choice.BACKOFF_S
    # No new trial before the back-off ends, however convincing the evidence.
    run.play(choice.BACKOFF_S - 20, lambda t: 0.7)
    assert run.lb[-1][1] is LbPolicy.LEAST_REQUEST
    run.play(30, lambda t: 0.7)
    assert run.lb[-1][1] is LbPolicy.RING_HASH
    run.play(choice.MIN_DWELL_S + 10, lambda t: 0.72)
    assert run.reason["retry_after_s"] == 2 * choice.BACKOFF_S  # the next wait doubles


def test_stale_signals_are_no_evidence() -> None:
    run = Run()
    for _ in range(60):
        run.now += TICK
        _, run.state = compute(
            run.policy, run.signals(0.5, run.now, stale=True), run.state, run.now
        )
    assert run.state is not None
    decided = run.state.models[MODEL].affinity
    assert decided is not None and decided.trial and decided.evidence is None


@pytest.mark.parametrize(
    ("affinity", "engine", "why"),
    [
        ("{mode: always}", "vllm", "affinity.mode is always"),
        ("{hash: maglev}", "tgi", "tgi reports no prefix-cache hit rate: hashing as configured"),
    ],
)
def test_always_and_engines_without_a_hit_rate_hash_from_the_start(
    affinity: str, engine: str, why: str
) -> None:
    run = Run(policy_with(affinity, engine))
    assert run.play(120, lambda t: None) in (LbPolicy.RING_HASH, LbPolicy.MAGLEV)
    assert run.switches() == [] and run.reason["why"] == why


def test_while_hashing_a_replica_near_saturation_keeps_its_ring_share() -> None:
    """Weights are ring shares under hashing: a replica hotter than its peers but not
    saturated keeps the full weight (bounded load spills its excess); under least-request
    the same replica is halved."""

    def weights_after(affinity: str) -> dict[str, int]:
        policy = policy_with(affinity)
        hot, cool = addresses(policy, "us-east")
        state = None
        now = T0
        for _ in range(60):
            now += TICK
            sampled: Signals = {  # no hits: `auto` leaves its hashing trial at once
                (MODEL, a): dataclasses.replace(
                    signal(a, waiting=0.0, running=r, kv=0.2, at=now), prefix_hit_rate=0.0
                )
                for a, r in ((hot, 3.8), (cool, 1.0), (addresses(policy, "eu-west")[0], 1.0))
            }
            views, state = compute(policy, sampled, state, now)
        return {e.address: e.weight for e in cluster(views, "us-east").endpoints()}

    least = weights_after("{prefix_chars: 1000}")
    hashed = weights_after("{prefix_chars: 1000, mode: always}")
    assert sorted(least.values()) == [weights.W_MAX // 2, weights.W_MAX, weights.W_MAX]
    assert set(hashed.values()) == {weights.W_MAX}


def test_a_model_without_affinity_has_no_choice_to_make() -> None:
    policy = parse_policy(_without_affinity(), "t.yaml")
    views, state = compute(policy, {}, None, T0)
    assert cluster(views, "us-east").balancing is None
    assert state.models[MODEL].affinity is None


def _without_affinity() -> str:
    return f"""\
apiVersion: heliostat/v1
kind: InferencePolicy
metadata: {{name: t}}
spec:
  regions: {{us-east: {{}}}}
  models:
    - name: {MODEL}
      endpoints:
        - {{address: '10.0.0.1:8000', region: us-east}}
"""


def test_the_cluster_resource_changes_only_when_the_choice_does() -> None:
    """A switch is a CDS change (Envoy rebuilds the cluster): between switches the cluster's
    bytes stay the same however the evidence moves."""
    run = Run()
    versions = []
    rates = [0.0] * 20 + [0.3] * 20 + [0.5, 0.8, 0.4] * 10
    for rate in rates:
        run.now += TICK
        views, run.state = compute(run.policy, run.signals(rate, run.now), run.state, run.now)
        snapshot = build_snapshot(
            run.policy, views.for_region("us-east"), NodeGroup(Role.GATEWAY, "us-east")
        )
        versions.append(snapshot.resources(TypeUrl.CLUSTER)[MODEL].version)
    changes = sum(a != b for a, b in itertools.pairwise(versions))
    assert changes == 2  # the trial's end, then the one switch to hashing


# -- the bound, per region, while hashing (`affinity.step_bounds`) -----------------------------

ALWAYS = policy_with("{prefix_chars: 1000, mode: always}")
FIXED = policy_with("{prefix_chars: 1000, mode: always, bounded_load: 1.5}")


def _samples(policy: Policy, hit: float, miss: float, now: float) -> list[Signal]:
    """Every endpoint at `hit`, its prefill 30 ms + `miss` x the share missed, but for the
    first one at half the hits (a spread for the fit of prefill against misses)."""
    out = []
    for i, address in enumerate(addresses(policy)):
        h = hit / 2 if i == 0 else hit
        s = signal(address, at=now)
        out.append(dataclasses.replace(s, prefix_hit_rate=h, prefill_s=0.03 + miss * (1 - h)))
    return out


def _bounds(
    policy: Policy,
    seconds: float,
    hit: float,
    prefill: float,
    rate: float = 6.0,
    state: choice.AffinityState | None = None,
    start: float = T0,
) -> tuple[choice.AffinityState, list[tuple[float, bool]]]:
    """Ticks `step` then `step_bounds` for `seconds`: every region at `hit`, each miss
    costing `prefill` over a hit, a replica completing `rate` requests/s when full."""
    model = policy.spec.models[0]
    now, seen = start, []
    for _ in range(round(seconds / TICK)):
        now += TICK
        found = _samples(policy, hit, prefill, now)
        state = choice.step(model, found, state, now, TICK)
        evidence = {r: choice.BoundEvidence(hit, rate) for r in ("eu-west", "us-east")}
        state = choice.step_bounds(model, state, found, evidence, now, TICK)
        assert state is not None
        seen.append((now, choice._tight(state.bounds.get("us-east"))))
    assert state is not None
    return state, seen


def test_the_cost_of_a_miss_is_the_slope_of_prefill_against_missed_tokens() -> None:
    line = [(h, 0.04 + 0.3 * (1.0 - h)) for h in (0.95, 0.9, 0.5, 0.3)]
    assert choice.miss_cost(line) == pytest.approx(0.3)
    # Hit rates too alike to fit: the upper estimate (every second of prefill is a miss's).
    assert choice.miss_cost([(0.8, 0.1), (0.81, 0.1)]) == pytest.approx(0.1 / 0.19)  # the largest
    assert choice.miss_cost([]) is None
    spill, wait, ratio = choice.region_bound(0.3, 0.5, 5.0) or (0, 0, 0)
    assert (spill, wait) == pytest.approx((0.15, 0.2)) and ratio == pytest.approx(0.75)
    assert choice.region_bound(None, 0.5, 5.0) is None
    assert choice.region_bound(0.3, 0.5, None) is None


def test_cheap_misses_tighten_the_bound_once_the_evidence_settles_and_it_holds() -> None:
    """Overcommitted caches (a hit rate of 0.6) and short prompts (a miss costs 120 ms), a
    replica freeing a slot every 170 ms: a spill costs 72 ms, a wait 170 ms."""
    state, seen = _bounds(ALWAYS, 120, hit=0.6, prefill=0.12)
    changes = [t for (_, a), (t, b) in itertools.pairwise(seen) if a != b]
    assert len(changes) == 1 and seen[-1][1]  # tight, once
    assert changes[0] - T0 >= choice.BOUND_SETTLE_S
    lb = choice.balancing(ALWAYS.spec.models[0].affinity, state, "us-east")
    assert lb.hash_balance_factor == round(choice.TIGHT_BOUND * 100)
    assert str(lb.reason["bound_why"]).startswith("a spill")
    assert lb.reason["spill_ms"] < lb.reason["wait_ms"]
    # The neutral view (no region's evidence) keeps the operator's bound.
    neutral = choice.balancing(ALWAYS.spec.models[0].affinity, state, None)
    assert neutral.hash_balance_factor == round(Affinity().bounded_load * 100)


def test_a_cached_long_prefill_keeps_the_operators_bound() -> None:
    """Caches holding their keys (0.95) and a miss costing 300 ms: a spill costs 285 ms,
    more than the 170 ms wait for a slot."""
    state, seen = _bounds(ALWAYS, 120, hit=0.95, prefill=0.3)
    assert not any(tight for _, tight in seen)
    lb = choice.balancing(ALWAYS.spec.models[0].affinity, state, "us-east")
    assert lb.hash_balance_factor == round(Affinity().bounded_load * 100)
    bound = state.bounds["us-east"]
    assert bound.spill_s is not None and bound.wait_s is not None
    assert bound.spill_s > bound.wait_s


def test_the_bound_changes_at_most_once_a_dwell_however_the_evidence_swings() -> None:
    model_state, seen = _bounds(ALWAYS, 20, hit=0.6, prefill=0.12)
    now = seen[-1][0]
    for i in range(12):  # the costs cross the band both ways every 10 s for 2 minutes
        hit, prefill = (0.95, 0.3) if i % 2 == 0 else (0.6, 0.12)
        model_state, more = _bounds(ALWAYS, 10, hit, prefill, state=model_state, start=now)
        seen += more
        now = seen[-1][0]
    changes = [t for (_, a), (t, b) in itertools.pairwise(seen) if a != b]
    assert changes
    assert all(b - a >= choice.BOUND_DWELL_S for a, b in itertools.pairwise(changes))


def test_an_operators_bound_is_kept_whatever_the_evidence() -> None:
    state, seen = _bounds(FIXED, 120, hit=0.6, prefill=0.12)
    assert state.bounds == {} and not any(tight for _, tight in seen)
    lb = choice.balancing(FIXED.spec.models[0].affinity, state, "us-east")
    assert lb.hash_balance_factor == 150 and "bound_why" not in lb.reason


def test_a_view_lending_to_a_loose_region_keeps_the_operators_bound() -> None:
    """Its gateways place the users they lend by its bound too."""
    state, _ = _bounds(ALWAYS, 120, hit=0.6, prefill=0.12)
    loose = dataclasses.replace(state.bounds["eu-west"], tight=False)
    state = dataclasses.replace(state, bounds={**state.bounds, "eu-west": loose})
    affinity = ALWAYS.spec.models[0].affinity
    assert affinity is not None
    assert choice.balancing(affinity, state, "us-east").hash_balance_factor == 100
    lending = choice.balancing(affinity, state, "us-east", ["eu-west"])
    assert lending.hash_balance_factor == 150
    assert "eu-west" in str(lending.reason["bound_why"])


def test_after_a_trial_the_operators_bound_holds_until_the_costs_are_measured() -> None:
    """A trial confirmed by hits hashes with the operator's bound; a region tightens only
    once a spill and a wait are both measured, and keeps the operator's bound (saying why)
    while they are not."""
    state, seen = _bounds(AUTO, 60, hit=0.6, prefill=0.12)
    assert not state.trial and seen[-1][1]  # measured: tight
    model = AUTO.spec.models[0]
    affinity = model.affinity
    assert affinity is not None
    unmeasured: choice.AffinityState | None = None
    now = T0
    for _ in range(round(60 / TICK)):
        now += TICK
        found = [
            dataclasses.replace(signal(a, at=now), prefix_hit_rate=0.6) for a in addresses(AUTO)
        ]
        unmeasured = choice.step(model, found, unmeasured, now, TICK)
        evidence = {"us-east": choice.BoundEvidence(0.6, None)}  # no capacity: no wait
        unmeasured = choice.step_bounds(model, unmeasured, found, evidence, now, TICK)
        assert unmeasured is not None
        assert not choice._tight(unmeasured.bounds.get("us-east"))
    assert unmeasured is not None and not unmeasured.trial
    lb = choice.balancing(affinity, unmeasured, "us-east")
    assert lb.hash_balance_factor == round(Affinity().bounded_load * 100)
    assert str(lb.reason["bound_why"]).startswith("the operator's bound until")
