"""report.md's routing section: per scenario, the policies, the origins, heliostat's shares,
and the issue's targets checked against the run.

Like every section, it takes what the file has: a missing figure is a dash, a scenario
without setup or details still gets its policy table, and the targets are re-checked from
the figures (`routing_targets`), so an older routing.json renders too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import report_plots as plots
from bench import routing_targets
from bench.common import table
from bench.report_sections import MISSING, cell, image, number

POLICY_FIELDS = (
    ("slo_attainment", "SLO met", True),
    ("goodput_rps", "goodput rps", False),
    ("ttft_p50_ms", "TTFT p50 ms", False),
    ("ttft_p99_ms", "TTFT p99 ms", False),
    ("admitted_ttft_p99_ms", "admitted p99 ms", False),
    ("refused", "refused", False),
    ("errors", "errors", False),
    ("prefix_hit_rate", "prefix hits", True),
    ("cross_region_share", "cross-region", True),
    ("requests", "requests", False),
)


def routing(data: Mapping[str, Any], out: Path) -> list[str]:
    workloads = data.get("workloads")
    if not isinstance(workloads, Mapping) or not workloads:
        return ["no workloads in routing.json"]
    setups = _mapping(_mapping(data.get("setup")).get("scenarios"))
    details = _mapping(data.get("details"))
    names = [str(w) for w, p in workloads.items() if isinstance(p, Mapping)]
    policies: list[str] = []
    for name in names:
        for policy in workloads[name]:
            if str(policy) not in policies:
                policies.append(str(policy))
    note = (
        "Every policy on the same scenarios (`bench/scenarios/`), through real Envoy gateways: "
        "heliostat's pushed weights, priorities and shares against Envoy's own balancers, "
        "Envoy's ORCA-fed `load_aware_locality` and a per-request endpoint picker. SLO met "
        "counts refused and failed requests as misses; goodput is requests within the SLO "
        "per second of offered load; refused are fast refusals by the gateway (429/503 in "
        "under 50 ms); admitted p99 is the TTFT p99 of the requests not refused."
    )
    blocks = [note, "### Targets", _targets(data)]

    def metric(key: str) -> dict[str, list[float | None]]:
        return {p: [_figure(workloads[w], p, key) for w in names] for p in policies}

    blocks += image(
        plots.routing(out, names, policies, metric("ttft_p99_ms"), metric("slo_attainment")),
        "TTFT p99 and SLO attainment per scenario and policy",
    )
    for name in names:
        blocks += _scenario(
            name, workloads[name], _mapping(setups.get(name)), _mapping(details.get(name)), out
        )
    return blocks


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _figure(by_policy: Any, policy: str, key: str) -> float | None:
    figures = by_policy.get(policy) if isinstance(by_policy, Mapping) else None
    return number(figures.get(key)) if isinstance(figures, Mapping) else None


def _targets(data: Mapping[str, Any]) -> str:
    try:
        checks = routing_targets.evaluate(data)
    except Exception as exc:  # a malformed file costs this table only
        return f"targets could not be checked: {type(exc).__name__}: {exc}"
    if not checks:
        return "no targets to check"
    met = sum(1 for c in checks if c["verdict"] == "met")
    judged = sum(1 for c in checks if c["verdict"] != "n/a")
    rows = [
        [c["scenario"], c["target"], c["heliostat"], c["reference"], c["verdict"]] for c in checks
    ]
    return f"{met} of {judged} targets met.\n\n" + table(
        ["scenario", "target", "heliostat", "reference", "verdict"], rows
    )


def _scenario(
    name: str,
    by_policy: Mapping[str, Any],
    setup: Mapping[str, Any],
    detail: Mapping[str, Any],
    out: Path,
) -> list[str]:
    workload = _mapping(setup.get("workload"))
    about = str(workload.get("description") or "")
    seconds = number(workload.get("seconds"))
    facts = [about] if about else []
    if seconds is not None:
        facts.append(f"{seconds:g} s of offered load")
    blocks = [f"### {name}", "; ".join(facts) or MISSING]
    rows = []
    for policy, figures in by_policy.items():
        figures = _mapping(figures)
        rows.append(
            [policy] + [cell(figures.get(key), share=share) for key, _, share in POLICY_FIELDS]
        )
    blocks.append(table(["policy", *(label for _, label, _ in POLICY_FIELDS)], rows))
    blocks.append(_by_origin(by_policy))
    guarded = _protection(setup, detail)
    if guarded:
        blocks.append(guarded)
    orca = _orca(detail)
    if orca:
        blocks.append(orca)
    helio = _mapping(by_policy.get("heliostat"))
    series = helio.get("shares")
    if isinstance(series, list):
        phases = [
            (s, e)
            for p in workload.get("phases", [])
            if isinstance(p, Mapping)
            and (s := number(p.get("start_s"))) is not None
            and (e := number(p.get("end_s"))) is not None
        ]
        drawn = plots.shares(out, name, _share_lines(series), phases)
        blocks += image(drawn, f"heliostat's published shares over time, {name}")
        reversals = number(helio.get("max_reversals_per_min"))
        if reversals is not None:
            blocks.append(
                f"heliostat: at most {reversals:g} reversals per minute of an endpoint weight "
                "or share while load was offered (sampled every 250 ms)."
            )
    return blocks


def _by_origin(by_policy: Mapping[str, Any]) -> str:
    """One row per origin region, one column per policy: SLO met · TTFT p99 · cross-region."""
    origins: list[str] = []
    for figures in by_policy.values():
        for origin in _mapping(_mapping(figures).get("by_origin")):
            if origin not in origins:
                origins.append(origin)
    if not origins:
        return "no per-origin figures"
    policies = list(by_policy)
    rows = []
    for origin in origins:
        row: list[object] = [origin]
        requests = None
        for policy in policies:
            mine = _mapping(_mapping(_mapping(by_policy[policy]).get("by_origin")).get(origin))
            requests = requests if requests is not None else mine.get("requests")
            row.append(
                " · ".join(
                    str(cell(mine.get(key), share=share))
                    for key, share in (
                        ("slo_attainment", True),
                        ("ttft_p99_ms", False),
                        ("cross_region_share", True),
                    )
                )
            )
        row.insert(1, cell(requests))
        rows.append(row)
    return "By origin region (SLO met · TTFT p99 ms · cross-region):\n\n" + table(
        ["origin", "requests", *policies], rows
    )


def _protection(setup: Mapping[str, Any], detail: Mapping[str, Any]) -> str:
    table_ = routing_targets.protection(setup, detail)
    if not table_:
        return ""
    rows = [
        [policy, region, cell(row["before"], share=True), cell(row["during"], share=True)]
        for policy, regions in table_.items()
        for region, row in regions.items()
    ]
    if not rows:
        return ""
    return (
        "Protection: the rescuing region's own users, SLO met before and during the surge:\n\n"
        + (table(["policy", "rescuer", "before", "during"], rows))
    )


def _orca(detail: Mapping[str, Any]) -> str:
    """envoy_orca's locality decisions (load_aware_locality's counters) and reports seen."""
    counters = _mapping(_mapping(detail.get("envoy_orca")).get("load_aware_locality"))
    rows = [
        [
            region,
            cell(c.get("lb_zone_routing_all_directly")),
            cell(c.get("lb_zone_routing_sampled")),
            cell(c.get("lb_zone_routing_cross_zone")),
        ]
        for region, c in ((r, _mapping(v)) for r, v in counters.items())
    ]
    if not rows:
        return ""
    return "envoy_orca: load_aware_locality's decisions per gateway (Envoy's counters):\n\n" + (
        table(["gateway", "all local", "local (weighted)", "cross-zone"], rows)
    )


def _share_lines(series: list[Any]) -> dict[str, list[tuple[float, float]]]:
    """view -> region -> (t, share) points, for every pair that is not a view's own region."""
    lines: dict[str, list[tuple[float, float]]] = {}
    pairs: set[tuple[str, str]] = set()
    for sample in series:
        for view, shares in _mapping(_mapping(sample).get("shares")).items():
            for region in _mapping(shares):
                if region != view:
                    pairs.add((view, region))
    for view, region in sorted(pairs):
        points = []
        for sample in series:
            t = number(_mapping(sample).get("t"))
            shares = _mapping(_mapping(_mapping(sample).get("shares")).get(view))
            share = number(shares.get(region, 0.0))
            if t is not None and share is not None:
                points.append((t, share))
        lines[f"{view} -> {region}"] = points
    return lines
