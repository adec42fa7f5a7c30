"""The PNG plots of report.md (matplotlib, Agg, no pyplot state).

Each function takes already-validated numbers, draws one figure into `out`, and returns its
file name, or None when there is nothing worth drawing. Figures are built with
`matplotlib.figure.Figure` directly, so no backend or global figure registry is involved and
the report can be written from any process, with or without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DPI = 110


def _save(figure: Figure, out: Path, name: str) -> str:
    figure.tight_layout()
    figure.savefig(out / name, dpi=DPI)
    return name


def _grouped_bars(
    axes: Axes, groups: Sequence[str], series: Mapping[str, Sequence[float | None]]
) -> None:
    """Bars per group (x), one per series, side by side; None leaves a gap."""
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        axes.bar(xs, heights, width=width, label=label)
    axes.set_xticks(range(len(groups)), list(groups))
    axes.legend(fontsize="small")


def scale(out: Path, rows: Sequence[tuple[int, int, float | None, float | None]]) -> str | None:
    """Tick ms against endpoints: a line per region-view count, full solid, incremental dashed."""
    views = sorted({v for _, v, _, _ in rows})
    if not rows:
        return None
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    for colour, count in zip(("#1f77b4", "#d62728", "#2ca02c", "#9467bd"), views, strict=False):
        mine = sorted((e, f, i) for e, v, f, i in rows if v == count)
        full = [(e, f) for e, f, _ in mine if f is not None]
        incremental = [(e, i) for e, _, i in mine if i is not None]
        if full:
            axes.plot(*zip(*full, strict=True), "o-", color=colour, label=f"{count} views, full")
        if incremental:
            axes.plot(
                *zip(*incremental, strict=True),
                "s--",
                color=colour,
                label=f"{count} views, incremental (10%)",
            )
    axes.set_xscale("log")
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("endpoints")
    axes.set_ylabel("CPU ms per tick")
    axes.set_title("Control tick: compute + translate + serialize")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, out, "scale.png")


def fanout(
    out: Path,
    rows: Sequence[tuple[int, str, float | None, float | None, float | None, float | None]],
) -> str | None:
    """ACK p50/p99 per clients x mode; bytes per push and serve's RSS beside them."""
    if not rows:
        return None
    labels = [f"{clients}\n{mode}" for clients, mode, *_ in rows]
    figure = Figure(figsize=(12.0, 4.0))
    latency = figure.add_subplot(1, 3, 1)
    _grouped_bars(
        latency,
        labels,
        {"ACK p50": [r[2] for r in rows], "ACK p99": [r[3] for r in rows]},
    )
    latency.set_ylabel("ms from change to ACK")
    latency.set_title("One weight change, every client")
    for index, (title, values) in enumerate(
        (
            ("KB each client received", [None if r[4] is None else r[4] / 1024 for r in rows]),
            ("serve RSS MB, clients subscribed", [r[5] for r in rows]),
        ),
        start=2,
    ):
        axes = figure.add_subplot(1, 3, index)
        colours = ["#1f77b4" if "sotw" in label else "#ff7f0e" for label in labels]
        axes.bar(range(len(labels)), [v or 0.0 for v in values], color=colours)
        axes.set_xticks(range(len(labels)), labels)
        axes.set_title(title)
    return _save(figure, out, "fanout.png")


def cdf(out: Path, name: str, samples: Mapping[str, Sequence[float]], title: str) -> str | None:
    """Empirical CDFs of one or more sample lists (ms)."""
    drawn = {k: sorted(v) for k, v in samples.items() if v}
    if not drawn:
        return None
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    for label, values in drawn.items():
        ys = [(i + 1) / len(values) for i in range(len(values))]
        axes.step(values, ys, where="post", label=f"{label} (n={len(values)})")
    axes.set_xlabel("ms")
    axes.set_ylabel("share of samples")
    axes.set_ylim(0, 1.02)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, out, name)


def shares(
    out: Path,
    scenario: str,
    lines: Mapping[str, Sequence[tuple[float, float]]],
    phases: Sequence[tuple[float, float]],
) -> str | None:
    """heliostat's published shares over time (view -> other region), phases shaded."""
    drawn = {label: points for label, points in lines.items() if points}
    if not drawn:
        return None
    figure = Figure(figsize=(8.0, 3.6))
    axes = figure.add_subplot()
    for index, (start, end) in enumerate(phases):
        if index % 2:
            axes.axvspan(start, end, color="#eeeeee", zorder=0)
    for label, points in drawn.items():
        xs, ys = zip(*points, strict=True)
        axes.step(xs, ys, where="post", label=label)
    axes.set_xlabel("seconds since the first request (phases shaded alternately)")
    axes.set_ylabel("share of the view's traffic")
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(f"heliostat's published shares: {scenario}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", loc="upper left")
    return _save(figure, out, f"routing-shares-{scenario}.png")


def routing(
    out: Path,
    workloads: Sequence[str],
    policies: Sequence[str],
    ttft_p99: Mapping[str, Sequence[float | None]],
    slo: Mapping[str, Sequence[float | None]],
) -> str | None:
    """Per workload, TTFT p99 and SLO attainment of every policy, as grouped bars."""
    if not workloads or not policies:
        return None
    figure = Figure(figsize=(max(11.0, 2.2 * len(workloads) * 2), 4.2))
    left = figure.add_subplot(1, 2, 1)
    _grouped_bars(left, workloads, {p: ttft_p99[p] for p in policies})
    if any(v is not None and v > 0 for values in ttft_p99.values() for v in values):
        left.set_yscale("log")  # seconds of queueing and tens of ms on one axis
    left.set_ylabel("TTFT p99 ms")
    left.set_title("TTFT p99 by scenario and policy")
    right = figure.add_subplot(1, 2, 2)
    _grouped_bars(right, workloads, {p: slo[p] for p in policies})
    right.set_ylabel("SLO attainment")
    right.set_title("Share of requests within the TTFT SLO")
    return _save(figure, out, "routing.png")


def bars(out: Path, name: str, panels: Sequence[tuple[str, Mapping[str, float]]]) -> str | None:
    """Small side-by-side bar panels: (title, {label: value}) each."""
    panels = [(t, v) for t, v in panels if v]
    if not panels:
        return None
    figure = Figure(figsize=(3.4 * len(panels), 3.4))
    for index, (title, values) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        axes.bar(range(len(values)), list(values.values()), color="#1f77b4")
        axes.set_xticks(range(len(values)), list(values))
        axes.set_title(title, fontsize="medium")
        for x, value in enumerate(values.values()):
            axes.annotate(f"{value:g}", (x, value), ha="center", va="bottom", fontsize="small")
    return _save(figure, out, name)
