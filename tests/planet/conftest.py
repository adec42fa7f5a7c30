"""Helpers shared by the planet's tests: small scenarios built in code."""

from __future__ import annotations

import os
from typing import Any

import pytest

from heliostat.planet.scenario import Scenario

# Tests marked slow (tens of seconds each) run only with PLANET_SLOW=1.
slow = pytest.mark.skipif(
    os.environ.get("PLANET_SLOW") != "1", reason="slow: set PLANET_SLOW=1 to run"
)


def scenario(**overrides: Any) -> Scenario:
    """A three-region planet small enough to play request by request (see the defaults)."""
    document: dict[str, Any] = {
        "name": "small",
        "duration": "10m",
        "step": "500ms",
        "gateways": 2,
        "model": {"engine": {"max_num_seqs": 64, "speed": 4, "num_gpu_blocks": 8192}},
        "regions": {
            "us-east": {"rtt_ms": {"eu-west": 80, "ap-southeast": 210}, "replicas": 3},
            "eu-west": {"rtt_ms": {"ap-southeast": 160}, "replicas": 2},
            "ap-southeast": {"replicas": 1},
        },
        "demand": {
            "us-east": {"curve": [40.0] * 24},
            "eu-west": {"curve": [25.0] * 24},
            "ap-southeast": {"curve": [15.0] * 24},
        },
        "policy": {"signals": {"interval": "2s", "stale_after": "6s"}},
    }
    document.update(overrides)
    return Scenario.model_validate(document)
