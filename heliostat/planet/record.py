"""What one policy's run of a scenario measured: totals, per-region time series, histograms.

Every request the users offer ends in exactly one of: served (it got a first token, in some
region, at some time to first token as the user sees it: network round trips included),
refused (a fast 503 at the gateway: drop_overloads, a tripped circuit breaker, no healthy
upstream) or failed (it was sent and broke: a dead replica, a 500, retries exhausted).
Refused and failed requests count as missed SLOs in `slo_attainment`; `admitted_within_slo`
is over served requests only.

The fluid engine records masses (expected request counts) with their TTFT distribution
(exact SLO attainment from its CDF; percentiles from a few stratified points per flow); the
discrete engine records each request once. Both fill the same record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_BINS_PER_DECADE = 40
_LOW_S = 0.001
_BINS = 6 * _BINS_PER_DECADE  # 1 ms .. 1000 s
_LOG_LOW = math.log10(_LOW_S)


class Histogram:
    """Request masses over log-spaced TTFT bins (40 per decade, 1 ms to 1000 s)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0.0] * (_BINS + 1)
        self.total = 0.0

    def add(self, seconds: float, mass: float) -> None:
        if seconds <= _LOW_S:
            index = 0
        else:
            index = min(_BINS, int((math.log10(seconds) - _LOG_LOW) * _BINS_PER_DECADE))
        self.counts[index] += mass
        self.total += mass

    def merge(self, other: Histogram) -> None:
        for i, v in enumerate(other.counts):
            self.counts[i] += v
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """Seconds at quantile q (the bin's geometric middle), None when empty."""
        if self.total <= 0:
            return None
        goal = q * self.total
        acc = 0.0
        for i, v in enumerate(self.counts):
            acc += v
            if acc >= goal and v > 0:
                return float(10 ** (_LOG_LOW + (i + 0.5) / _BINS_PER_DECADE))
        return float(10 ** (_LOG_LOW + (_BINS + 0.5) / _BINS_PER_DECADE))


