"""`heliostat demo`: options in, exit code out; every expected problem is one line on stderr.

rich is imported only when the live view is asked for, so `--headless` (CI, scripts) and
`heliostat --help` work without the demo extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

from heliostat.demo.outcome import write_summary
from heliostat.demo.report import HeadlessObserver
from heliostat.demo.runner import DemoError, Observer, Options, run
from heliostat.demo.story import StoryError, build_story


def main(
    *,
    duration: float,
    headless: bool,
    summary: Path | None,
    seed: int,
    keep_logs: bool,
) -> int:
    try:
        build_story(duration)  # a bad --duration is reported before anything starts
        observer = HeadlessObserver() if headless else _live_observer()
        outcome = run(Options(duration=duration, seed=seed, keep_logs=keep_logs), observer)
    except (StoryError, DemoError) as exc:
        print(f"heliostat demo: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, StoryError) else 1
    if summary is not None:
        try:
            write_summary(summary, outcome)
        except OSError as exc:
            print(f"heliostat demo: cannot write {summary}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return outcome.exit_code


def _live_observer() -> Observer:
    try:
        from heliostat.demo.view import LiveObserver
    except ImportError as exc:
        raise DemoError(
            f"the live view needs rich ({exc.name or 'rich'} is missing): install the demo "
            "extra (pip install 'heliostat[demo]') or pass --headless"
        ) from None
    if not sys.stdout.isatty():
        # rich would draw frame after frame into a file or pipe: lines read better there
        return HeadlessObserver()
    return LiveObserver()
