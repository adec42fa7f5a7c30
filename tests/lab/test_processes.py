"""The lab's start-up: ports no outgoing connection can take, and a process that dies early
ends the wait at once with its log, instead of after the whole start-up budget."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from heliostat.lab import processes
from heliostat.lab.processes import Exited, Process, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    floor = processes._ephemeral_floor()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if floor > processes._LAB_PORTS_FLOOR + 1000:
        assert all(processes._LAB_PORTS_FLOOR <= p < floor for p in ports)
    for port in ports[:5]:  # each one can really be listened on
        with socket.socket() as sock:
            sock.bind((processes.LOCALHOST, port))
            sock.listen()


def test_a_port_something_listens_on_is_skipped() -> None:
    walk = processes._PortWalk(processes._LAB_PORTS_FLOOR, processes._ephemeral_floor())
    first = walk.take()
    assert first is not None
    with socket.socket() as taken:
        taken.bind((processes.LOCALHOST, first))
        taken.listen()
        walk.next = first - walk.floor  # the walk comes round to it again
        second = walk.take()
    assert second is not None and second != first


def test_a_process_that_exits_before_it_is_ready_fails_the_wait_at_once(tmp_path: Path) -> None:
    process = Process(
        [sys.executable, "-c", "import sys; print('cannot bind 127.0.0.1:1'); sys.exit(3)"],
        tmp_path / "dies.log",
    )
    process.start()
    began = time.monotonic()
    try:
        with pytest.raises(Exited) as caught:
            process.wait_started(lambda: False, "a dying process")
    finally:
        process.stop()
    assert time.monotonic() - began < 10  # not the 40 s start-up budget
    message = str(caught.value)
    assert "a dying process exited with code 3" in message
    assert "cannot bind 127.0.0.1:1" in message
    assert str(tmp_path / "dies.log") in message


def test_a_process_that_comes_up_ends_the_wait(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = Process(
        [
            sys.executable,
            "-c",
            f"import time, pathlib; pathlib.Path({str(ready)!r}).touch(); time.sleep(30)",
        ],
        tmp_path / "lives.log",
    )
    process.start()
    try:
        process.wait_started(ready.exists, "a living process")
        assert process.running
    finally:
        process.stop()
    assert not process.running
