"""What every benchmark shares: its size, where results go, and how it is registered.

A benchmark is a module in `bench/` with

    def run(size: Size, workdir: Path) -> dict[str, Any]   # the JSON document it reports
    def summary(result: dict[str, Any]) -> str             # a short plain-text table

`run` starts whatever it needs under `workdir` (processes from `heliostat.lab`, always
stopped before it returns) and asserts nothing about timings: benchmarks report.
Sizes: "tiny" is the smoke test in `make test` (seconds, proves the benchmark still runs),
"quick" is `make bench-quick` (all benchmarks together about 9 minutes on 2 cores),
"full" is `make bench` (all together at most 60 minutes).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

Size = Literal["tiny", "quick", "full"]

# Order of a run; the name is also the module and the JSON file's stem.
BENCHMARKS = ("scale", "fanout", "convergence", "routing", "failover", "overhead")


def results_dir() -> Path:
    return Path(os.environ.get("BENCH_OUT", "bench/results"))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values, so reports stay numeric."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table for the terminal and for report.md (it is valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
