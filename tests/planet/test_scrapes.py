"""The planet's scrapes record a failure as serve does, without serve's warning, and leave
the process's loggers alone (muting `heliostat.signals.polling` once silenced every later
test's scrape warnings)."""

from __future__ import annotations

import logging

import pytest

from heliostat.planet.law import Scrapes

KEY = ("llama", "127.0.0.1:9101")


def test_a_failed_scrape_is_recorded_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="heliostat.signals.polling")
    scrapes = Scrapes()
    scrapes.failed(KEY, "refused")
    scrapes.failed(KEY, "refused")
    signal = scrapes.signals()[KEY]
    assert signal.error == "refused"
    assert signal.consecutive_failures == 2
    assert not [r for r in caplog.records if r.name == "heliostat.signals.polling"]
    assert logging.getLogger("heliostat.signals.polling").level == logging.INFO
