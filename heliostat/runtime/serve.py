"""`heliostat serve`: the xDS server, the admin server and the policy watcher, together."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from heliostat.admin import server as admin_server
from heliostat.admin.state import describe_nodes, describe_snapshots, describe_views
from heliostat.balance import static_views
from heliostat.listen import ListenError, check_free, show
from heliostat.policy import Policy, load_policy
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.policy_watch import Outcome, PolicyWatcher, digest_of
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.runtime.scaling_metrics import ScalingCollector
from heliostat.signals import CompositeSource, debug_view, targets_from_policy
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc.load_reports import LoadReports
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamRegistry
from heliostat.xds.grpc.server import (
    SERVER_OPTIONS,
    AdsServer,
    LoadReportingServer,
    add_to_server,
    listen,
)

log = structlog.get_logger("heliostat.serve")

LOAD_REPORT_MIN_S = 0.5

# A long-lived stream with many small messages: keep idle connections alive through NATs.
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    *SERVER_OPTIONS,
]


class StartupError(Exception):
    """`serve` cannot start (an address it cannot listen on): one line, no traceback."""


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
            self.publisher,
            self.signals.signals,
            self.metrics_registry,
            gateways=lambda p, now: self.load_reports.load([m.name for m in p.spec.models], now),
        )
        self.signals.on_update = self.control.signals_landed
        self.started_at = time.time()
        self._serving = False
        self._tasks: list[asyncio.Task[None]] = []
        self._policy_reloads = Counter(
            "heliostat_policy_reloads_total",
            "Policy file versions seen, by result (applied, rejected, failed).",
            ["result"],
            registry=self.metrics_registry,
        )
        for outcome in Outcome:
            self._policy_reloads.labels(outcome.value)
        self.watcher = PolicyWatcher(
            options.policy_path,
            self.apply_policy,
            interval=options.policy_poll_s,
            initial_digest=digest_of(options.policy_path),
            on_outcome=lambda outcome: self._policy_reloads.labels(outcome.value).inc(),
        )
        self._groups = Gauge(
            "heliostat_snapshot_groups",
            "Node groups with a snapshot.",
            registry=self.metrics_registry,
        )
        self._groups.set_function(lambda: len(self.cache.groups()))
        # Scaling signals (heliostat_desired_replicas and its inputs) for HPA / KEDA.
        self.metrics_registry.register(
            ScalingCollector(lambda: (self.control.policy, self.control.state))
        )
        self.ads = AdsServer(self.publisher, self.streams, XdsMetrics(self.metrics_registry))
        # Gateways report every signals interval (the fastest model's), at least every 0.5 s.
        self.lrs = LoadReportingServer(
            self.load_reports, lambda: max(LOAD_REPORT_MIN_S, self.control.interval)
        )

    def apply_policy(self, policy: Policy) -> None:
        """Put a new policy to work; if that fails half-way, put the last good one back
        before the watcher reports the failure, so nothing runs on a policy it refused."""
        previous = self.publisher.inputs.policy
        try:
            self.signals.update_targets(targets_from_policy(policy))
            changed = self.control.set_policy(policy)
        except Exception:
            self.signals.update_targets(targets_from_policy(previous))
            self.control.set_policy(previous)
            raise
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
        for task in self._tasks:
            if task.done():
                return False, f"{task.get_name()} stopped: {_ending(task)}"
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
                "failures": self.watcher.failures,
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

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until SIGINT/SIGTERM (or `stop`); everything started is stopped on the way
        out, whatever failed, and nothing a dead task raised escapes."""
        xds = (self.options.xds_host, self.options.xds_port)
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        add_to_server(server, self.ads, self.lrs)
        try:
            # Both addresses before anything starts; the admin one again when it binds.
            check_free(self.options.admin_host, self.options.admin_port, "the admin API")
            listen(server, *xds, self.options.credentials)
        except ListenError as exc:
            raise StartupError(str(exc)) from None
        await server.start()
        admin: web.AppRunner | None = None
        try:
            app = admin_server.build_app(
                self.metrics_registry, self.state, self.ready, self.drain_request
            )
            try:
                admin = await admin_server.start(
                    app, self.options.admin_host, self.options.admin_port
                )
            except ListenError as exc:
                raise StartupError(str(exc)) from None
            self._tasks = [
                asyncio.create_task(self.watcher.run(), name="policy watcher"),
                asyncio.create_task(self.signals.run(), name="signals"),
            ]
            self.control.tick()
            self._tasks.append(asyncio.create_task(self.control.run(), name="control loop"))
            for task in self._tasks:
                task.add_done_callback(_report_ending)
            self._serving = True
            log.info(
                "serving",
                xds=show(*xds),
                admin=show(self.options.admin_host, self.options.admin_port),
                policy=str(self.options.policy_path),
            )
            await _until_signalled(stop)
        finally:
            self._serving = False
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.stop(grace=1.0)
            if admin is not None:
                await admin.cleanup()
                log.info("stopped")


def _ending(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}"[:300] if exc is not None else "returned"


def _report_ending(task: asyncio.Task[None]) -> None:
    """A long-lived task that ends on its own is logged once, with its cause."""
    if task.cancelled():
        return
    log.error(
        "task stopped; heliostat is no longer ready", task=task.get_name(), cause=_ending(task)
    )


async def _until_signalled(stop: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    if stop is None:
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
