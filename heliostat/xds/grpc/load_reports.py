"""Gateway load reports (Envoy LRS) -> each origin region's demand, as compute's input.

Every gateway Envoy streams `LoadStatsRequest`s to heliostat (`heliostat.xds.grpc.server`): per
cluster, per upstream locality (and, as heliostat asks, per endpoint) the requests it issued,
completed, failed and has in flight since its last report, the requests it dropped
(drop_overloads), and the interval they were counted over. This module keeps the recent
reports of every gateway and turns them into a `balance.GatewayLoad`:

- **Demand per (model, origin region)**: the requests the region's gateways issued to the
  model's clusters plus those they dropped, per second over the last WINDOW_S, and over the
  reports of the last RECENT_S alone (a step in demand shows there first). A cluster
  belongs to a model by heliostat's own names: `<model>`, `<model>.batch` (the batch part),
  and what the traffic policy derives from them (`~<tenant>`, `@<version>`).
- **Answers per endpoint** (for /debug/state): what the gateways saw each endpoint answer
  successfully. Not a service rate: Envoy counts a success when the response headers
  arrive, which for a stream is when the server accepts it.

Only gateways count. A request enters the planet at exactly one gateway, which reports it
once, whichever region serves it. A sidecar in front of a replica would see the same request
again, so sidecars are not asked for reports (see the server) and anything they send is
ignored here. An issued request that was retried counts once per attempt.

Pure: time is an argument; the server feeds it, the control loop reads it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2

from heliostat.balance.assemble import BATCH_SUFFIX
from heliostat.balance.demand import GatewayLoad, OriginLoad
from heliostat.wire import TENANT_SEPARATOR, VERSION_SEPARATOR
from heliostat.xds.resources.nodes import Role

WINDOW_S = 3.0  # rates are averaged over the reports of the last few seconds
# ... and also taken over the newest second alone, for the law to tell a step in demand from
# noise (`balance.demand.stepped`).
RECENT_S = 1.0
STALE_AFTER_S = 5.0  # a gateway silent this long no longer speaks for its region


@dataclass(frozen=True, slots=True)
class _Report:
    """One cluster of one report: counts over `interval` seconds, received at `at`."""

    at: float
    interval: float
    issued: int
    dropped: int
    served: Mapping[str, int]  # endpoint address -> successful requests
    by_locality: Mapping[str, int] = field(default_factory=dict)  # region -> issued


@dataclass
class _Gateway:
    region: str
    clusters: dict[str, deque[_Report]]
    last: float = 0.0
    reports: int = 0


def cluster_model(cluster: str, models: Iterable[str]) -> tuple[str, bool] | None:
    """(model, is batch) of one of heliostat's cluster names, None for anything else."""
    base = cluster.partition(VERSION_SEPARATOR)[0].partition(TENANT_SEPARATOR)[0]
    known = set(models)
    if base in known:
        return base, False
    if base.endswith(BATCH_SUFFIX) and base[: -len(BATCH_SUFFIX)] in known:
        return base[: -len(BATCH_SUFFIX)], True
    return None


