"""Recompute cost of one control tick: the control law, translation and serialization.

    .venv/bin/python -m bench.tick_cost [ENDPOINTS ...]

For each size: a policy with that many endpoints over three regions, signals for every
endpoint fresh each tick; a tick is `compute` plus `build_snapshot` (translate + serialize
+ content-hash) for the gateway group of every region. "full" changes every endpoint's
signal each tick (every weight moves), "incremental" changes 10% of them. Median process
time of 10 ticks after a warm-up. A report, not a test: it asserts nothing.
"""

from __future__ import annotations

import statistics
import sys
import time

from heliostat.balance import ControlState, compute
from heliostat.xds import memo
from heliostat.xds.nodes import NodeGroup, Role
from heliostat.xds.translate import build_snapshot
from tests.balance.helpers import INTERVAL, MODEL, T0, Signals, addresses, policy_of, signal

TICKS = 10


def _signals(all_addresses: list[str], tick: int, now: float, changed_share: float) -> Signals:
    result: Signals = {}
    moving = max(1, int(len(all_addresses) * changed_share))
    for index, address in enumerate(all_addresses):
        phase = tick if index < moving else 0
        level = ((index * 7 + 3 * phase) % 20) / 16
        result[(MODEL, address)] = signal(
            address, waiting=4.0 * level, kv=0.8 * level, running=8.0, max_num_seqs=16, at=now
        )
    return result


def measure(total: int, changed_share: float) -> float:
    third = total // 3
    policy = policy_of({"us-east": total - 2 * third, "eu-west": third, "ap-southeast": third})
    all_addresses = addresses(policy)
    groups = [NodeGroup(Role.GATEWAY, region) for region in sorted(policy.spec.regions)]
    state: ControlState | None = None
    times = []
    for tick in range(TICKS + 1):
        now = T0 + tick * INTERVAL
        signals = _signals(all_addresses, tick, now, changed_share)
        start = time.process_time()
        memo.new_round()  # as the publisher does once per tick
        views, state = compute(policy, signals, state, now)
        for group in groups:
            build_snapshot(policy, views.for_region(group.region), group)
        if tick:
            times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def main(sizes: list[int]) -> None:
    print(f"{'endpoints':>10} {'views':>6} {'full ms':>9} {'incremental ms':>15}")
    for total in sizes:
        full = measure(total, 1.0)
        incremental = measure(total, 0.1)
        print(f"{total:>10} {3:>6} {full:>9.1f} {incremental:>15.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
