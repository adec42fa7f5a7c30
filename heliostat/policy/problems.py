"""Problems found in a policy file, each tied to a path and, once located, a line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from heliostat.policy.yamlsource import Path


def format_path(path: Path) -> str:
    """`('spec', 'models', 0, 'name')` -> `spec.models[0].name`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix when a choice is close, else nothing."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    line: int = 0

    def render(self, source: str) -> str:
        return f"{source}:{self.line}: {format_path(self.path)}: {self.message}"


class PolicyError(Exception):
    """A policy file that cannot be served; carries every problem, not just the first."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(sorted(problems, key=lambda p: (p.line, format_path(p.path))))
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [problem.render(self.source) for problem in self.problems]
