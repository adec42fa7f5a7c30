"""One log format for structlog and the standard library's loggers; secrets never shown."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from heliostat import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_for_structlog_and_stdlib_with_stable_events() -> None:
    stream = io.StringIO()
    assert logs.configure("info", "auto", stream) == "json"  # not a terminal
    structlog.get_logger("heliostat.xds").info("push", node_id="gw-1", token="s3cret")
    logging.getLogger("heliostat.signals.polling").info(
        "scrape_recovered", extra={"endpoint": "127.0.0.1:9101", "failed_scrapes": 3}
    )
    structlog.get_logger("heliostat.xds").debug("ack")  # below the level
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "push" and first["level"] == "info"
    assert first["logger"] == "heliostat.xds" and first["node_id"] == "gw-1"
    assert first["token"] == "***"
    assert "timestamp" in first
    assert second["event"] == "scrape_recovered" and second["level"] == "info"
    assert second["logger"] == "heliostat.signals.polling"
    assert second["endpoint"] == "127.0.0.1:9101" and second["failed_scrapes"] == 3


def test_console_lines_and_debug_level() -> None:
    stream = io.StringIO()
    logs.configure("debug", "console", stream)
    structlog.get_logger("heliostat.xds").debug("ack", type="CDS")
    logging.getLogger("heliostat.sim.fleet").warning("sim_replica_stop_failed")
    lines = stream.getvalue().splitlines()
    assert "[debug" in lines[0] and "ack" in lines[0] and "type=CDS" in lines[0]
    assert "[warning" in lines[1] and "sim_replica_stop_failed" in lines[1]


def test_tracebacks_carry_no_local_variables() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    password = "hunter2"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("heliostat.control").exception("control_tick_failed")
    line = json.loads(stream.getvalue())
    assert line["event"] == "control_tick_failed"
    assert password not in stream.getvalue()
    assert line["exception"][0]["exc_type"] == "RuntimeError"


def test_configure_sets_the_level_of_heliostats_loggers_muted_before() -> None:
    # The planet mutes scrape failures (heliostat.planet.law.Scrapes); a later configure
    # (serve's, or another test's) must not inherit that: the first test above failed so
    # when it ran after a planet test in the same process.
    logging.getLogger("heliostat.signals.polling").setLevel(logging.ERROR)
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    logging.getLogger("heliostat.signals.polling").warning("scrape_failed")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == [
        "scrape_failed"
    ]


def test_records_go_to_the_stderr_of_the_moment_not_a_closed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that logs after a test's captured stderr was closed (a module-scoped server)
    wrote into the closed file: "I/O operation on closed file" in the suite's output."""
    logs.configure("info", "json")
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logging.getLogger("heliostat.test").info("before")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("heliostat.test").info("after")
    assert '"event": "after"' in second.getvalue()
