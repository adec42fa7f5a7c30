"""`heliostat serve`: the xDS server, the admin server and the policy watcher, together."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from heliostat.admin import server as admin_server
from heliostat.admin.state import describe_nodes, describe_snapshots, describe_views
from heliostat.balance import static_views
from heliostat.policy import Policy, load_policy
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.policy_watch import PolicyWatcher, digest_of
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.signals import CompositeSource, debug_view, targets_from_policy
from heliostat.xds.cache import SnapshotCache
from heliostat.xds.load_reports import LoadReports
from heliostat.xds.metrics import XdsMetrics
from heliostat.xds.registry import StreamRegistry
from heliostat.xds.server import AdsServer, LoadReportingServer, add_to_server

log = structlog.get_logger("heliostat.serve")

LOAD_REPORT_MIN_S = 0.5

# A long-lived stream with many small messages: keep idle connections alive through NATs.
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class ServeOptions:
    policy_path: Path
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    policy_poll_s: float = 1.0
    # Pluggable transport security for the xDS port (mTLS with node identity later).
    credentials: grpc.ServerCredentials | None = None


class ControlPlane:
    """Owns the long-lived pieces and the order in which they start and stop."""

    def __init__(self, options: ServeOptions, policy: Policy) -> None:
        self.options = options
        self.metrics_registry = CollectorRegistry()
        self.cache = SnapshotCache()
        self.streams = StreamRegistry()
        self.publisher = Publisher(self.cache, Inputs(policy, static_views(policy)))
        self.signals = CompositeSource(targets_from_policy(policy), self.metrics_registry)
        self.load_reports = LoadReports()
        self.control = ControlLoop(
            policy,
            self.publisher,
            self.signals.signals,
            self.metrics_registry,
            gateways=lambda p, now: self.load_reports.load([m.name for m in p.spec.models], now),
        )
        self.signals.on_update = self.control.signals_landed
        self.watcher = PolicyWatcher(
            options.policy_path,
            self.apply_policy,
            interval=options.policy_poll_s,
            initial_digest=digest_of(options.policy_path),
        )
        self.started_at = time.time()
        self._serving = False
        self._policy_reloads = Counter(
            "heliostat_policy_reloads_total",
            "Policy file versions seen, by result.",
            ["result"],
            registry=self.metrics_registry,
        )
        self._groups = Gauge(
            "heliostat_snapshot_groups",
            "Node groups with a snapshot.",
            registry=self.metrics_registry,
        )
        self._groups.set_function(lambda: len(self.cache.groups()))
        self.ads = AdsServer(self.publisher, self.streams, XdsMetrics(self.metrics_registry))
        # Gateways report every signals interval (the fastest model's), at least every 0.5 s.
        self.lrs = LoadReportingServer(
            self.load_reports, lambda: max(LOAD_REPORT_MIN_S, self.control.interval)
        )

    def apply_policy(self, policy: Policy) -> None:
        self.signals.update_targets(targets_from_policy(policy))
        changed = self.control.set_policy(policy)
        self._policy_reloads.labels("applied").inc()
        log.info("views recomputed", groups_changed=changed)

    def drain_request(self, body: dict[str, Any], drained: bool) -> dict[str, Any]:
        """`heliostat drain`: resolve a model plus an endpoint or region to endpoints."""
        policy = self.publisher.inputs.policy
        model = policy.model(str(body.get("model", "")))
        if model is None:
            known = ", ".join(m.name for m in policy.spec.models)
            raise ValueError(f"unknown model {body.get('model')!r} (models: {known})")
        endpoint, region = body.get("endpoint"), body.get("region")
        if (endpoint is None) == (region is None):
            raise ValueError("name exactly one of endpoint or region")
        addresses = [
            e.address
            for e in model.endpoints
            if e.address == endpoint or (region is not None and e.region == region)
        ]
        if not addresses:
            what = f"endpoint {endpoint!r}" if endpoint is not None else f"region {region!r}"
            raise ValueError(f"model {model.name!r} has no {what}")
        pairs = frozenset((model.name, a) for a in addresses)
        self.control.drain(pairs, drained=drained)
        log.info("drain" if drained else "undrain", model=model.name, endpoints=addresses)
        return {
            "model": model.name,
            "endpoints": addresses,
            "draining": drained,
            "drained": sorted(f"{m}/{a}" for m, a in self.control.drained),
        }

    def ready(self) -> tuple[bool, str]:
        if not self._serving:
            return False, "starting"
        return True, "ready"

    def state(self) -> dict[str, Any]:
        inputs = self.publisher.inputs
        return {
            "policy": {
                "name": inputs.policy.metadata.name,
                "path": str(self.options.policy_path),
                "models": [m.name for m in inputs.policy.spec.models],
                "reloads": self.watcher.reloads,
                "rejections": self.watcher.rejections,
                "last_error": self.watcher.last_error,
            },
            "views": describe_views(inputs.views, inputs.policy),
            "control": self.control.describe(),
            "signals": debug_view(
                self.signals.signals(),
                time.time(),
                {m.name: m.signals.stale_after for m in inputs.policy.spec.models},
            ),
            "load_reports": self.load_reports.describe(
                [m.name for m in inputs.policy.spec.models], time.time()
            ),
            "snapshots": describe_snapshots(self.cache),
            "snapshot_error": self.publisher.last_error,
            "nodes": describe_nodes(self.streams),
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    async def run(self) -> None:
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        add_to_server(server, self.ads, self.lrs)
        address = f"{self.options.xds_host}:{self.options.xds_port}"
        if self.options.credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, self.options.credentials)
        await server.start()
        app = admin_server.build_app(
            self.metrics_registry, self.state, self.ready, self.drain_request
        )
        admin = await admin_server.start(app, self.options.admin_host, self.options.admin_port)
        watcher = asyncio.create_task(self.watcher.run(), name="policy-watch")
        scraping = asyncio.create_task(self.signals.run(), name="signals")
        self.control.tick()
        controlling = asyncio.create_task(self.control.run(), name="control")
        self._serving = True
        log.info(
            "serving",
            xds=address,
            admin=f"{self.options.admin_host}:{self.options.admin_port}",
            policy=str(self.options.policy_path),
        )
        try:
            await _until_signalled()
        finally:
            self._serving = False
            for task in (watcher, controlling, scraping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await server.stop(grace=1.0)
            await admin.cleanup()
            log.info("stopped")


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run(options: ServeOptions) -> None:
    policy = load_policy(options.policy_path)
    asyncio.run(ControlPlane(options, policy).run())
