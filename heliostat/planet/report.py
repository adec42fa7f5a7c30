"""report.json and report.md of a planet run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from heliostat.planet import plots

NOTES = {
    "slo_attainment": "requests that got their first token within the end-to-end SLO (network "
    "round trips included) over requests offered; refused and failed requests count as misses",
    "admitted_within_slo": "the same over requests served only",
    "goodput_rps": "requests within the SLO per second, over the run",
    "refused_share": "fast 503s at the gateway (drop_overloads, circuit breakers, no healthy "
    "upstream) over requests offered",
    "failed_share": "requests sent and broken (a lost replica, a 500, retries exhausted)",
    "ttft_p99_ms": "99th percentile of time to first token as users see it, served requests",
    "gpu_hours": "GPU-hours held (provisioning, serving, draining and lost replicas alike)",
    "gpu_utilisation": "work done (completions / a replica's capacity) over GPU time held",
    "recovery_ticks": "heliostat's control ticks from a region's loss until its users are "
    "served again (see heliostat/planet/judge.py)",
}


def write(
    results: dict[str, Any], directory: Path, plot_policies: list[str] | None = None
) -> list[Path]:
    """report.json, report.md and the plots (per-region figures of `plot_policies`, default
    every run). `results` may also come back from a report.json (to redraw without replaying)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    body = {**results, "notes": NOTES}
    path = directory / "report.json"
    path.write_text(json.dumps(body, separators=(",", ":")) + "\n")
    written.append(path)
    images: list[str] = []
    note = ""
    if plots.available():
        comparison = directory / "policies.png"
        plots.comparison_figure(results["timeseries"], comparison)
        images.append(comparison.name)
        written.append(comparison)
        for name, series in results["timeseries"].items():
            if plot_policies is not None and name not in plot_policies:
                continue
            safe = name.replace("+", "_")
            figure = directory / f"regions-{safe}.png"
            plots.policy_figure(name, series, figure)
            images.append(figure.name)
            written.append(figure)
    else:
        note = "matplotlib is not installed: no plots, tables only (pip install matplotlib)."
    md = directory / "report.md"
    md.write_text(markdown(results, images, note))
    written.append(md)
    return written


def _fmt(value: Any, percent: bool = False, digits: int = 2) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:.{digits}f}%"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def policy_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| policy | SLO attainment | admitted within SLO | goodput req/s | refused | failed "
        "| cross-region | TTFT p50 / p99 ms | GPU-hours | GPU utilisation |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in results["policies"].items():
        lines.append(
            f"| {name} | {_fmt(p['slo_attainment'], True, 3)} "
            f"| {_fmt(p['admitted_within_slo'], True, 3)} | {_fmt(p['goodput_rps'], digits=0)} "
            f"| {_fmt(p['refused_share'], True, 3)} | {_fmt(p['failed_share'], True, 3)} "
            f"| {_fmt(p['cross_region_share'], True, 1)} "
            f"| {_fmt(p['ttft_p50_ms'], digits=0)} / {_fmt(p['ttft_p99_ms'], digits=0)} "
            f"| {_fmt(p['gpu_hours'], digits=0)} | {_fmt(p['gpu_utilisation'], True, 1)} |"
        )
    return lines


def markdown(results: dict[str, Any], images: list[str], note: str) -> str:
    s = results["scenario"]
    lines = [
        f"# Planet: {s['name']}",
        "",
        s["description"] or "",
        "",
        f"{s['duration_s'] / 3600:g} h simulated in {results['wall_s']:.0f} s of wall time "
        f"({s['mode']} engine, {s['step_s']:g} s steps). Replica capacity "
        f"{s['replica_capacity_rps']} req/s ({s['gpus_per_replica']} GPUs each); peak offered "
        + ", ".join(f"{o} {v:,.0f}" for o, v in s["peak_offered_rps"].items())
        + " req/s; end-to-end SLO "
        f"{s['slo']['end_to_end_ms']:g} ms, in-region {s['slo']['ttft_ms']:g} ms, budget "
        f"{s['slo']['network_budget_ms']:g} ms.",
        "",
        "## Policies",
        "",
        *policy_table(results),
        "",
    ]
    fleets = {n: p.get("fleet") for n, p in results["policies"].items()}
    lines += [
        "Fleets (replicas per region at the start): "
        + "; ".join(f"{n}: {f}" for n, f in fleets.items()),
        "",
    ]
    if results.get("region_loss"):
        lines += [
            "## Region lost",
            "",
            "| policy | region | recovery ticks | its users failed/refused | its users' SLO "
            "| all failed/refused | unholdable | beyond budget | max rescuer utilisation |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, loss in results["region_loss"].items():
            lines.append(
                f"| {name} | {loss['region']} | {_fmt(loss['recovery_ticks'])} "
                f"| {_fmt(loss['users_failed_or_refused_share'], True)} "
                f"| {_fmt(loss['users_slo_attainment'], True)} "
                f"| {_fmt(loss['refused_or_failed_share'], True)} "
                f"| {_fmt(loss['unholdable_share'], True)} "
                f"| {_fmt(loss['beyond_budget_share'], True)} "
                f"| {_fmt(loss['max_rescuer_utilisation'], True, 1)} |"
            )
        lines.append("")
    if results.get("targets"):
        lines += ["## Targets", "", "| target | met | numbers |", "|---|---|---|"]
        for target in results["targets"]:
            detail = json.dumps(target["detail"])
            lines.append(f"| {target['target']} | {'yes' if target['met'] else 'no'} | {detail} |")
        lines.append("")
    lines += ["## Per origin region", ""]
    for name, p in results["policies"].items():
        lines.append(
            f"**{name}**: "
            + "; ".join(
                f"{o}: SLO {_fmt(v['slo_attainment'], True)}, "
                f"p99 {_fmt(v['ttft_p99_ms'], digits=0)} ms, "
                f"cross-region {_fmt(v['cross_region_share'], True, 1)}"
                for o, v in p["by_origin"].items()
            )
        )
        lines.append("")
    lines += ["## Plots", ""]
    if note:
        lines += [note, ""]
    for image in images:
        lines += [f"![{image}]({image})", ""]
    lines += ["## Definitions", ""]
    lines += [f"- `{k}`: {v}" for k, v in NOTES.items()]
    lines.append("")
    return "\n".join(lines)
