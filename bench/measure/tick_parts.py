"""Where one control tick's CPU goes, on bench/scale.py's case (not a test).

scale.json gives a tick's total; this splits it into the control law's per-endpoint pass
(`law._endpoints`, with the region peers, `column_peers`, inside it), the rest of
`compute`, the publish (`build_snapshot` for every group), and the garbage collector by
generation (gc callbacks: its time falls inside the parts above, so it is shown beside
them, not added). cProfile inflates a per-endpoint loop's calls several times over and
charges collections to whatever function allocated last; this does neither. The heap is
settled as serve does.

    .venv/bin/python -m bench.measure.tick_parts [ENDPOINTS VIEWS EVERY TICKS]

EVERY 1 is scale's full tick (every endpoint changes), 10 its incremental one.
"""

from __future__ import annotations

import collections
import functools
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from bench import scale
from heliostat.balance import capacity, law, overflow, static_views
from heliostat.balance import endpoints as endpoint_pass
from heliostat.runtime import control, heap
from heliostat.runtime import publisher as publishing
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup, Role

spent: collections.defaultdict[str, float] = collections.defaultdict(float)


def _timed(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - started

    setattr(owner, name, timed)


_started: dict[int, float] = {}


def _collector(phase: str, info: dict[str, int]) -> None:
    generation = info["generation"]
    if phase == "start":
        _started[generation] = time.process_time()
    else:
        spent[f"gc gen{generation}"] += time.process_time() - _started[generation]
        spent[f"gc gen{generation} runs"] += 1


# The law's parts that read every row (or every model) each tick, timed one by one; each
# includes what it calls (`advance` holds `_moving` and `_step_rows`).
_PARTS: tuple[tuple[Any, str], ...] = (
    (law, "_slots"),
    (law, "sample_reads"),
    (capacity, "read_samples"),
    (capacity, "observe_columns"),
    (law, "advance"),
    (endpoint_pass, "_moving"),
    (endpoint_pass, "_step_rows"),
    (law, "_derive"),
    (law, "_patched"),
    (law, "_set_live"),
    (law, "_supply"),
    (overflow, "step"),
)


def main(endpoints: int, views: int, every: int, ticks: int) -> None:
    _timed(law, "compute", "compute")
    _timed(law, "_endpoints", "compute: per-endpoint pass")
    _timed(law, "column_peers", "compute: per-endpoint pass: column_peers")
    _timed(publishing, "build_snapshot", "publish: build_snapshot")
    for owner, name in _PARTS:  # inside the per-endpoint pass, or beside it in `compute`
        _timed(owner, name, f"compute: part: {owner.__name__.rsplit('.', 1)[-1]}.{name}")
    control.compute = law.compute  # the loop calls the timed one
    policy = scale._policy(endpoints, views)
    fleet = scale._Fleet(policy, every)
    publisher = Publisher(SnapshotCache(), Inputs(policy, static_views(policy)))
    for region in sorted(policy.spec.regions):
        publisher.snapshot_for(NodeGroup(Role.GATEWAY, region), f"gw-{region}")
    loop = ControlLoop(publisher, fleet.signals, CollectorRegistry(), clock=fleet.clock)
    heap.settle()
    gc.callbacks.append(_collector)
    totals = []
    with scale._logging_as_serve():
        for tick in range(scale.WARMUP_TICKS + ticks):
            fleet.advance(tick)
            if tick == scale.WARMUP_TICKS:
                spent.clear()
            started = time.process_time()
            loop.tick()
            if tick >= scale.WARMUP_TICKS:
                totals.append((time.process_time() - started) * 1000)
    print(
        f"{endpoints} endpoints x {views} views, one in {every} changing: "
        f"median {statistics.median(totals):.1f} ms, mean {statistics.fmean(totals):.1f} ms "
        f"CPU per tick over {ticks}"
    )
    for label in sorted(spent):
        value = spent[label] / ticks
        shown = f"{value:8.1f} per tick" if label.endswith("runs") else f"{value * 1000:8.1f} ms"
        print(f"  {label:44} {shown}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]] or [10_000, 3, 10, 5]
    main(*args)
