"""The fuzz group (`-m fuzz`): hypothesis against every input heliostat reads from outside.

Each test states its case count; together they run over 10,000 inputs. The per-input
deadline is the issue's "no hang over 5 s"; examples are not stored (no .hypothesis database
written by CI runs) and the seed is derived from the test, so a CI failure reproduces.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    deadline=5000,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cases(n: int) -> settings:
    """`n` examples under the fuzz profile."""
    return settings(settings.get_profile("fuzz"), max_examples=n)
