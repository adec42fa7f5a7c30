"""The settle gate: a delta stream's settling response waits until no stream has a change in
flight, so it never competes with the change's fan-out, and waits at most `longest_s`, so a
node that never ACKs holds the others back only that long."""

from __future__ import annotations

import asyncio

from heliostat.xds.grpc.settle import SettleGate


async def test_waiting_streams_settle_once_the_last_busy_stream_is_done() -> None:
    gate = SettleGate(longest_s=60.0)
    woken: list[str] = []
    gate.busy("a", True)
    gate.busy("b", True)
    gate.busy("a", False)
    gate.wait("a", lambda: woken.append("a"))
    gate.wait("a", lambda: woken.append("a again"))  # already waiting: one wake
    assert woken == [] and gate.waiting == 1
    gate.busy("b", False)
    assert woken == ["a"] and gate.waiting == 0


async def test_with_nothing_in_flight_a_stream_settles_at_once() -> None:
    gate = SettleGate(longest_s=60.0)
    woken: list[str] = []
    gate.wait("a", lambda: woken.append("a"))
    assert woken == ["a"]


async def test_a_stream_that_never_acks_holds_the_others_back_only_longest_s() -> None:
    gate = SettleGate(longest_s=0.05)
    woken = asyncio.Event()
    gate.busy("stuck", True)
    gate.wait("a", woken.set)
    await asyncio.wait_for(woken.wait(), timeout=5.0)
    assert gate.waiting == 0


async def test_a_busy_stream_that_ends_wakes_the_waiting_and_one_that_waited_is_dropped() -> None:
    gate = SettleGate(longest_s=60.0)
    woken: list[str] = []
    gate.busy("gone", True)
    gate.wait("a", lambda: woken.append("a"))
    gate.wait("b", lambda: woken.append("b"))
    gate.forget("b")  # ended while waiting: never woken
    gate.forget("gone")
    assert woken == ["a"]
