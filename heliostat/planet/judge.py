"""The issue's questions, answered from the records: recovery from a region's loss, what
the planet could hold, and each target met or not, with the numbers.

Region lost at peak, for one policy:

- `recovery_ticks`: control ticks from the loss until the users of the lost region are
  served again: the first tick after which, for the rest of the observation window (10
  minutes, or until the region is back), no step sends work to a dead replica and no step
  fails or refuses more than 1% of those users' requests beyond what the planet cannot
  hold;
- `beyond_budget_share`: share of requests served across more RTT than the budget, during
  the loss;
- `max_rescuer_utilisation`: the highest arrival rate over capacity of any live region
  during the loss (after the first two ticks); 1.0 is a region at its replicas' capacity;
- `unholdable_share` against `refused_or_failed_share`: the share of demand the planet could
  not have served (a max-flow of every region's users over the live regions within their
  network budget, each at its capacity), and the share that was refused or failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from heliostat.planet.record import Record, StepSample
from heliostat.planet.scenario import RegionLoss, Scenario

RECOVERY_FAILED_SHARE = 0.01


def max_flow(
    demand: Mapping[str, float], capacity: Mapping[str, float], reach: Mapping[str, Sequence[str]]
) -> float:
    """How much of `demand` (per origin) the regions' `capacity` can serve when origin o may
    use the regions `reach[o]` (a bipartite max-flow, augmenting paths)."""
    origins = [o for o in demand if demand[o] > 0]
    flow: dict[tuple[str, str], float] = {}
    left = dict(demand)
    room = dict(capacity)
    for _ in range(10_000):
        path = _augmenting(origins, left, room, reach, flow)
        if path is None:
            break
        amount, edges, origin, sink = path
        left[origin] -= amount
        room[sink] -= amount
        for (o, r), sign in edges:
            flow[(o, r)] = flow.get((o, r), 0.0) + sign * amount
    return sum(demand.values()) - sum(max(0.0, v) for v in left.values())


def _augmenting(
    origins: Sequence[str],
    left: Mapping[str, float],
    room: Mapping[str, float],
    reach: Mapping[str, Sequence[str]],
    flow: Mapping[tuple[str, str], float],
) -> tuple[float, list[tuple[tuple[str, str], int]], str, str] | None:
    """A breadth-first augmenting path: origin -> region (-> origin -> region)*."""
    for start in origins:
        if left[start] <= 1e-9:
            continue
        frontier: list[tuple[str, float, list[tuple[tuple[str, str], int]]]] = [
            (start, left[start], [])
        ]
        seen = {start}
        while frontier:
            node, amount, edges = frontier.pop(0)
            for region in reach.get(node, ()):
                if region not in room:
                    continue
                if room[region] > 1e-9:
                    return min(amount, room[region]), [*edges, ((node, region), 1)], start, region
                for other in origins:
                    used = flow.get((other, region), 0.0)
                    if other in seen or used <= 1e-9:
                        continue
                    seen.add(other)
                    frontier.append(
                        (
                            other,
                            min(amount, used),
                            [*edges, ((node, region), 1), ((other, region), -1)],
                        )
                    )
    return None


def loss_events(scenario: Scenario) -> list[RegionLoss]:
    return [e for e in scenario.events if isinstance(e, RegionLoss)]


def event_key(event: RegionLoss) -> str:
    return f"region_loss:{event.region}@{event.at:g}"


def region_loss(
    scenario: Scenario,
    record: Record,
    event: RegionLoss,
    unholdable_share: float,
) -> dict[str, Any]:
    """The loss seen by one policy (see the module docstring)."""
    key = event_key(event)
    own: list[StepSample] = record.events.get(key, [])
    everyone: list[StepSample] = record.events.get(key + ":all", [])
    end = event.until if event.until is not None else scenario.duration
    window_end = min(end, event.at + 600.0)
    during = [s for s in own if event.at <= s.t < window_end]
    during_all = [s for s in everyone if event.at <= s.t < window_end]
    ticks = [t for t in record.ticks if t >= event.at]
    recovery = None
    for index, tick in enumerate(ticks):
        after = [s for s in during if s.t >= tick]
        if not after:
            break
        allowance = unholdable_share + RECOVERY_FAILED_SHARE
        if all(
            s.to_dead <= 1e-6 and (s.failed + s.refused) <= allowance * max(s.offered, 1e-12)
            for s in after
        ):
            recovery = index + 1
            break
    offered = sum(s.offered for s in during_all)
    lost = sum(s.failed + s.refused for s in during_all)
    utilisation = record.notes.get(key + ":utilisation", [])
    settled = ticks[1] if len(ticks) > 1 else event.at
    rescuers = [
        value
        for t, util in utilisation
        if settled <= t < window_end
        for region, value in util.items()
        if region != event.region
    ]
    own_offered = sum(s.offered for s in during)
    return {
        "region": event.region,
        "at_s": event.at,
        "recovery_ticks": recovery,
        "users_failed_or_refused_share": round(
            sum(s.failed + s.refused for s in during) / own_offered, 6
        )
        if own_offered
        else None,
        "users_slo_attainment": round(sum(s.met for s in during) / own_offered, 6)
        if own_offered
        else None,
        "refused_or_failed_share": round(lost / offered, 6) if offered else None,
        "unholdable_share": round(unholdable_share, 6),
        "beyond_budget_share": round(
            sum(s.beyond_budget for s in during_all) / max(1e-12, offered), 6
        ),
        "max_rescuer_utilisation": round(max(rescuers), 4) if rescuers else None,
    }


def unholdable(
    scenario: Scenario,
    rates: Mapping[str, float],
    capacity_per_region: Mapping[str, float],
    lost: str,
) -> float:
    """Share of demand the planet cannot hold with `lost` gone (max-flow within budgets)."""
    budget = scenario.slo.network_budget_ms
    live = {r: c for r, c in capacity_per_region.items() if r != lost and c > 0}
    reach = {o: [r for r in live if scenario.rtt_ms(o, r) <= budget] for o in rates}
    total = sum(rates.values())
    if total <= 0:
        return 0.0
    return max(0.0, total - max_flow(rates, live, reach)) / total


def targets(results: Mapping[str, Any], scenario: Scenario) -> list[dict[str, Any]]:
    """The issue's targets on this run, each with `met` and the numbers behind it."""
    policies = results["policies"]
    out: list[dict[str, Any]] = []
    helio = policies.get("heliostat")
    if helio is None:
        return out
    baselines = {
        k: v for k, v in policies.items() if k in ("nearest_region", "least_request", "picker")
    }
    best = max((v["slo_attainment"] for v in baselines.values()), default=None)
    out.append(
        {
            "target": "SLO attainment of heliostat >= every baseline's",
            "met": best is None or helio["slo_attainment"] >= best,
            "detail": {k: v["slo_attainment"] for k, v in policies.items()},
        }
    )
    admitted = helio.get("admitted_within_slo")
    out.append(
        {
            "target": ">= 99.9% of admitted requests within the end-to-end SLO over the run",
            "met": admitted is not None and admitted >= 0.999,
            "detail": {"admitted_within_slo": admitted, "slo_ms": scenario.slo.end_to_end_ms},
        }
    )
    nearest = policies.get("nearest_region")
    if nearest is not None:
        out.append(
            {
                "target": "GPU utilisation higher than nearest_region at equal or better SLO "
                "attainment",
                "met": helio["gpu_utilisation"] > nearest["gpu_utilisation"]
                and helio["slo_attainment"] >= nearest["slo_attainment"],
                "detail": {
                    "heliostat": [helio["gpu_utilisation"], helio["slo_attainment"]],
                    "nearest_region": [nearest["gpu_utilisation"], nearest["slo_attainment"]],
                },
            }
        )
    loss = results.get("region_loss", {}).get("heliostat")
    if loss:
        out.append(
            {
                "target": "region lost at peak: traffic re-placed within two control ticks",
                "met": loss["recovery_ticks"] is not None and loss["recovery_ticks"] <= 2,
                "detail": {"recovery_ticks": loss["recovery_ticks"]},
            }
        )
        out.append(
            {
                "target": "region lost at peak: no region beyond the network budget used",
                "met": loss["beyond_budget_share"] == 0,
                "detail": {"beyond_budget_share": loss["beyond_budget_share"]},
            }
        )
        util = loss["max_rescuer_utilisation"]
        out.append(
            {
                "target": "region lost at peak: no rescuer pushed past its ceiling "
                "(arrivals <= capacity)",
                "met": util is not None and util <= 1.0,
                "detail": {"max_rescuer_utilisation": util},
            }
        )
        out.append(
            {
                "target": "region lost at peak: refusals only for what the planet cannot hold",
                "met": loss["refused_or_failed_share"] is not None
                and loss["refused_or_failed_share"]
                <= loss["unholdable_share"] + RECOVERY_FAILED_SHARE,
                "detail": {
                    "refused_or_failed_share": loss["refused_or_failed_share"],
                    "unholdable_share": loss["unholdable_share"],
                },
            }
        )
    scaled = policies.get("heliostat+scaling")
    peak = policies.get("peak_sized_fleet")
    if scaled is not None and peak is not None:
        out.append(
            {
                "target": "scaling loop: fewer GPU-hours than a fixed fleet sized for each "
                "region's own peak, for the same SLO",
                "met": scaled["gpu_hours"] < peak["gpu_hours"]
                and scaled["slo_attainment"] >= peak["slo_attainment"],
                "detail": {
                    "heliostat+scaling": [scaled["gpu_hours"], scaled["slo_attainment"]],
                    "peak_sized_fleet": [peak["gpu_hours"], peak["slo_attainment"]],
                },
            }
        )
    return out
