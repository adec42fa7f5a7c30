"""The control law's decisions as JSON, for /debug/state.

Views say what Envoy was told; this says why, per model and region: capacity, load, its
users' demand and where it was measured, the allocation (where its users are planned, what
is unplaced), what it sends and receives and why, what every view refuses, for a model with
affinity whether it hashes now and on what evidence and, for a model with a fallback, the
share each view and tenant sends to it with the decision behind it.
Unlike views these numbers change every tick: they
are for people.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from heliostat.balance import capacity
from heliostat.balance.affinity import AffinityState
from heliostat.balance.state import (
    ControlState,
    FallbackState,
    FallbackStates,
    ModelState,
    RefusalState,
)
from heliostat.balance.weights import CAPACITY_TIERS


def describe(state: ControlState) -> dict[str, Any]:
    """JSON-able decisions of the last tick (sorted keys, rounded numbers)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    observed: dict[tuple[str, str], dict[str, Any]] = {}
    for (model, address), endpoint in state.endpoints.items():
        region = endpoint.view.region
        counts.setdefault((model, region), Counter())[endpoint.state] += 1
        owner = state.models.get(model)
        service = owner.service.get(address) if owner is not None else None
        if service is not None and service.completions:
            rate = capacity.known(service)
            observed.setdefault((model, region), {})[address] = {
                "requests_per_s_when_busy": None if rate is None else round(rate, 3),
                "completions": round(service.completions, 1),
                "busy_seconds": round(service.busy_time, 1),
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
            "unit": "requests/s" if region.rates else "endpoints at thresholds",
            "capacity": round(region.capacity, 3),
            "observed_capacity": round(region.raw_capacity, 3),
            "load": round(region.load, 3),
            "backlog": round(region.backlog, 3),
            "demand": round(region.demand, 3),
            "demand_measured": round(region.measured, 3),
            "demand_source": region.source,
            "gateways": region.gateways,
            "pressure": None if pressure is None else round(pressure, 3),
            "overflowing": region.overflowing,
            "allocation": {q: round(v, 3) for q, v in sorted(region.plan.items())},
            "unplaced": round(region.unplaced, 3),
            "sends": dict(sorted(region.shares.items())),
            "lending": {
                q: {
                    "target": share.target,
                    "published": share.published,
                    "reason": share.reason,
                }
                for q, share in sorted(region.lending.items())
            },
            "receives": received.get(r, {}),
        }
        if region.prefill is not None or region.hit_rate is not None:
            regions[r]["prefill_ms"] = (
                None if region.prefill is None else round(1000.0 * region.prefill, 1)
            )
            regions[r]["prefix_hit_rate"] = (
                None if region.hit_rate is None else round(region.hit_rate, 3)
            )
        if (name, r) in observed:  # observed capacity, from the engines' success counters
            regions[r]["capacity_observed"] = dict(sorted(observed[name, r].items()))
    for r, refused in sorted(model.refusals.items()):
        regions.setdefault(r, {})["refusal"] = _refusal(refused)
    neutral: dict[str, Any] = {"refusal": _refusal(model.neutral_refusal)}
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
        "on_trial": state.trial,
        "mode": state.mode.value,
        "why": dict(state.why),
        "since": state.since,
        "hit_rate": rounded(state.sample),
        "hit_rate_smoothed": rounded(state.evidence),
        "switch_pending_since": state.pending_since,
        "least_request_hit_rate": rounded(state.baseline),
        "no_trial_before": state.retry_at or None,
        # while hashing: each region's bound, why, and the costs it weighs (`affinity.step_bounds`)
        "miss_prefill_s": rounded(state.miss_s),
        "bounds": {
            r: {
                "tight": b.tight,
                "why": dict(b.why),
                "since": b.since,
                "spill_s": rounded(b.spill_s),
                "wait_s": rounded(b.wait_s),
                "ratio_smoothed": rounded(b.ratio),
                "change_pending_since": b.pending_since,
            }
            for r, b in sorted(state.bounds.items())
        },
    }


def _refusal(refused: RefusalState) -> dict[str, Any]:
    return {
        "active": refused.active,
        "interactive": refused.interactive.published,
        "batch": refused.batch.published,
        "interactive_target": refused.interactive.target,
        "batch_target": refused.batch.target,
        "excess": round(refused.excess, 3),
        "demand": round(refused.demand, 3),
        "detail": refused.detail,
        # each gateway's cap on interactive requests in flight (Envoy's max_requests), None
        # when not capped
        "in_flight": refused.in_flight,
    }
