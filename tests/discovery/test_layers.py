"""Discovery is an input: the pure core never imports the Kubernetes client."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "heliostat.policy",
    "heliostat.balance",
    "heliostat.xds.translate",
    "heliostat.discovery.slices",
    "heliostat.discovery.source",
    "heliostat.discovery.crd",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_not_load_the_kubernetes_client(module: str) -> None:
    code = f"import sys, {module}; print(any(m.split('.')[0] == 'kubernetes' for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_resource_manifest_validates_as_a_policy_file() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "heliostat", "validate", "manifests/base/policy.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: policy 'global'" in done.stdout
