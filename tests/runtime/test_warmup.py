"""Endpoints withheld until the first signal round: the decision (`FirstRound`) and the
publisher's part (withheld types, and telling every watching stream when they are released)."""

from __future__ import annotations

import time
from pathlib import Path

from heliostat.runtime.publisher import Publisher
from heliostat.runtime.warmup import SLACK_S, FirstRound
from heliostat.serve import ControlPlane, ServeOptions
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import TypeUrl
from tests.runtime.test_control_and_publisher import GROUP, inputs, policy_of


def test_the_first_round_completes_when_every_model_has_landed_once() -> None:
    first = FirstRound({"llama", "qwen"}, bound_s=1.5, started_at=100.0)
    assert not first.done and first.awaited == {"llama", "qwen"}
    assert first.landed("llama") is False
    assert first.landed("llama") is False  # a second round of the same model is not qwen's
    assert first.landed("qwen") is True
    assert first.done and first.reason == "first signal round landed"
    assert first.landed("qwen") is False  # once
    assert first.expire(200.0) is False


def test_the_bound_releases_what_is_still_awaited_once() -> None:
    first = FirstRound({"llama", "qwen"}, bound_s=1.5, started_at=100.0)
    first.landed("llama")
    assert first.expire(101.4) is False
    assert first.expire(101.5) is True
    assert first.done and "qwen" in first.reason and "llama" not in first.reason
    assert first.expire(102.0) is False
    assert first.landed("qwen") is False


def test_nothing_scraped_means_nothing_to_wait_for() -> None:
    assert FirstRound(set(), bound_s=1.5, started_at=0.0).done


def test_release_tells_every_watching_stream_once_and_withholds_nothing_after() -> None:
    publisher = Publisher(SnapshotCache(), inputs(policy_of("llama")))
    publisher.withhold(frozenset({TypeUrl.ENDPOINT}))
    assert publisher.withheld() == {TypeUrl.ENDPOINT}
    current = publisher.snapshot_for(GROUP, "gw-1")
    seen: list[Snapshot] = []
    gone: list[Snapshot] = []
    publisher.watch(GROUP, seen.append)
    stop = publisher.watch(GROUP, gone.append)
    stop()  # a stream that ended is not told
    publisher.release()
    assert publisher.withheld() == frozenset()
    assert seen == [current] and gone == []
    publisher.release()  # nothing withheld: nobody is told again
    assert seen == [current]


def _plane(tmp_path: Path, *models: str) -> ControlPlane:
    path = tmp_path / "p.yaml"
    path.write_text("# the policy the watcher would read; the plane is given it parsed\n")
    return ControlPlane(ServeOptions(policy_path=path), policy_of(*models))


def test_serve_withholds_endpoints_until_every_model_has_landed_then_ticks_and_releases(
    tmp_path: Path,
) -> None:
    plane = _plane(tmp_path, "llama", "qwen")
    assert plane.publisher.withheld() == {TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT}
    assert plane.first_round.deadline - time.monotonic() <= 0.1 + SLACK_S  # timeout 0.1s
    ticks = plane.control.ticks
    plane._round_landed("llama")
    assert plane.publisher.withheld() == {TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT}
    assert plane.control.ticks == ticks  # the loop is woken, not ticked here
    plane._round_landed("qwen")
    assert plane.publisher.withheld() == frozenset()
    assert plane.control.ticks == ticks + 1  # the released views are the first round's
    state = plane.state()["first_round"]
    assert state == {
        "done": True,
        "reason": "first signal round landed",
        "awaited": [],
        "withheld": [],
    }


def test_serve_releases_endpoints_when_the_first_round_is_overdue(tmp_path: Path) -> None:
    plane = _plane(tmp_path, "llama")
    plane._first_round_overdue()  # before the bound: nothing
    assert plane.publisher.withheld() == {TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT}
    plane.first_round.deadline = time.monotonic()
    plane._first_round_overdue()
    assert plane.publisher.withheld() == frozenset()
    assert "still awaited: llama" in plane.first_round.reason
