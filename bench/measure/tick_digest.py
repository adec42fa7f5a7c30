"""A digest of every resource a run of control ticks publishes (not a test).

A change to the tick's speed must leave its output alone: this runs bench/scale.py's fleet
(or a noisy one) through a ControlLoop wired as `serve` wires it, and after every tick
hashes each node group's resources (CDS, EDS, LDS, RDS and the delta form's EDS and LEDS
members: name and bytes, in name order) with sha256. Run it on two trees and compare the
lines; the tree is whichever `heliostat` PYTHONPATH finds:

    PYTHONPATH=. .venv/bin/python bench/measure/tick_digest.py 10000 3 10 6
    cd /work/main && PYTHONPATH=. .venv/bin/python /path/to/tick_digest.py 10000 3 10 6

Arguments: ENDPOINTS VIEWS EVERY TICKS [NOISE_SEED]. EVERY as in scale.py (1: every
endpoint changes, 10: one in ten). NOISE_SEED, when given, replaces the fleet's constant
readings with seeded random ones (queues, running, KV use, slots, failures, missing
readings, stale scrapes), so the rare paths of the law (the scalar step) run too.
"""

from __future__ import annotations

import hashlib
import random
import sys

from prometheus_client import CollectorRegistry

from bench import scale
from heliostat.balance import static_views
from heliostat.runtime import heap
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.signals import Signal
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup, Role
from heliostat.xds.resources.snapshot import Snapshot
from heliostat.xds.resources.types import PUSH_ORDER


class _NoisyFleet(scale._Fleet):
    """scale's fleet with seeded random readings: most endpoints hold theirs, some move,
    a few fail, lose a reading or go stale."""

    def __init__(self, policy: object, every: int, seed: int) -> None:
        super().__init__(policy, every)  # type: ignore[arg-type]
        self.random = random.Random(seed)
        self.last: dict[tuple[str, str], Signal] = {}

    def advance(self, tick: int) -> None:
        rnd = self.random
        self.now = scale.T0 + tick * scale.INTERVAL_S
        signals = {}
        for index, key in enumerate(self.keys):
            held = self.last.get(key)
            if held is not None and index % self.every != 0 and rnd.random() < 0.8:
                signals[key] = held  # the same sample again (no new scrape)
                continue
            roll = rnd.random()
            scraped = self.now - (scale.STALE_S if roll < 0.05 else rnd.random())
            served = scale.SERVED_PER_S * (scraped - scale.T0 + (index % 97)) * rnd.uniform(0.5, 1)
            signals[key] = Signal(
                model=key[0],
                address=key[1],
                engine="vllm",
                waiting=None if roll > 0.97 else float(rnd.choice((0, 0, 1, 2, 5, 20))),
                running=float(rnd.randint(0, 20)),
                kv_usage=rnd.choice((0.1, 0.3, 0.5, 0.8, 0.95, 1.0)),
                max_num_seqs=rnd.choice((8, 16, 16, 32)),
                scraped_at=scraped,
                served_total=served,
                served_rate=scale.SERVED_PER_S * rnd.uniform(0.2, 2.0),
                error="timeout" if 0.05 <= roll < 0.07 else None,
                consecutive_failures=rnd.randint(1, 4) if 0.05 <= roll < 0.07 else 0,
            )
        self.last = signals
        self.current = signals


def _digest(snapshot: Snapshot) -> str:
    found = hashlib.sha256()
    for form in (snapshot, snapshot.for_delta()):
        for type_url in PUSH_ORDER:
            for name, resource in sorted(form.resources(type_url).items()):
                found.update(name.encode())
                found.update(resource.packed.value)
    return found.hexdigest()


def main(endpoints: int, views: int, every: int, ticks: int, seed: int | None) -> None:
    policy = scale._policy(endpoints, views)
    fleet = scale._Fleet(policy, every) if seed is None else _NoisyFleet(policy, every, seed)
    cache = SnapshotCache()
    publisher = Publisher(cache, Inputs(policy, static_views(policy)), leds=True)
    groups = [NodeGroup(Role.GATEWAY, region) for region in sorted(policy.spec.regions)]
    for group in groups:
        publisher.snapshot_for(group, f"gw-{group.region}")
    loop = ControlLoop(publisher, fleet.signals, CollectorRegistry(), clock=fleet.clock)
    heap.settle()
    whole = hashlib.sha256()
    with scale._logging_as_serve():
        for tick in range(ticks):
            fleet.advance(tick)
            loop.tick()
            for group in groups:
                snapshot = cache.get(group)
                digest = _digest(snapshot) if snapshot is not None else "none"
                whole.update(digest.encode())
                print(f"tick {tick} {group.region} {digest}")
    print(f"all {whole.hexdigest()}")


if __name__ == "__main__":
    numbers = [int(a) for a in sys.argv[1:]]
    main(*numbers[:4], numbers[4] if len(numbers) > 4 else None)
