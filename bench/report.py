"""report.md: every benchmark's results in one page, with where and when they were measured.

The runner calls `write(out, size)` after a run. It reads whichever of the benchmarks' JSON
files are in `out` (a run with `--only` leaves the others from an earlier run, or absent)
and writes `out/report.md` with a section per benchmark, its PNG plots beside it. A figure
means little without its machine, so the header names the size, date, CPU count and model,
and the commit. A missing file reads "not run"; an unreadable or malformed one says so in
its section and never stops the rest of the report.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report_routing, report_sections
from bench.common import BENCHMARKS

RENDERERS = {**report_sections.RENDERERS, "routing": report_routing.routing}

ROOT = Path(__file__).resolve().parent.parent

TITLES = {
    "scale": "Scale: cost of one control tick",
    "fanout": "Fan-out: one change to many gateways",
    "convergence": "Convergence: replica change to Envoy",
    "routing": "Routing quality",
    "failover": "Failover: a region goes down",
    "overhead": "Overhead in the request path",
}


def write(out: Path, size: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# heliostat benchmarks", header(size)]
    parts += [section(name, out) for name in BENCHMARKS]
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def header(size: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"size **{size}** · {now} · {_cpus()} CPUs ({_cpu_model()}) · commit `{_commit()}`"


def section(name: str, out: Path) -> str:
    title = f"## {TITLES.get(name, name)} (`{name}.json`)"
    path = out / f"{name}.json"
    if not path.exists():
        return f"{title}\n\nnot run (no {name}.json here)"
    data, problem = _load(path)
    if data is None:
        return f"{title}\n\nnot run: {name}.json {problem}"
    try:
        blocks = RENDERERS[name](data, out)
    except Exception as exc:  # a malformed file must cost its section only, not the report
        blocks = [f"{name}.json could not be rendered: {type(exc).__name__}: {exc}"]
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    origin = f"_{name}.json written {written}"
    if isinstance(data.get("size"), str):
        origin += f" by a **{data['size']}** run"
    return "\n\n".join([title, origin + "_", *blocks])


def _load(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"is unreadable ({exc})"
    if not isinstance(data, dict):
        return None, f"holds a {type(data).__name__}, not an object"
    return data, ""


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown CPU"


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"
