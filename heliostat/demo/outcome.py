"""How a demo run ended, and the `--summary` file that scripts and CI read."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heliostat.demo.judge import Verdict
from heliostat.demo.story import Story


@dataclass(frozen=True, slots=True)
class Outcome:
    verdicts: tuple[Verdict, ...]  # one per phase of the story, judged or not
    requests: int
    errors: int
    interrupted: str | None = None  # the signal's name when a user stopped the run
    failure: str | None = None  # why the run could not be completed
    logs: Path | None = None  # the work directory, when it was kept

    @property
    def ok(self) -> bool:
        return (
            self.interrupted is None
            and self.failure is None
            and bool(self.verdicts)
            and all(v.ok for v in self.verdicts)
        )

    @property
    def exit_code(self) -> int:
        """0 when every phase is ok, 1 otherwise, 128 + the signal's number when stopped."""
        if self.interrupted is not None:
            return 128 + signal.Signals[self.interrupted].value
        return 0 if self.ok else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "phases": [v.to_json() for v in self.verdicts],
            "requests": self.requests,
            "errors": self.errors,
        }


def complete(story: Story, judged: Sequence[Verdict], reason: str) -> tuple[Verdict, ...]:
    """Every phase of the story, in order: its verdict, or not ok with `reason`."""
    by_name = {v.name: v for v in judged}
    return tuple(by_name.get(p.name, Verdict(p.name, False, reason)) for p in story.phases)


def write_summary(path: Path, outcome: Outcome) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(outcome.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
