"""The settle gate: a delta stream's settling response waits until no stream has a change in
flight, so it never competes with the change's fan-out, and waits at most `longest_s`, so a
node that never ACKs holds the others back only that long."""

from __future__ import annotations

import asyncio

from heliostat.xds.grpc.settle import SettleGate, StreamSettling


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


class _Stream:
    """What StreamSettling asks of a delta stream, set by the test."""

    def __init__(self) -> None:
        self.sending = False
        self.due = False

    def in_flight(self) -> bool:
        return self.sending

    def settle_due(self) -> bool:
        return self.due


async def test_a_stream_settles_only_once_its_endpoints_were_still_for_quiet_s() -> None:
    gate = SettleGate(longest_s=60.0, quiet_s=0.2)
    stream, woken = _Stream(), asyncio.Event()
    settling = StreamSettling(gate, stream, woken.set)
    stream.due = True  # its endpoints ACKed, an assignment pending
    settling.step()
    await asyncio.sleep(0.1)
    assert not woken.is_set()
    # Another endpoint change goes out: no longer due while it is in flight; the quiet
    # starts again from its ACK.
    stream.sending, stream.due = True, False
    settling.step()
    await asyncio.sleep(0.15)
    stream.sending, stream.due = False, True
    settling.step()
    settling.step()  # steps while due do not restart the quiet
    await asyncio.sleep(0.1)
    assert not woken.is_set()
    await asyncio.wait_for(woken.wait(), timeout=5.0)


async def test_with_no_quiet_a_due_stream_goes_to_the_gate_at_once_and_a_closed_one_never() -> None:
    woken: list[str] = []
    stream = _Stream()
    stream.due = True
    StreamSettling(SettleGate(quiet_s=0.0), stream, lambda: woken.append("now")).step()
    assert woken == ["now"]
    gate = SettleGate(quiet_s=0.05)
    closed = StreamSettling(gate, stream, lambda: woken.append("closed"))
    closed.step()
    closed.close()
    await asyncio.sleep(0.15)
    assert woken == ["now"] and gate.waiting == 0


async def test_changes_that_break_the_quiet_keep_one_timer_and_it_times_the_latest_stretch() -> (
    None
):
    """While endpoints move, every change breaks a stream's due stretch and its ACK starts
    another (twice per stream and change, at 1,000 streams): the loop keeps one timer per
    stream for it, not one made and cancelled each time, and the quiet still counts from
    the latest stretch."""
    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    gate = SettleGate(longest_s=60.0, quiet_s=0.2)
    stream, woken = _Stream(), asyncio.Event()
    settling = StreamSettling(gate, stream, woken.set)
    for _ in range(100):  # a change goes out, then its ACK: due again
        stream.sending, stream.due = True, False
        settling.step()
        stream.sending, stream.due = False, True
        settling.step()
    assert len(loop._scheduled) - before <= 1  # type: ignore[attr-defined]
    await asyncio.sleep(0.12)
    stream.sending, stream.due = True, False  # another change, 0.12 s into the quiet
    settling.step()
    stream.sending, stream.due = False, True
    settling.step()
    await asyncio.sleep(0.15)  # the first stretch's 0.2 s is over, the latest's is not
    assert not woken.is_set()
    await asyncio.wait_for(woken.wait(), timeout=5.0)
