"""The fault suite's world and its table.

Every fault test records a row (fault, requests sent, requests failed, a measured note);
the table is printed at the end of the run (tests/conftest.py gathers the rows from the test
reports) and, with HELIOSTAT_FAULT_TABLE=FILE, written as Markdown, so the numbers the issue
asks for come from the run itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple

import pytest

from tests.e2e.conftest import processes  # noqa: F401 (a fixture used here)
from tests.faults.table import PROPERTY, Row


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    request.node.user_properties.extend((PROPERTY, astuple(row)) for row in rows)
