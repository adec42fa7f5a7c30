"""Suite-wide hooks: how `make test` shares the tests between its two pytest-xdist workers,
and the fault table gathered from the test reports.

`make test` runs `pytest -n 2 --dist loadgroup`. Tests in one `xdist_group` run one after
another in one worker; the rest go to whichever worker is free. Two groups are made here:

- "real-processes": every test that starts real Envoys, `heliostat serve` or simulated
  replicas (tests/e2e, tests/faults, tests/churn, tests marked `envoy`, and tests using the
  e2e process fixtures). They run one at a time, as they did before the suite ran in two
  workers, so their timing (convergence windows, seconds of traffic, drain deadlines) is
  never shared with another such test; the other worker runs in-process tests beside them.
- one group per module for tests using a fixture shared by a module (or wider): it is built
  once (tests/planet/test_scenarios.py plays each scenario once, ~20-30 s each) instead of
  once in each worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.table import PROPERTY, Row, markdown

REAL_PROCESS_DIRS = ("tests/e2e/", "tests/faults/", "tests/churn/")
REAL_PROCESS_FIXTURES = frozenset({"processes", "start_heliostat", "start_envoy", "upstreams"})
SHARED_SCOPES = frozenset({"module", "package", "session"})

FAULT_ROWS: list[Row] = []


def _starts_real_processes(item: pytest.Item) -> bool:
    return (
        item.nodeid.startswith(REAL_PROCESS_DIRS)
        or item.get_closest_marker("envoy") is not None
        or not REAL_PROCESS_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
    )


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        definition.scope in SHARED_SCOPES
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
        # pytest's and plugins' own (event loops, tmp_path_factory) are not built by the suite
        if definition.baseid.startswith("tests/")
    )


def group_of(item: pytest.Item) -> str | None:
    """The xdist group `item` runs in under `make test`, or None (any free worker)."""
    if _starts_real_processes(item):
        return "real-processes"
    if _shares_a_fixture(item):
        return item.nodeid.split("::", 1)[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = None if item.get_closest_marker("xdist_group") else group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Fault rows arrive with each fault test's teardown report (tests/faults/conftest.py),
    from this process or from an xdist worker."""
    if report.when == "teardown":
        FAULT_ROWS.extend(Row(*value) for name, value in report.user_properties if name == PROPERTY)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FAULT_ROWS:
        return
    terminalreporter.write_sep("-", "faults injected")
    terminalreporter.write(markdown(FAULT_ROWS))
    target = os.environ.get("HELIOSTAT_FAULT_TABLE")
    if target:
        Path(target).write_text(markdown(FAULT_ROWS))
