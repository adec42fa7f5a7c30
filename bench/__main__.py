"""Run the benchmarks and write `$BENCH_OUT` (default bench/results/): one JSON per benchmark
plus report.md with plots.

    python -m bench [--quick | --tiny] [--only NAME ...] [--scenario FILE ...]
                    [--policy NAME ...] [--out DIR]

`--scenario` runs the routing benchmark on those scenario files instead of every file in
bench/scenarios/ (see bench/README.md for the format); `--policy` runs only those of its
policies (default: all), for example heliostat alone to compare two versions of its law.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCHMARKS, Size, results_dir
from bench.routing import POLICIES as ROUTING_POLICIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="make bench-quick's sizes (about 9 min)")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument(
        "--scenario",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="routing: run this scenario file (repeatable; default: bench/scenarios/*.yaml)",
    )
    parser.add_argument(
        "--policy",
        nargs="+",
        choices=ROUTING_POLICIES,
        default=None,
        metavar="NAME",
        help=f"routing: run only these policies (default: all of {', '.join(ROUTING_POLICIES)})",
    )
    args = parser.parse_args(argv)
    if args.scenario:
        from bench.scenario import load_all

        try:  # every file checked before any benchmark starts
            load_all(args.scenario)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
    chosen: Size = "tiny" if args.tiny else "quick" if args.quick else "full"
    out = args.out or results_dir()
    out.mkdir(parents=True, exist_ok=True)
    summaries: list[str] = []
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        began = time.monotonic()
        print(f"== {name} ({chosen})", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"heliostat-bench-{name}-") as workdir:
            if name == "routing" and (args.scenario or args.policy):
                result = module.run(
                    chosen, Path(workdir), scenarios=args.scenario, policies=args.policy or ()
                )
            else:
                result = module.run(chosen, Path(workdir))
        (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        summary = f"## {name} ({time.monotonic() - began:.0f} s)\n\n{module.summary(result)}"
        print(summary + "\n", flush=True)
        summaries.append(summary)
    from bench import report

    path = report.write(out, size=chosen)
    print("\n\n".join(summaries))
    print(f"\nresults in {out}/, report {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
