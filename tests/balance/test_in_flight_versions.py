"""The law's in-flight cap says what it was sized from (`ClusterView.in_flight`): the region's
gateways and its own live slots by version, as `refusal.admits` added them up, so the
clusters derived from its view split it (`planning.caps`) rather than each holding it."""

from __future__ import annotations

import dataclasses

from heliostat.balance import GatewayLoad, InFlight, OriginLoad, TrafficClass, compute
from heliostat.planning.plan import plan
from heliostat.policy import parse_policy
from tests.balance.helpers import INTERVAL, MODEL, T0, Signals, signal

# ap-southeast is beyond the 150 ms budget of every other region: nowhere to lend its excess.
POLICY = f"""\
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
      slo: {{network_budget_ms: 150}}
      versions: {{v1: 50, v2: 50}}
      endpoints:
        - {{address: '10.0.0.1:8000', region: ap-southeast, version: v1, slots: 8}}
        - {{address: '10.0.0.2:8000', region: ap-southeast, version: v1, slots: 8}}
        - {{address: '10.0.0.3:8000', region: ap-southeast, version: v2, slots: 2}}
        - {{address: '10.1.0.1:8000', region: eu-west, version: v1, slots: 8}}
"""


def serving(now: float, tick: int) -> Signals:
    """Every replica busy, completing 3 requests/s per 8 slots."""
    result: Signals = {}
    for address, slots in (
        ("10.0.0.1:8000", 8),
        ("10.0.0.2:8000", 8),
        ("10.0.0.3:8000", 2),
        ("10.1.0.1:8000", 8),
    ):
        base = signal(address, waiting=4.0, kv=0.5, running=float(slots), max_num_seqs=8, at=now)
        result[(MODEL, address)] = dataclasses.replace(
            base, served_total=3.0 * slots / 8 * tick * INTERVAL
        )
    return result


def test_a_capped_view_carries_its_slots_by_version_and_its_versions_split_the_cap() -> None:
    policy = parse_policy(POLICY, "t.yaml")
    state = None
    for tick in range(12):
        now = T0 + tick * INTERVAL
        reports = GatewayLoad(
            {(MODEL, "ap-southeast"): OriginLoad(interactive=40.0, at=now, gateways=2)},
            stale_after=5.0,
        )
        views, state = compute(policy, serving(now, tick), state, now, gateways=reports)
    view = views.for_region("ap-southeast")
    interactive = view.cluster(MODEL)
    assert interactive is not None
    cap = interactive.max_requests
    assert cap is not None, state.models[MODEL].refusals["ap-southeast"]
    assert interactive.in_flight == InFlight(2, (("v1", 16), ("v2", 2)))
    traffic = plan(policy, view)
    (model_plan,) = traffic.models
    target = model_plan.targets[None, TrafficClass.INTERACTIVE]
    caps = {n: traffic.clusters[n][0].max_requests for n, _ in target.clusters}
    v1, v2 = caps[f"{MODEL}@v1"], caps[f"{MODEL}@v2"]
    assert v1 is not None and v2 is not None
    assert v1 + v2 == cap  # the region's per-gateway cap, split
    assert v1 > v2 >= 1  # 8 slots per gateway against 1, each half of the backlog
    assert view.cluster(f"{MODEL}.batch").max_requests is None  # type: ignore[union-attr]
