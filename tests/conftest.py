"""Suite-wide hooks: how `make test` shares the tests between its two pytest-xdist workers,
and the fault table gathered from the test reports.

`make test` runs `pytest -n 2`; the scheduler below hands out whole work units:

- "real-processes": every module whose tests start real Envoys, `heliostat serve` or
  simulated replicas (tests/e2e, tests/faults, tests/churn and the modules below with tests
  marked `envoy`). One unit, so they run one at a time in one worker, as they did before the
  suite ran in two workers: their timing (convergence windows, seconds of traffic, drain
  deadlines) is never shared with another such test; the other worker runs in-process tests
  beside them.
- every other module is a unit of its own, so a fixture shared by a module's tests is built
  once (tests/planet/test_scenarios.py plays each scenario once, 20-30 s each).

The units are chosen from the test ids in a scheduler, not with `--dist loadgroup` and
`xdist_group` marks: pytest-xdist (3.8) applies a group by rewriting `item._nodeid`, which
pytest 9 no longer reads, so under pytest 9 the marks group nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.faults.table import PROPERTY, Row, markdown

REAL_PROCESS_DIRS = ("tests/e2e/", "tests/faults/", "tests/churn/")
# Modules elsewhere that start real processes (Envoy, `heliostat serve`, ADS clients, a
# Prometheus, the fake API server's serve): found by their imports of heliostat.lab,
# tests.e2e.harness or subprocess; a new such module belongs here.
REAL_PROCESS_MODULES = frozenset(
    {
        "tests/bench/test_convergence.py",
        "tests/bench/test_failover.py",
        "tests/bench/test_fanout.py",
        "tests/bench/test_overhead.py",
        "tests/bench/test_routing.py",
        "tests/bench/test_routing_envoy.py",
        "tests/discovery/test_ha_envoy.py",
        "tests/discovery/test_serve_kube.py",
        "tests/security/test_mtls.py",
        "tests/signals/test_signal_prometheus.py",
        "tests/signals/test_signal_serve.py",
        "tests/xds/grpc/test_stream_burst.py",
    }
)
REAL_PROCESSES = "real-processes"

FAULT_ROWS: list[Row] = []


def unit_of(nodeid: str) -> str:
    """The work unit a test id runs in under `make test`."""
    module = nodeid.split("::", 1)[0]
    if module.startswith(REAL_PROCESS_DIRS) or module in REAL_PROCESS_MODULES:
        return REAL_PROCESSES
    return module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return Units(config, log)


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
