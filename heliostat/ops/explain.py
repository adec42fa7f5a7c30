"""`heliostat explain`: why a model's endpoints have the weights they have, from one place.

It joins three parts of the running server's state that are kept apart there: what the
scrapers last read from each endpoint (`signals`), what the control law made of it in a
region's view (weight, priority, health, and the full reason, of which EDS carries only a
short code), and the
region's allocation (demand, capacity, what it lends and borrows, what it refuses and why).
Built here from `/debug/state`, so it shows exactly what the server shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heliostat.ops import table


class ExplainError(ValueError):
    """The model, region or endpoint asked about is not in the running policy."""


def explain(
    state: Mapping[str, Any], model: str, region: str | None = None, endpoint: str | None = None
) -> dict[str, Any]:
    views = state["views"]["regions"]
    models = state["policy"]["models"]
    if model not in models:
        raise ExplainError(f"unknown model {model!r} (models: {', '.join(models)})")
    if region is not None and region not in views:
        raise ExplainError(f"unknown region {region!r} (regions: {', '.join(sorted(views))})")
    signals = {s["address"]: s for s in state["signals"]["models"].get(model, [])}
    endpoints = []
    for view_region, clusters in sorted(views.items()):
        if region is not None and view_region != region:
            continue
        cluster = clusters.get(model) or {}
        for entry in cluster.get("endpoints", []):
            # Without --region each endpoint is shown in its own region's view.
            if region is None and entry["region"] != view_region:
                continue
            if endpoint is not None and entry["address"] != endpoint:
                continue
            endpoints.append(_endpoint(view_region, entry, signals.get(entry["address"])))
    if endpoint is not None and not endpoints:
        raise ExplainError(f"model {model!r} has no endpoint {endpoint!r}")
    decisions = state["control"]["decisions"].get("models", {}).get(model, {})
    allocation = {
        r: _allocation(d)
        for r, d in sorted(decisions.get("regions", {}).items())
        if region is None or r == region
    }
    localities = {
        r: {
            "drop_overload_percent": clusters.get(model, {}).get("drop_overload_percent"),
            "drop_reason": clusters.get(model, {}).get("drop_reason"),
            "localities": clusters.get(model, {}).get("localities", []),
        }
        for r, clusters in sorted(views.items())
        if region is None or r == region
    }
    return {
        "model": model,
        "region": region,
        "endpoints": endpoints,
        "allocation": allocation,
        "views": localities,
    }


def _endpoint(
    view: str, entry: Mapping[str, Any], signal: Mapping[str, Any] | None
) -> dict[str, Any]:
    reason = dict(entry.get("reason") or {})
    return {
        "view": view,
        "address": entry["address"],
        "region": entry["region"],
        "version": entry.get("version"),
        "waiting": None if signal is None else signal.get("waiting"),
        "running": None if signal is None else signal.get("running"),
        "kv_usage": None if signal is None else signal.get("kv_usage"),
        "age_s": None if signal is None else signal.get("age_s"),
        "stale": None if signal is None else signal.get("stale"),
        "scrape_error": None if signal is None else signal.get("error"),
        "saturation": reason.get("saturation"),
        "weight": entry["weight"],
        "priority": entry["priority"],
        "health": entry["health"],
        "reason": reason,
    }


def _allocation(decision: Mapping[str, Any]) -> dict[str, Any]:
    refusal = decision.get("refusal") or {}
    return {
        "unit": decision.get("unit"),
        "demand": decision.get("demand"),
        "capacity": decision.get("capacity"),
        "load": decision.get("load"),
        "unplaced": decision.get("unplaced"),
        "overflowing": decision.get("overflowing"),
        "sends": decision.get("sends", {}),
        "receives": decision.get("receives", {}),
        "lending": decision.get("lending", {}),
        "refused": {
            "interactive": refusal.get("interactive", 0.0),
            "batch": refusal.get("batch", 0.0),
            "active": refusal.get("active", False),
            "detail": refusal.get("detail"),
        },
    }


def _number(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _shares(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{r} {share:.0%}" for r, share in sorted(shares.items()) if share) or "-"


def _reason(reason: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_number(v)}" for k, v in sorted(reason.items()) if k != "saturation")


def render(result: Mapping[str, Any]) -> str:
    shown = f", view of {result['region']}" if result["region"] else ", each in its own region"
    out = [f"model {result['model']}{shown}\n"]
    header = ["ENDPOINT", "REGION", "WAITING", "RUNNING", "KV", "AGE", "SATURATION", "WEIGHT"]
    header += ["PRIORITY", "HEALTH", "REASON"]
    out.append(
        table.render(
            header,
            [
                [
                    e["address"],
                    e["region"],
                    _number(e["waiting"], 0),
                    _number(e["running"], 0),
                    _number(e["kv_usage"]),
                    "-" if e["age_s"] is None else f"{e['age_s']:.1f}s",
                    _number(e["saturation"]),
                    e["weight"],
                    e["priority"],
                    e["health"],
                    _reason(e["reason"])
                    + (f" scrape_error={e['scrape_error']}" if e["scrape_error"] else ""),
                ]
                for e in result["endpoints"]
            ],
        )
    )
    allocation = result["allocation"]
    if allocation:
        unit = next(iter(allocation.values()))["unit"]
        out.append(f"\nallocation ({unit}):\n")
        out.append(
            table.render(
                [
                    "REGION",
                    "DEMAND",
                    "CAPACITY",
                    "LOAD",
                    "UNPLACED",
                    "SENDS",
                    "RECEIVES",
                    "REFUSED",
                ],
                [
                    [
                        r,
                        _number(a["demand"]),
                        _number(a["capacity"]),
                        _number(a["load"]),
                        _number(a["unplaced"]),
                        _shares(a["sends"]),
                        _shares(a["receives"]),
                        f"{a['refused']['interactive']:.0%} interactive, "
                        f"{a['refused']['batch']:.0%} batch",
                    ]
                    for r, a in allocation.items()
                ],
            )
        )
        why = [
            f"  {r} lends to {peer}: {_why(share.get('reason'))}"
            for r, a in allocation.items()
            for peer, share in sorted(a["lending"].items())
        ]
        why += [
            f"  {r} refuses: {a['refused']['detail']}"
            for r, a in allocation.items()
            if a["refused"]["active"]
        ]
        why += [
            f"  {r} view drops {v['drop_overload_percent']}%: {v['drop_reason']}"
            for r, v in result["views"].items()
            if v["drop_overload_percent"]
        ]
        if why:
            out.append("\nwhy:\n" + "\n".join(why) + "\n")
    return "".join(out)


def _why(reason: object) -> str:
    if isinstance(reason, Mapping):
        return " ".join(f"{k}={_number(v)}" for k, v in sorted(reason.items()))
    return str(reason)
