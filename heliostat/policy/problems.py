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


# difflib compares the value with every choice; a hint is worth it among names a person
# chooses from (regions, models, keys), not among thousands of endpoint addresses, where it
# would make each problem of a large file cost a noticeable fraction of a second.
_MAX_HINT_CHOICES = 200

# A file with thousands of problems (every endpoint of a large fleet naming a misspelt
# region) is reported by its first problems and a count; they are fixed the same way.
MAX_REPORTED = 100


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix when a choice is close, else nothing."""
    candidates = list(choices)
    if len(candidates) > _MAX_HINT_CHOICES:
        return ""
    close = difflib.get_close_matches(str(value), candidates, n=1, cutoff=0.6)
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
        """One line per problem, the first `MAX_REPORTED` of them and then a count."""
        shown = [problem.render(self.source) for problem in self.problems[:MAX_REPORTED]]
        hidden = self.problems[MAX_REPORTED:]
        if hidden:
            summary = Problem((), f"{len(hidden):,} more problems not shown", hidden[0].line)
            shown.append(summary.render(self.source))
        return shown