class LoadReports:
    """The recent load reports of every gateway (sans-I/O; see the module docstring)."""

    def __init__(
        self, window: float = WINDOW_S, stale_after: float = STALE_AFTER_S, recent: float = RECENT_S
    ) -> None:
        self.window = window
        self.recent = recent
        self.stale_after = stale_after
        self._gateways: dict[str, _Gateway] = {}
        self.ignored = 0  # reports from sidecars or nodes without a region
        self.served: dict[tuple[str, str], float] = {}

    def ingest(
        self,
        node_id: str,
        region: str | None,
        role: Role,
        request: lrs_pb2.LoadStatsRequest,
        at: float,
    ) -> None:
        """Remember one report of a node (received at `at`, wall-clock seconds)."""
        if role is not Role.GATEWAY or not region:
            self.ignored += 1
            return
        gateway = self._gateways.get(node_id)
        if gateway is None or gateway.region != region:
            gateway = self._gateways[node_id] = _Gateway(region, {})
        gateway.last = at
        gateway.reports += 1
        for stats in request.cluster_stats:
            interval = stats.load_report_interval.ToTimedelta().total_seconds()
            if interval <= 0:
                continue
            reports = gateway.clusters.setdefault(stats.cluster_name, deque())
            reports.append(_Report(at, interval, *_counts(stats)))
        self._expire(at)

    def forget(self, node_id: str) -> None:
        """A gateway's stream ended: its reports no longer speak for its region."""
        self._gateways.pop(node_id, None)

    def _expire(self, now: float) -> None:
        for node_id, gateway in list(self._gateways.items()):
            if now - gateway.last > self.stale_after:
                del self._gateways[node_id]
                continue
            for reports in gateway.clusters.values():
                while reports and now - reports[0].at > self.window:
                    reports.popleft()

    def load(self, models: Iterable[str], now: float, east_west: Iterable[str] = ()) -> GatewayLoad:
        """Demand per (model, origin region) and completions per endpoint, per second.

        `east_west`: the regions other regions reach through their east-west gateways. What
        other regions' gateways issued to such a region's locality came through its
        east-west listener into its model cluster, and its own gateways report it again:
        it is taken off that region's demand (counted once, at the origin)."""
        hops = set(east_west)
        self._expire(now)
        names = sorted(set(models))
        interactive: dict[tuple[str, str], float] = {}
        batch: dict[tuple[str, str], float] = {}
        refused: dict[tuple[str, str], float] = {}
        reporters: dict[tuple[str, str], set[str]] = {}
        newest: dict[tuple[str, str], float] = {}
        served: dict[tuple[str, str], float] = {}
        recent: dict[tuple[str, str], float] = {}
        recent_s: dict[tuple[str, str], float] = {}
        for node_id, gateway in sorted(self._gateways.items()):
            for cluster, reports in sorted(gateway.clusters.items()):
                owner = cluster_model(cluster, names)
                if owner is None or not reports:
                    continue
                model, is_batch = owner
                key = (model, gateway.region)
                seconds = sum(r.interval for r in reports)
                offered = sum(r.issued + r.dropped for r in reports) / seconds
                target = batch if is_batch else interactive
                target[key] = target.get(key, 0.0) + offered
                refused[key] = refused.get(key, 0.0) + sum(r.dropped for r in reports) / seconds
                latest = [r for r in reports if now - r.at < self.recent]
                if latest:
                    span = sum(r.interval for r in latest)
                    count = sum(r.issued + r.dropped for r in latest)
                    recent[key] = recent.get(key, 0.0) + count / span
                    # The shortest span of any gateway: the widest Poisson spread.
                    recent_s[key] = min(recent_s.get(key, math.inf), span)
                reporters.setdefault(key, set()).add(node_id)
                newest[key] = max(newest.get(key, 0.0), gateway.last)
                for report in reports:
                    for address, count in report.served.items():
                        endpoint = (model, address)
                        served[endpoint] = served.get(endpoint, 0.0) + count / seconds
        if hops:
            lent_in, lent_recent = self._lent_in(names, now, hops)
            for key, rate in lent_in.items():
                if key in interactive:
                    interactive[key] = max(0.0, interactive[key] - rate)
                if key in recent:
                    recent[key] = max(0.0, recent[key] - lent_recent.get(key, 0.0))
        origins = {
            key: OriginLoad(
                interactive=interactive.get(key, 0.0),
                batch=batch.get(key, 0.0),
                refused=refused.get(key, 0.0),
                gateways=len(reporters[key]),
                at=newest[key],
                recent=recent.get(key),
                recent_s=recent_s.get(key, 0.0),
            )
            for key in sorted(reporters)
        }
        self.served = served  # for /debug/state only: see `describe`
        return GatewayLoad(origins=origins, stale_after=self.stale_after)

    def _lent_in(
        self, names: list[str], now: float, hops: set[str]
    ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
        """Per (model, east-west region): what other regions' gateways issued to that
        region's locality per second, over the window and over the newest reports. It
        reached the region's east-west gateways, which place it in their own model cluster
        (interactive, whatever its class) and report it as theirs."""
        lent_in: dict[tuple[str, str], float] = {}
        lent_recent: dict[tuple[str, str], float] = {}
        for gateway in self._gateways.values():
            for cluster, reports in gateway.clusters.items():
                owner = cluster_model(cluster, names)
                if owner is None or not reports:
                    continue
                seconds = sum(r.interval for r in reports)
                latest = [r for r in reports if now - r.at < self.recent]
                span = sum(r.interval for r in latest)
                for region in hops - {gateway.region}:
                    key = (owner[0], region)
                    count = sum(r.by_locality.get(region, 0) for r in reports)
                    lent_in[key] = lent_in.get(key, 0.0) + count / seconds
                    if latest:
                        count = sum(r.by_locality.get(region, 0) for r in latest)
                        lent_recent[key] = lent_recent.get(key, 0.0) + count / span
        return lent_in, lent_recent

    def describe(
        self, models: Iterable[str], now: float, east_west: Iterable[str] = ()
    ) -> dict[str, object]:
        """For /debug/state: who reports (how recently, about which clusters), and what the
        reports add up to: demand per model and origin (as the law reads it: `load`'s
        `east_west`), completions per endpoint."""
        load = self.load(models, now, east_west)
        return {
            "gateways": {
                node_id: {
                    "region": gateway.region,
                    "age_s": round(now - gateway.last, 3),
                    "reports": gateway.reports,
                    "clusters": sorted(gateway.clusters),
                }
                for node_id, gateway in sorted(self._gateways.items())
            },
            "demand": {
                f"{model}/{region}": {
                    "interactive": round(o.interactive, 3),
                    "batch": round(o.batch, 3),
                    "refused": round(o.refused, 3),
                    "gateways": o.gateways,
                }
                for (model, region), o in sorted(load.origins.items())
            },
            # What the gateways saw each endpoint answer successfully, per second. Envoy counts
            # a success when response headers arrive: for a stream, when it starts.
            "answered": {f"{m}/{a}": round(v, 3) for (m, a), v in sorted(self.served.items())},
            "ignored_reports": self.ignored,
        }


def _counts(
    stats: load_report_pb2.ClusterStats,
) -> tuple[int, int, dict[str, int], dict[str, int]]:
    issued = 0
    served: dict[str, int] = {}
    by_locality: dict[str, int] = {}
    for locality in stats.upstream_locality_stats:
        issued += locality.total_issued_requests
        region = locality.locality.region
        by_locality[region] = by_locality.get(region, 0) + locality.total_issued_requests
        for endpoint in locality.upstream_endpoint_stats:
            socket = endpoint.address.socket_address
            host = f"[{socket.address}]" if ":" in socket.address else socket.address
            address = f"{host}:{socket.port_value}"
            served[address] = served.get(address, 0) + endpoint.total_successful_requests
    by_category = sum(d.dropped_count for d in stats.dropped_requests)
    return issued, max(stats.total_dropped_requests, by_category), served, by_locality
