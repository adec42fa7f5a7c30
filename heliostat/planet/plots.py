"""PNG plots of a planet run (matplotlib, headless). Without matplotlib there are none, and
the report says so in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS = (
    ("offered_rps", "offered (req/s)"),
    ("served_local_rps", "served locally (req/s)"),
    ("borrowed_rps", "served elsewhere (req/s)"),
    ("lent_rps", "served for others (req/s)"),
    ("refused_rps", "refused + failed (req/s)"),
    ("slo_attainment", "SLO attainment"),
    ("ttft_p50_ms", "TTFT p50 incl. RTT (ms)"),
    ("ttft_p99_ms", "TTFT p99 incl. RTT (ms)"),
    ("gpu_utilisation", "GPU utilisation"),
    ("replicas", "replicas"),
)


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def policy_figure(name: str, series: dict[str, Any], path: Path) -> None:
    """Every panel for one policy, one line per region, over the run (hours)."""
    plt = _pyplot()
    bucket = series["bucket_s"]
    fig, axes = plt.subplots(5, 2, figsize=(12, 15), sharex=True)
    palette = plt.get_cmap("tab10")
    colour = {r: palette(i % 10) for i, r in enumerate(sorted(series["regions"]))}
    for ax, (key, title) in zip(axes.flat, PANELS, strict=True):
        for region, rows in sorted(series["regions"].items()):
            values = rows[key]
            if key == "refused_rps":
                values = [
                    a + b for a, b in zip(rows["refused_rps"], rows["failed_rps"], strict=True)
                ]
            xs = [(i + 0.5) * bucket / 3600 for i in range(len(values))]
            points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
            if points:
                xs_, ys_ = [p[0] for p in points], [p[1] for p in points]
                ax.plot(xs_, ys_, label=region, lw=1.2, color=colour[region])
        ax.set_title(title, fontsize=10)
        if key.startswith("ttft"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)  # every panel uses the same colour per region
    for ax in axes[-1]:
        ax.set_xlabel("hours")
    fig.suptitle(f"{name}: per region", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def comparison_figure(timeseries: dict[str, Any], path: Path) -> None:
    """SLO attainment and GPU utilisation of the whole planet over the run, per policy."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for name, series in timeseries.items():
        bucket = series["bucket_s"]
        regions = series["regions"].values()
        n = len(next(iter(regions))["offered_rps"]) if regions else 0
        xs, slo, util = [], [], []
        for i in range(n):
            offered = sum(r["offered_rps"][i] for r in regions)
            met = sum((r["slo_attainment"][i] or 0.0) * r["offered_rps"][i] for r in regions)
            busy = sum((r["gpu_utilisation"][i] or 0.0) * r["replicas"][i] for r in regions)
            replicas = sum(r["replicas"][i] for r in regions)
            xs.append((i + 0.5) * bucket / 3600)
            slo.append(met / offered if offered else None)
            util.append(busy / replicas if replicas else None)
        top.plot(xs, slo, label=name, lw=1.2)
        bottom.plot(xs, util, label=name, lw=1.2)
    top.set_title("SLO attainment (all users)")
    bottom.set_title("GPU utilisation (all GPUs)")
    bottom.set_xlabel("hours")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
