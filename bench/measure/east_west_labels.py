"""What the east-west hop's endpoint region labels cost a tick, on bench/scale.py's case.

Three cases, interleaved: the fleet policy without east-west addresses (`plain`), with an
address for every region (`hop`: other regions listed by their gateways, every endpoint
labelled `envoy.lb: {region}`), and the same with the labels forced off (`hop_nolabel`).
Full ticks (every endpoint changes) and incremental ones (every tenth), CPU ms (min and
median over the repeats) and EDS bytes per view. Not a test.

    PYTHONPATH=. .venv/bin/python -m bench.measure.east_west_labels [ENDPOINTS VIEWS TICKS]
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from bench import scale
from heliostat.policy import Policy
from heliostat.xds.translate import memo as memo_mod


def main(endpoints: int = 10_000, views: int = 3, ticks: int = 6) -> None:
    document: Any = scale.fleet_policy(endpoints, views)
    plain = Policy.model_validate(document)
    for index, spec in enumerate(document["spec"]["regions"].values()):
        spec["east_west"] = [f"127.0.0.{index + 2}:15443"]
    hop = Policy.model_validate(document)
    real = memo_mod.TranslationMemo.label_regions

    def off(self: memo_mod.TranslationMemo, on: bool) -> None:
        real(self, False)

    rows: dict[tuple[int, str], list[scale.TickCost]] = {}
    try:
        for _ in range(2):
            for every in (1, 10):
                for case in ("plain", "hop", "hop_nolabel"):
                    memo_mod.TranslationMemo.label_regions = (  # type: ignore[method-assign]
                        off if case == "hop_nolabel" else real
                    )
                    cost = scale.measure(plain if case == "plain" else hop, ticks, every)
                    rows.setdefault((every, case), []).append(cost)
    finally:
        memo_mod.TranslationMemo.label_regions = real  # type: ignore[method-assign]
    for (every, case), costs in rows.items():
        cpu = [c.cpu_ms for c in costs]
        print(
            f"every={every} {case}: cpu min {min(cpu):.1f} median {statistics.median(cpu):.1f}"
            f" ms, eds bytes/view {costs[0].eds_bytes_per_view}"
        )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
