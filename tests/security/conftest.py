"""Real processes started by the security tests are stopped at the end (the integration
suite's fixture)."""

from tests.e2e.conftest import processes  # noqa: F401 (a fixture used here)
