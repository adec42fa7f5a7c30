"""The fault suite's world and its table.

Every fault test records a row (fault, requests sent, requests failed, a measured note);
the table is printed at the end of the run and, with HELIOSTAT_FAULT_TABLE=FILE, written as
Markdown, so the numbers the issue asks for come from the run itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import processes  # noqa: F401 (a fixture used here)


@dataclass(frozen=True)
class Row:
    fault: str
    sent: int
    failed: int
    note: str


ROWS: list[Row] = []


@pytest.fixture
def record() -> Iterator[list[Row]]:
    yield ROWS


def table() -> str:
    lines = ["| fault | requests sent | failed | measured |", "|---|---:|---:|---|"]
    lines += [f"| {r.fault} | {r.sent} | {r.failed} | {r.note} |" for r in ROWS]
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.write_sep("-", "faults injected")
    terminalreporter.write(table())
    target = os.environ.get("HELIOSTAT_FAULT_TABLE")
    if target:
        Path(target).write_text(table())
