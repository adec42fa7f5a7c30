"""`heliostat demo` end to end: the real command, its real processes, its summary and signals.

The demo starts three simulated fleets, `heliostat serve` and three Envoys itself, so these
tests drive it only from outside, as a user or CI would: a subprocess, its output, its
summary file, and the process table.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.envoy

# The shortest story the demo accepts is 48 s (every phase at its floor); a little more.
DURATION = 50
STARTUP_BUDGET = 90  # start-up of 7 processes and the drain at the end, on a busy machine


def demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "heliostat", "demo", "--headless", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def children(pid: int) -> dict[int, str]:
    """pid -> command line of every live process whose parent is `pid` (from /proc)."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z":
            found[int(entry)] = cmdline.decode(errors="replace").strip()
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids to kill if a test fails half-way, so a broken demo cannot leak into the suite."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


# Long (run by .ci/run with HELIOSTAT_LONG=1): it keeps `make test` under 20 minutes, and it
# failed twice inside the full suite while passing every time alone (cause under study).
@pytest.mark.long
@pytest.mark.skipif(os.environ.get("HELIOSTAT_LONG") != "1", reason="long: set HELIOSTAT_LONG=1")
def test_a_short_headless_demo_judges_every_phase_ok(tmp_path: Path, reaper: list[int]) -> None:
    summary = tmp_path / "summary.json"
    process = demo("--duration", str(DURATION), "--summary", str(summary))
    reaper.append(process.pid)
    try:
        output, _ = process.communicate(timeout=DURATION + STARTUP_BUDGET)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the demo did not finish in time:\n{output}")
    print(output)
    result = json.loads(summary.read_text())
    assert set(result) == {"phases", "requests", "errors"}
    assert [p["name"] for p in result["phases"]] == ["steady", "surge", "outage", "recovery"]
    for phase in result["phases"]:
        assert set(phase) == {"name", "ok", "detail"}
        assert isinstance(phase["detail"], str) and phase["detail"]
    assert result["requests"] > 0
    # errors are the requests in flight when us-east's fleet was killed, nothing else
    assert 0 <= result["errors"] < 0.05 * result["requests"]
    failed = [p for p in result["phases"] if not p["ok"]]
    assert not failed, failed
    assert process.returncode == 0
    # headless: one line per phase as it begins, then the table
    for index, name in enumerate(["steady", "surge", "outage", "recovery"], start=1):
        assert f"phase {index}/4" in output
        assert any(line.startswith(name) and " ok " in line for line in output.splitlines())


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], marker: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return seen
    pytest.fail(f"no {marker!r} within {timeout}s; output so far:\n{''.join(seen)}")


def test_sigint_stops_every_process_the_demo_started(tmp_path: Path, reaper: list[int]) -> None:
    summary = tmp_path / "summary.json"
    process = demo("--duration", "60", "--summary", str(summary))
    reaper.append(process.pid)
    lines = _lines(process.stdout)
    _wait_for(lines, "phase 1/4", timeout=STARTUP_BUDGET)
    time.sleep(2)  # the load is flowing
    started = children(process.pid)
    reaper.extend(started)
    commands = list(started.values())
    print("children:", commands)
    assert sum("envoy" in c for c in commands) == 3
    assert sum(" serve " in c for c in commands) == 1
    assert sum(" sim fleet " in c for c in commands) == 3

    process.send_signal(signal.SIGINT)  # to the demo alone, not to its process group
    process.wait(timeout=60)
    rest = "".join(_drain(lines))
    print(rest)
    assert process.returncode == 130
    left = [pid for pid in started if alive(pid)]
    assert not left, {pid: started[pid] for pid in left}
    assert "stopped by SIGINT" in rest
    result = json.loads(summary.read_text())
    assert [p["name"] for p in result["phases"]] == ["steady", "surge", "outage", "recovery"]
    assert not result["phases"][-1]["ok"]
    assert "stopped by SIGINT" in result["phases"][-1]["detail"]


def _drain(lines: queue.Queue[str]) -> Iterator[str]:
    time.sleep(0.5)
    while True:
        try:
            yield lines.get_nowait()
        except queue.Empty:
            return