@dataclass
class Totals:
    offered: float = 0.0
    served: float = 0.0
    refused: float = 0.0
    failed: float = 0.0
    met: float = 0.0  # served within the end-to-end SLO
    served_remote: float = 0.0  # served in another region than the users'
    beyond_budget: float = 0.0  # served across more RTT than the network budget

    def add(self, other: Totals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RegionBucket:
    """One region in one time bucket: its users' requests, and what its GPUs did."""

    users: Totals = field(default_factory=Totals)
    lent: float = 0.0  # other regions' users served here
    hist: Histogram = field(default_factory=Histogram)
    busy_s: float = 0.0  # replica-seconds of work done here (completions / capacity)
    replica_s: float = 0.0  # replica-seconds allocated here
    serving_s: float = 0.0  # replica-seconds serving here


@dataclass(frozen=True, slots=True)
class StepSample:
    """A fine sample around an event: what the users of the event's region saw in one
    step (masses), and the work offered to dead replicas."""

    t: float
    offered: float
    failed: float
    refused: float
    to_dead: float
    beyond_budget: float
    met: float


class Record:
    """One policy, one scenario."""

    def __init__(self, regions: Iterable[str], duration: float, bucket_s: float) -> None:
        self.regions = sorted(regions)
        self.duration = duration
        self.bucket_s = bucket_s
        self.buckets = math.ceil(duration / bucket_s) or 1
        self.series: dict[str, list[RegionBucket]] = {
            r: [RegionBucket() for _ in range(self.buckets)] for r in self.regions
        }
        self.hist = Histogram()
        self.hist_in_region = Histogram()  # server-side TTFT of requests served at home
        self.totals = Totals()
        self.ticks: list[float] = []
        self.events: dict[str, list[StepSample]] = {}
        self.notes: dict[str, Any] = {}
        self.gpu_s = 0.0  # GPU-seconds allocated
        self.busy_gpu_s = 0.0

    def bucket(self, region: str, t: float) -> RegionBucket:
        index = min(self.buckets - 1, int(t / self.bucket_s))
        return self.series[region][index]

    # -- requests ----------------------------------------------------------------------------

    def offered(self, origin: str, t: float, mass: float) -> None:
        self.totals.offered += mass
        self.bucket(origin, t).users.offered += mass

    def refused(self, origin: str, t: float, mass: float) -> None:
        self.totals.refused += mass
        self.bucket(origin, t).users.refused += mass

    def failed(self, origin: str, t: float, mass: float) -> None:
        self.totals.failed += mass
        self.bucket(origin, t).users.failed += mass

    def served(
        self,
        origin: str,
        region: str,
        t: float,
        mass: float,
        met: float,
        points: Iterable[tuple[float, float]],
        *,
        beyond_budget: bool,
        server_points: Iterable[tuple[float, float]] = (),
        weight: float = 1.0,
    ) -> None:
        """`mass` requests of `origin`'s users served in `region`; `met` of them in the SLO;
        `points`: (TTFT seconds as the user sees it, share of the mass), standing for
        `weight` times this mass (a sampled step stands for the steps around it)."""
        users = self.bucket(origin, t)
        for totals in (self.totals, users.users):
            totals.served += mass
            totals.met += met
            if region != origin:
                totals.served_remote += mass
            if beyond_budget:
                totals.beyond_budget += mass
        if region != origin:
            self.bucket(region, t).lent += mass
        hist, local = self.hist, users.hist
        scaled = mass * weight
        for seconds, share in points:
            hist.add(seconds, scaled * share)
            local.add(seconds, scaled * share)
        if region == origin:
            for seconds, share in server_points:
                self.hist_in_region.add(seconds, scaled * share)

    # -- GPUs --------------------------------------------------------------------------------

    def gpus(
        self,
        region: str,
        t: float,
        dt: float,
        allocated: int,
        serving: int,
        busy: float,
        gpus_per_replica: int,
    ) -> None:
        """`busy`: replica-seconds of work done in this step (completions / capacity)."""
        bucket = self.bucket(region, t)
        bucket.replica_s += allocated * dt
        bucket.serving_s += serving * dt
        bucket.busy_s += busy
        self.gpu_s += allocated * dt * gpus_per_replica
        self.busy_gpu_s += busy * gpus_per_replica

    def sample(self, event: str, sample: StepSample) -> None:
        self.events.setdefault(event, []).append(sample)

    # -- summaries ---------------------------------------------------------------------------

    def summary(self, slo_s: float) -> dict[str, Any]:
        t = self.totals
        offered = max(t.offered, 1e-12)
        p50, p99 = self.hist.quantile(0.5), self.hist.quantile(0.99)
        in_region = self.hist_in_region.quantile(0.99)
        return {
            "slo_attainment": round(t.met / offered, 6),
            "admitted_within_slo": round(t.met / t.served, 6) if t.served else None,
            "goodput_rps": round(t.met / self.duration, 3),
            "offered_rps": round(t.offered / self.duration, 3),
            "refused_share": round(t.refused / offered, 6),
            "failed_share": round(t.failed / offered, 6),
            "cross_region_share": round(t.served_remote / t.served, 6) if t.served else 0.0,
            "beyond_budget_share": round(t.beyond_budget / t.served, 6) if t.served else 0.0,
            "ttft_p50_ms": round(1000 * p50, 1) if p50 is not None else None,
            "ttft_p99_ms": round(1000 * p99, 1) if p99 is not None else None,
            "ttft_in_region_p99_ms": round(1000 * in_region, 1) if in_region else None,
            "gpu_hours": round(self.gpu_s / 3600.0, 2),
            "gpu_utilisation": round(self.busy_gpu_s / self.gpu_s, 4) if self.gpu_s else 0.0,
            "requests": round(t.offered),
            "slo_s": slo_s,
        }

    def by_origin(self) -> dict[str, dict[str, Any]]:
        result = {}
        for region, buckets in self.series.items():
            totals = Totals()
            hist = Histogram()
            for b in buckets:
                totals.add(b.users)
                hist.merge(b.hist)
            if totals.offered <= 0:
                continue
            p99 = hist.quantile(0.99)
            result[region] = {
                "requests": round(totals.offered),
                "slo_attainment": round(totals.met / totals.offered, 6),
                "refused_share": round(totals.refused / totals.offered, 6),
                "failed_share": round(totals.failed / totals.offered, 6),
                "cross_region_share": round(totals.served_remote / totals.served, 6)
                if totals.served
                else 0.0,
                "ttft_p99_ms": round(1000 * p99, 1) if p99 is not None else None,
            }
        return result

    def timeseries(self) -> dict[str, Any]:
        """Per region per bucket, for plots and report.json."""
        out: dict[str, Any] = {"bucket_s": self.bucket_s, "regions": {}}
        for region, buckets in self.series.items():
            rows: dict[str, list[Any]] = {
                "offered_rps": [],
                "served_local_rps": [],
                "borrowed_rps": [],
                "lent_rps": [],
                "refused_rps": [],
                "failed_rps": [],
                "slo_attainment": [],
                "ttft_p50_ms": [],
                "ttft_p99_ms": [],
                "gpu_utilisation": [],
                "replicas": [],
            }
            for b in buckets:
                u = b.users
                rows["offered_rps"].append(round(u.offered / self.bucket_s, 2))
                local = u.served - u.served_remote
                rows["served_local_rps"].append(round(local / self.bucket_s, 2))
                rows["borrowed_rps"].append(round(u.served_remote / self.bucket_s, 2))
                rows["lent_rps"].append(round(b.lent / self.bucket_s, 2))
                rows["refused_rps"].append(round(u.refused / self.bucket_s, 2))
                rows["failed_rps"].append(round(u.failed / self.bucket_s, 2))
                rows["slo_attainment"].append(round(u.met / u.offered, 5) if u.offered else None)
                p50, p99 = b.hist.quantile(0.5), b.hist.quantile(0.99)
                rows["ttft_p50_ms"].append(round(1000 * p50, 1) if p50 else None)
                rows["ttft_p99_ms"].append(round(1000 * p99, 1) if p99 else None)
                util = b.busy_s / b.replica_s if b.replica_s else None
                rows["gpu_utilisation"].append(round(util, 4) if util is not None else None)
                rows["replicas"].append(round(b.replica_s / self.bucket_s, 2))
            out["regions"][region] = rows
        return out
