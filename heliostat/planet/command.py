"""`heliostat simulate SCENARIO.yaml [--report DIR]`: play a scenario, print the table."""

from __future__ import annotations

import sys
from pathlib import Path

from heliostat.planet import report
from heliostat.planet.loader import load_scenario
from heliostat.planet.quick import quick
from heliostat.planet.run import play


def main(
    scenario_path: str,
    report_dir: str | None,
    jobs: int = 1,
    only: list[str] | None = None,
    quiet: bool = False,
    fast: bool = False,
) -> int:
    scenario = load_scenario(scenario_path)  # ScenarioError: the CLI prints its lines
    if fast:
        scenario = quick(scenario)

    def progress(line: str) -> None:
        if not quiet:
            print(f"  {line}", file=sys.stderr, flush=True)

    results = play(scenario, jobs=jobs, only=only, progress=progress)
    print("\n".join(report.policy_table(results)))
    print(f"recovery_ticks: {results['recovery_ticks']}   wall: {results['wall_s']:.1f} s")
    for target in results["targets"]:
        print(f"{'met ' if target['met'] else 'MISS'} {target['target']}")
    if report_dir is not None:
        written = report.write(results, Path(report_dir))
        print(f"report: {', '.join(str(p) for p in written if p.suffix != '.png')}")
    return 0
