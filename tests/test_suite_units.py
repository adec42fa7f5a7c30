"""`make test`'s two workers keep every real-process test in one unit (tests/conftest.py):
a module that starts Envoy, `heliostat serve` or other processes but is missing from the
list would run beside another such test and share its timing, so the list is checked here."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REAL_PROCESS_DIRS, REAL_PROCESS_MODULES, REAL_PROCESSES, unit_of

ROOT = Path(__file__).resolve().parent.parent
# What starting a real process looks like in a test module: the lab's processes and
# fixtures, a subprocess left running, or the `envoy` mark.
STARTS_PROCESSES = re.compile(
    r"\b(Popen|create_subprocess_exec|start_mesh|start_stack|Heliostat\(|EnvoyProcess\("
    r"|Envoy\(|SimFleet\(|start_heliostat|start_envoy)|mark\.envoy"
)


def test_every_module_that_starts_processes_runs_in_the_real_process_unit() -> None:
    starting = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("test_*.py")
        if path != Path(__file__).resolve() and STARTS_PROCESSES.search(path.read_text())
    }
    outside = {m for m in starting if not m.startswith(REAL_PROCESS_DIRS)}
    assert outside, "the pattern finds nothing: it no longer matches how tests start processes"
    assert outside <= REAL_PROCESS_MODULES, sorted(outside - REAL_PROCESS_MODULES)
    assert all(unit_of(f"{m}::test") == REAL_PROCESSES for m in starting)
    assert unit_of("tests/balance/test_law.py::test_x") == "tests/balance/test_law.py"
