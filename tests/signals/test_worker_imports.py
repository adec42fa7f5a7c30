"""The scrape worker's start is what `serve` waits for before it serves (and before a restarted
heliostat can resync its Envoys): it imports what its reads need, not the policy schema,
pydantic and every source that the `heliostat.signals` package names."""

from __future__ import annotations

import subprocess
import sys


def test_the_scrape_worker_imports_neither_the_policy_nor_pydantic() -> None:
    probe = (
        "import sys, heliostat.signals.worker; "
        "print(sorted({m.split('.')[0] if not m.startswith('heliostat') else m "
        "for m in sys.modules if m.startswith(('pydantic', 'yaml', 'heliostat.policy', "
        "'heliostat.signals.composite', 'heliostat.signals.from_policy'))}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert loaded == "[]"


def test_the_package_still_names_every_source() -> None:
    import heliostat.signals as signals

    for name in signals.__all__:
        assert getattr(signals, name) is not None, name
    assert signals.CompositeSource.__module__ == "heliostat.signals.composite"
