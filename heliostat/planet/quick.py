"""A fast version of a scenario: the same planet, smaller and shorter.

Every region's replicas, users and gateways are divided by `divisor` (a region with
replicas keeps at least one, and its users shrink as its replicas did, rounding included), so
each region's utilisation and the events stay what they were; the run is cut to a `window`
around what matters (the first event, or the planet's busiest moment). What this loses: the
exact demand of small regions, and whatever happened outside the window. `heliostat simulate
--quick` and the scenario tests play these.
"""

from __future__ import annotations

import math
from typing import Any

from heliostat.planet.demand import HOUR_S, DemandModel
from heliostat.planet.scenario import Canary, FlashCrowd, RegionLoss, Scenario


def quick(scenario: Scenario, divisor: int = 5, window: float = 3600.0) -> Scenario:
    start = _window_start(scenario, window)
    duration = min(window, scenario.duration - start)
    document: dict[str, Any] = scenario.model_dump(mode="python")
    document["duration"] = duration
    document["start_hour"] = ((scenario.start_hour * HOUR_S + start) % (24 * HOUR_S)) / HOUR_S
    document["gateways"] = max(1, math.ceil(scenario.gateways / divisor))
    shrink: dict[str, float] = {}
    for name, region in document["regions"].items():
        replicas = scenario.regions[name].replicas
        region["replicas"] = max(1, round(replicas / divisor)) if replicas else 0
        # A region's own users shrink with its replicas (rounding included), so it stays
        # as busy as it was; edge regions' users by the divisor.
        shrink[name] = region["replicas"] / replicas if replicas else 1.0 / divisor
        if region["gateways"] is not None:
            region["gateways"] = max(1, math.ceil(region["gateways"] / divisor))
    for origin, demand in document["demand"].items():
        factor = shrink[origin]
        if demand["curve"] is not None:
            demand["curve"] = tuple(v * factor for v in demand["curve"])
        if demand["peak_rps"] is not None:
            demand["peak_rps"] = demand["peak_rps"] * factor
    document["events"] = _events_within(scenario, document["events"], start, duration)
    _shrink_scaling(document["scaling"], scenario.model.gpus_per_replica, divisor)
    return Scenario.model_validate(document)


def _events_within(
    scenario: Scenario, documents: list[dict[str, Any]], start: float, duration: float
) -> list[dict[str, Any]]:
    """The scenario's events inside the window, their times moved to its start."""
    events = []
    for event, data in zip(scenario.events, documents, strict=True):
        end = getattr(event, "until", None)
        if event.at < start or event.at >= start + duration:
            continue
        data["at"] = event.at - start
        if isinstance(event, RegionLoss | Canary) and end is not None:
            data["until"] = min(end, start + duration) - start
            if data["until"] <= data["at"]:
                data["until"] = None
        events.append(data)
    return events


def _shrink_scaling(scaling: dict[str, Any], gpus: int, divisor: int) -> None:
    """The scaling loop's pool, steps and limits, divided as the fleet is (in place)."""
    if scaling["pool_gpus"] is not None:
        scaling["pool_gpus"] = max(gpus, scaling["pool_gpus"] // divisor)
    scaling["max_step"] = max(1, math.ceil(scaling["max_step"] / divisor))
    for limits in scaling["limits"].values():
        limits["min"] = math.ceil(limits["min"] / divisor)
        if limits["max"] is not None:
            limits["max"] = max(1, math.ceil(limits["max"] / divisor))


def _window_start(scenario: Scenario, window: float) -> float:
    """Seconds into the scenario where the window starts: a quarter before the first event,
    else centred on the planet's busiest moment."""
    if window >= scenario.duration:
        return 0.0
    timed = [e.at for e in scenario.events if isinstance(e, RegionLoss | FlashCrowd | Canary)]
    if timed:
        centre = min(timed) + window / 4
    else:
        demand = DemandModel(scenario)
        step = 300.0
        samples = int(scenario.duration // step)
        centre = max(
            (i * step for i in range(samples)),
            key=lambda t: sum(demand.rate(o, t) for o in demand.origins),
        )
    return min(max(0.0, centre - window / 2), scenario.duration - window)
