"""A region's planning capacity: a late backlog drains within DRAIN_S, or the SLO if longer."""

from __future__ import annotations

import pytest

from heliostat.balance.overflow import (
    DRAIN_S,
    QUEUE_SHARE,
    UTILISATION,
    drain_time,
    planning_capacity,
)

RAW = 8.0  # requests/s
TTFT = 0.5


def test_a_backlog_the_slo_tolerates_costs_no_capacity() -> None:
    tolerated = RAW * QUEUE_SHARE * TTFT
    assert planning_capacity(RAW, tolerated, TTFT, 1.0) == UTILISATION * RAW


def test_a_late_backlog_drains_within_the_drain_time() -> None:
    tolerated = RAW * QUEUE_SHARE * TTFT
    slack = (1.0 - UTILISATION) * RAW  # what the plan leaves free drains it too
    assert planning_capacity(RAW, tolerated + 4.0, TTFT, 1.0) == pytest.approx(
        UTILISATION * RAW - (4.0 - slack)
    )
    assert planning_capacity(RAW, tolerated + 4.0, TTFT, 4.0) == pytest.approx(
        UTILISATION * RAW - (1.0 - slack)
    )
    assert planning_capacity(RAW, 1000.0, TTFT, 1.0) == 0.0


def test_a_backlog_the_plans_slack_drains_in_time_costs_no_capacity() -> None:
    """A pool planned to half its capacity drains 4 late requests within 1 s by itself."""
    tolerated = RAW * QUEUE_SHARE * TTFT
    assert planning_capacity(RAW, tolerated + 4.0, TTFT, 1.0, 0.5) == pytest.approx(0.5 * RAW)
    assert planning_capacity(RAW, tolerated + 6.0, TTFT, 1.0, 0.5) == pytest.approx(0.5 * RAW - 2.0)


def test_the_drain_time_is_the_slo_when_it_is_longer() -> None:
    assert drain_time(DRAIN_S + 2.0) == DRAIN_S + 2.0
    assert drain_time(0.5) == DRAIN_S
