"""Each origin region's demand for a model: measured at its gateways, else from its engines.

**At the gateways.** Every gateway Envoy reports, over Envoy's load reporting service (LRS),
per cluster the requests it issued to each upstream locality and the requests it dropped.
heliostat turns those reports into a `GatewayLoad` (see `heliostat.xds.grpc.load_reports`): per
(model, origin region) the requests per second its gateways received for the model, served
anywhere or refused. That is the region's demand where it arises, whatever the shares in
effect: nothing needs to be taken back out, and a region with gateways and no GPUs (an edge)
has a demand too. Only gateways report: a sidecar in front of a replica would count the same
requests a second time.

**From the engines** (no fresh gateway report for a region): what arrives at the region's
endpoints, A_q (served + queue growth), is its own users' admitted traffic plus what others
send it under the shares published last tick:

    A_q = (1 - f_q) * k_q * D_q + sum over s != q of (1 - f_s) * S[s][q] * D_s

with k_q = 1 - sum_p S[q][p] the share q keeps and f_q its refused fraction. Solved for D_q
by a few fixed-point iterations, with the gateway-measured D_s held fixed. The division by
(1 - f_q) k_q amplifies noise when little is kept, so a region whose demand comes from its
engines always keeps at least MIN_KEPT of its users (the allocation's `max_sent`), and
refuses at most MAX_INFERRED_REFUSAL of them (`refusal`): nothing measures what it refused.

Either way the demand is then smoothed (EWMA, TAU_S): decisions follow the trend, not one
report. Except for a step: the gateways also report the rate over their newest reports
(about a second, `OriginLoad.recent`), and when it stands above the window's rate by more
than STEP_SIGMAS Poisson deviations (`stepped`), the rise is real, not noise, and is taken
at once: a flash crowd or a surge is planned for (shares, refusal) a second or two after it
starts, not once a 3 s average and a 2 s smoothing have caught up with it, by which time the
queues it built make every request late.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MIN_KEPT = 0.2
# Demand inferred from engines cannot see what the gateways refused; it trusts the refusal
# it published, which is unsafe if nothing answers it (the estimate would grow with the
# refusal that it causes). So a refusal sized from engine-inferred demand is capped here.
MAX_INFERRED_REFUSAL = 0.5
TAU_S = 2.0
# How far above the window's rate the newest reports' must stand to count as a step: the
# count over the newest second is Poisson around the window's rate if nothing changed, and
# 3 deviations happen by chance once in 700 ticks, upwards.
STEP_SIGMAS = 3.0
_ITERATIONS = 6
# The seconds of reports a gateway rate is averaged over, as both its producers average it
# (`heliostat.xds.grpc.load_reports.WINDOW_S` in serve, the planet's LoadWindow): a rate of
# lambda read over it deviates by sqrt(lambda / WINDOW_S) by chance (`refusal.surge`).
WINDOW_S = 3.0

GATEWAYS = "gateways"
ENGINES = "engines"
NONE = "none"


@dataclass(frozen=True, slots=True)
class OriginLoad:
    """One model's demand at one region's gateways, as their load reports tell it."""

    interactive: float  # requests/s for the model's interactive clusters (refused included)
    batch: float = 0.0  # requests/s for its batch cluster (refused included)
    refused: float = 0.0  # requests/s the gateways refused (drop_overloads)
    gateways: int = 1  # how many gateways reported
    at: float = 0.0  # wall-clock time of the newest report
    # Requests/s over the newest reports only (refused included, every cluster of the
    # model), and the seconds they cover: what `stepped` compares with the window's rate.
    recent: float | None = None
    recent_s: float = 0.0

    @property
    def total(self) -> float:
        return self.interactive + self.batch


def stepped(report: OriginLoad) -> float | None:
    """The newest reports' rate when it stands significantly above the window's (a step up
    in demand), else None (see the module docstring)."""
    if report.recent is None or report.recent_s <= 0.0:
        return None
    expected = report.total * report.recent_s  # requests the newest reports would hold
    seen = report.recent * report.recent_s
    if seen - expected > STEP_SIGMAS * max(1.0, expected) ** 0.5:
        return report.recent
    return None


@dataclass(frozen=True, slots=True)
class GatewayLoad:
    """What the gateways reported: compute's input for demand at its origin.

    `origins` is keyed by (model, region); `stale_after` says how old a report may be.
    """

    origins: Mapping[tuple[str, str], OriginLoad] = field(default_factory=dict)
    stale_after: float = 5.0

    def origin(self, model: str, region: str, now: float) -> OriginLoad | None:
        """The region's fresh report for the model, if any."""
        found = self.origins.get((model, region))
        if found is None or now - found.at > self.stale_after:
            return None
        return found


NO_GATEWAYS = GatewayLoad()


def from_engines(
    arrivals: Mapping[str, float],
    fixed: Mapping[str, float],
    shares: Mapping[str, Mapping[str, float]],
    refused: Mapping[str, float],
) -> dict[str, float]:
    """Every region's own demand: `fixed` where the gateways measured it, else solved from
    what arrives at its endpoints (`arrivals`, regions with live endpoints) as above."""
    regions = sorted(set(arrivals) | set(fixed))
    demand = {r: fixed.get(r, arrivals.get(r, 0.0)) for r in regions}
    for _ in range(_ITERATIONS):
        following = {}
        for q in regions:
            if q in fixed:
                following[q] = fixed[q]
                continue
            if q not in arrivals:
                following[q] = 0.0
                continue
            inflow = sum(
                (1.0 - min(MAX_INFERRED_REFUSAL, refused.get(s, 0.0)))
                * shares.get(s, {}).get(q, 0.0)
                * demand[s]
                for s in regions
                if s != q
            )
            admitted = 1.0 - min(MAX_INFERRED_REFUSAL, refused.get(q, 0.0))
            kept = (1.0 - sum(shares.get(q, {}).values())) * admitted
            following[q] = max(0.0, arrivals[q] - inflow) / max(MIN_KEPT, kept)
        demand = following
    return demand
