"""Plain-text reporting: the headless observer and the summary table (no rich needed).

Headless output is for CI logs and scripts: one line when a phase begins, one when it is
judged, and the table at the end, all flushed as they happen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TextIO

from heliostat.demo.board import Board
from heliostat.demo.judge import Verdict
from heliostat.demo.outcome import Outcome
from heliostat.demo.story import Phase, Story

DETAIL_WIDTH = 100


def table(verdicts: Sequence[Verdict]) -> str:
    """The phases as a fixed-width table, long details wrapped under their phase."""
    name_width = max([len("phase"), *(len(v.name) for v in verdicts)])
    lines = [f"{'phase':<{name_width}}  {'result':<6}  detail"]
    for v in verdicts:
        chunks = _wrap(v.detail, DETAIL_WIDTH) or [""]
        lines.append(f"{v.name:<{name_width}}  {'ok' if v.ok else 'FAIL':<6}  {chunks[0]}")
        lines += [f"{'':<{name_width}}  {'':<6}  {chunk}" for chunk in chunks[1:]]
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def closing(outcome: Outcome) -> str:
    """The last lines: totals, what the exit code will say, where the logs are."""
    passed = sum(v.ok for v in outcome.verdicts)
    lines = [
        f"requests {outcome.requests}, errors {outcome.errors}; "
        f"{passed} of {len(outcome.verdicts)} phases ok"
    ]
    if outcome.interrupted:
        lines.append(f"stopped by {outcome.interrupted}; every process the demo started is stopped")
    if outcome.failure:
        lines.append(f"demo failed: {outcome.failure}")
    if outcome.logs:
        lines.append(f"logs kept in {outcome.logs}")
    return "\n".join(lines)


class HeadlessObserver:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __enter__(self) -> HeadlessObserver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def status(self, text: str) -> None:
        self._line(f"heliostat demo: {text}")

    def begin(self, story: Story, describe: str, board: Callable[[], Board]) -> None:
        self._line(f"heliostat demo: {describe}")

    def phase(self, index: int, phase: Phase, story: Story) -> None:
        self._line(
            f"[{phase.start:5.1f}s] phase {index + 1}/{len(story.phases)} {phase.title} "
            f"({phase.length:.0f} s) -- watch: {phase.watch}"
        )

    def event(self, t: float, text: str) -> None:
        self._line(f"[{t:5.1f}s] {text}")

    def verdict(self, t: float, verdict: Verdict) -> None:
        self._line(
            f"[{t:5.1f}s] {verdict.name}: {'ok' if verdict.ok else 'FAIL'} -- {verdict.detail}"
        )

    def end(self, outcome: Outcome) -> None:
        self._line("")
        self._line(table(outcome.verdicts))
        self._line(closing(outcome))
