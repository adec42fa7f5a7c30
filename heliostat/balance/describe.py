"""The control law's decisions as JSON, for /debug/state.

Views say what Envoy was told; this says why, per model and region: capacity, load, the
own-demand pressure that drives overflow, what a region sends and receives, the batch
shedding of every view, for a model with affinity whether it hashes now and on what
evidence and, for a model with a fallback, the share each view and tenant
sends to it with the decision behind it. Unlike views these numbers change every tick: they
are for people.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from heliostat.balance.affinity import AffinityState
from heliostat.balance.state import (
    ControlState,
    FallbackState,
    FallbackStates,
    ModelState,
    ShedState,
)
from heliostat.balance.weights import CAPACITY_TIERS


def describe(state: ControlState) -> dict[str, Any]:
    """JSON-able decisions of the last tick (sorted keys, rounded numbers)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    observed: dict[tuple[str, str], dict[str, Any]] = {}
    for (model, address), endpoint in state.endpoints.items():
        counts.setdefault((model, endpoint.view.region), Counter())[endpoint.state] += 1
        if endpoint.completions or endpoint.tier:
            service = endpoint.service
            observed.setdefault((model, endpoint.view.region), {})[address] = {
                "requests_per_s_when_busy": None if service is None else round(service, 3),
                "completions": round(endpoint.completions, 1),
                "busy_seconds": round(endpoint.busy_time, 1),
                "capacity": round(CAPACITY_TIERS[endpoint.tier], 3),
            }
    return {
        "now": state.now,
        "models": {
            name: _model(name, model, counts, observed)
            for name, model in sorted(state.models.items())
        },
    }


def _model(
    name: str,
    model: ModelState,
    counts: dict[tuple[str, str], Counter[str]],
    observed: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    received: dict[str, dict[str, float]] = {}
    for sender, region in sorted(model.regions.items()):
        for rescuer, share in sorted(region.shares.items()):
            received.setdefault(rescuer, {})[sender] = share
    regions: dict[str, Any] = {}
    for r, region in sorted(model.regions.items()):
        pressure = region.pressure
        regions[r] = {
            "endpoints": dict(sorted(counts.get((name, r), Counter()).items())),
            "capacity": region.capacity,
            "load": round(region.load, 3),
            "demand": round(region.demand, 3),
            "pressure": None if pressure is None else round(pressure, 3),
            "overflowing": region.overflowing,
            "sends": dict(sorted(region.shares.items())),
            "lending": {
                q: {
                    "target": round(share.goal, 3),
                    "smoothed": round(share.smoothed, 3),
                    "published": share.published,
                }
                for q, share in sorted(region.lending.items())
            },
            "receives": received.get(r, {}),
            "shed": _shed(model.shed[r]) if r in model.shed else None,
        }
        if (name, r) in observed:  # observed capacity, from the engines' success counters
            regions[r]["capacity_observed"] = dict(sorted(observed[name, r].items()))
    for r, shed in sorted(model.shed.items()):  # regions of the policy without endpoints
        regions.setdefault(r, {"shed": _shed(shed)})
    neutral: dict[str, Any] = {"shed": _shed(model.neutral_shed)}
    result: dict[str, Any] = {"regions": regions, "neutral": neutral}
    if model.affinity is not None:
        result["affinity"] = _affinity(model.affinity)
    if model.fallback is not None:
        _add_fallback(result, model.fallback)
    return result


def _add_fallback(result: dict[str, Any], states: FallbackStates) -> None:
    for r, state in sorted(states.regions.items()):
        result["regions"].setdefault(r, {})["fallback"] = _fallback(states.model, state)
    result["neutral"]["fallback"] = _fallback(states.model, states.neutral)
    result["tenants"] = {
        t: {"fallback": _fallback(states.model, state)}
        for t, state in sorted(states.tenants.items())
    }


def _fallback(model: str, state: FallbackState) -> dict[str, Any]:
    """This tick's decision; `published` is what Envoy has, `reason` why it was published."""
    return {
        "model": model,
        "published": state.share.published,
        "state": state.state,
        "target": round(state.target, 3),
        "smoothed": round(state.share.smoothed, 3),
        "pressure": None if state.pressure is None else round(state.pressure, 3),
        "demand": round(state.demand, 3),
        "fallback_room": None if state.room is None else round(state.room, 3),
        "engaged": state.engaged,
        "reason": dict(state.reason),
    }


def _affinity(state: AffinityState) -> dict[str, Any]:
    """Hash or least-request: the choice, why, and the evidence as it stands this tick."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "hashing": state.hashing,
        "mode": state.mode.value,
        "why": dict(state.why),
        "since": state.since,
        "hit_rate": rounded(state.sample),
        "hit_rate_smoothed": rounded(state.evidence),
        "switch_pending_since": state.pending_since,
        "least_request_hit_rate": rounded(state.baseline),
        "no_trial_before": state.retry_at or None,
    }


def _shed(shed: ShedState) -> dict[str, Any]:
    return {
        "batch_drop_percent": shed.percent,
        "active": shed.active,
        "level": round(shed.level, 2),
        "group": list(shed.group),
    }
