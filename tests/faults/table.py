"""The fault table: one row per fault test (fault, requests sent, requests failed, a measured
note), so the numbers the issue asks for come from the run itself."""

from __future__ import annotations

from dataclasses import dataclass

# The name under which a fault test's rows travel in its report's user_properties: the
# report reaches the process printing the table even when the test ran in a pytest-xdist
# worker (`make test` runs two), where a module-level list would stay behind.
PROPERTY = "fault_row"


@dataclass(frozen=True)
class Row:
    fault: str
    sent: int
    failed: int
    note: str


def markdown(rows: list[Row]) -> str:
    lines = ["| fault | requests sent | failed | measured |", "|---|---:|---:|---|"]
    lines += [f"| {r.fault} | {r.sent} | {r.failed} | {r.note} |" for r in rows]
    return "\n".join(lines) + "\n"
