"""Narrowing /debug/state: `?only=nodes,policy`, `?node=ID`, `?model=NAME`.

The whole state of a real fleet is large (every view lists every endpoint of every model);
operators and tools usually want one slice of it. Filters combine; an unknown key in
`only` is an error rather than an empty answer, so a typo is not mistaken for "nothing".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class QueryError(ValueError):
    pass


def narrow(state: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    only = [k for k in query.get("only", "").split(",") if k]
    unknown = [k for k in only if k not in state]
    if unknown:
        raise QueryError(f"unknown keys {unknown} (keys: {', '.join(sorted(state))})")
    result = {k: state[k] for k in only} if only else dict(state)
    node = query.get("node")
    if node is not None and "nodes" in result:
        result["nodes"] = [n for n in result["nodes"] if n.get("node_id") == node]
    model = query.get("model")
    if model is not None:
        _narrow_model(result, model)
    return result


def _narrow_model(result: dict[str, Any], model: str) -> None:
    views = result.get("views")
    if isinstance(views, dict):
        result["views"] = {
            "regions": {
                region: {n: c for n, c in clusters.items() if c.get("model") == model}
                for region, clusters in views.get("regions", {}).items()
            },
            "neutral": {
                n: c for n, c in views.get("neutral", {}).items() if c.get("model") == model
            },
        }
    signals = result.get("signals")
    if isinstance(signals, dict) and "models" in signals:
        result["signals"] = {**signals, "models": {model: signals["models"].get(model, [])}}
    control = result.get("control")
    if isinstance(control, dict) and "models" in control.get("decisions", {}):
        decisions = control["decisions"]
        result["control"] = {
            **control,
            "decisions": {**decisions, "models": {model: decisions["models"].get(model, {})}},
        }
