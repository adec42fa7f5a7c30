"""Fixtures that start real processes and always stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Envoy, Heliostat, Process, Upstream, free_port, idle_vllm_metrics


@pytest.fixture(params=["sotw", "delta"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def upstreams() -> Iterator[Callable[..., Upstream]]:
    started: list[Upstream] = []

    def make(region: str, *, scraped: bool = True) -> Upstream:
        # `scraped`: it answers scrapes as an idle vLLM, healthy from heliostat's first scrape
        # on. With no page (404), failed scrapes mark every endpoint unhealthy within seconds,
        # and Envoy's panic mode then spreads requests over all priorities: a test whose
        # gateway came up slowly on a loaded machine saw its requests leave their region.
        metrics = idle_vllm_metrics() if scraped else None
        upstream = Upstream(free_port(), region, metrics=metrics).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every process a test starts goes in here and is stopped at the end, in reverse."""
    running: list[Process] = []
    yield running
    for process in reversed(running):
        process.stop()


@pytest.fixture
def start_heliostat(tmp_path: Path, processes: list[Process]) -> Callable[..., Heliostat]:
    def start(policy: Path, **kwargs: Any) -> Heliostat:
        heliostat = Heliostat(policy, tmp_path, **kwargs)
        processes.append(heliostat)
        heliostat.start()
        return heliostat

    return start


@pytest.fixture
def start_envoy(tmp_path: Path, processes: list[Process], mode: str) -> Callable[..., Envoy]:
    def start(heliostat: Heliostat, node_id: str, region: str, **kwargs: int) -> Envoy:
        envoy = Envoy(
            tmp_path, heliostat, node_id=node_id, region=region, delta=mode == "delta", **kwargs
        )
        processes.append(envoy)
        envoy.start()
        return envoy

    return start
