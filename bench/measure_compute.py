"""Time `compute` for 1,000 and 10,000 endpoints over three regions (not a test).

    .venv/bin/python -m bench.measure_compute

Three kinds of signals, each fresh every tick (scraped_at = now):

- constant: every endpoint keeps its readings (weights settle, then are held);
- jitter:   readings wobble by a few percent around a steady level every tick (production);
- swing:    every endpoint's load sweeps from idle to past saturation and back within 40 s,
            so most weights are republished on most ticks (the worst case).

Prints the median and the worst milliseconds of CPU per tick (process time: the machine is
shared), after a warm-up tick that builds every view from scratch.
"""

from __future__ import annotations

import statistics
import time

from heliostat.balance import ControlState, compute
from tests.balance.helpers import INTERVAL, MODEL, T0, Signals, addresses, policy_of, signal

TICKS = 20
KINDS = ("constant", "jitter", "swing")


def _signals(all_addresses: list[str], tick: int, now: float, kind: str) -> Signals:
    result: Signals = {}
    for index, address in enumerate(all_addresses):
        base = (index * 7) % 20 / 20  # 0 .. 0.95 of the thresholds
        if kind == "jitter":
            level = base * (1.0 + 0.04 * (((index + tick) % 5) - 2) / 2)
        elif kind == "swing":
            level = ((index * 7 + tick) % 20) / 16  # 0 .. 1.19
        else:
            level = base
        result[(MODEL, address)] = signal(
            address, waiting=4.0 * level, kv=0.8 * level, running=8.0, max_num_seqs=16, at=now
        )
    return result


def measure(total: int, kind: str) -> tuple[float, float]:
    third = total // 3
    policy = policy_of({"us-east": total - 2 * third, "eu-west": third, "ap-southeast": third})
    all_addresses = addresses(policy)
    state: ControlState | None = None
    times = []
    for tick in range(TICKS + 1):
        now = T0 + tick * INTERVAL
        signals = _signals(all_addresses, tick, now, kind)
        start = time.process_time()
        _views, state = compute(policy, signals, state, now)
        elapsed = (time.process_time() - start) * 1000
        if tick:  # the first tick builds every view from scratch
            times.append(elapsed)
    return statistics.median(times), max(times)


if __name__ == "__main__":
    for size in (1_000, 10_000):
        for kind in KINDS:
            median, worst = measure(size, kind)
            print(
                f"{size:>6} endpoints, signals {kind:<8}: median {median:6.1f} ms, "
                f"max {worst:6.1f} ms CPU per tick"
            )
