"""`heliostat serve`: the xDS server, the admin server and the policy watcher, together."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)

from heliostat.admin import page as admin_page
from heliostat.admin import server as admin_server
from heliostat.admin.auth import TokenError, is_loopback, read_token
from heliostat.admin.metrics import BuildInfo, DecisionCollector, GatewayServedCollector
from heliostat.admin.state import describe_nodes, describe_snapshots, describe_views
from heliostat.balance import static_views
from heliostat.discovery.kube import ClusterAccess
from heliostat.discovery.policy_resource import PolicyResource, parse_reference
from heliostat.discovery.runtime import ClusterUnreachable, Discovery
from heliostat.listen import ListenError, check_free, show
from heliostat.ops.diff import diff_policies, gateway_groups
from heliostat.policy import Policy, load_policy, parse_policy
from heliostat.runtime import heap, trim
from heliostat.runtime.control import ControlLoop
from heliostat.runtime.journal import Journal
from heliostat.runtime.policy_watch import Outcome, PolicyWatcher, digest_of
from heliostat.runtime.publisher import Inputs, Publisher
from heliostat.runtime.scaling_metrics import ScalingCollector
from heliostat.runtime.supervise import Supervisor, Unrecoverable, describe_failure
from heliostat.runtime.warmup import SLACK_S, FirstRound
from heliostat.security.limits import StreamLimits
from heliostat.security.tls import NodeAuthorizer, TlsError, TlsFiles, server_credentials
from heliostat.signals import CompositeSource, debug_view, targets_from_policy
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.grpc import csds, health, settle
from heliostat.xds.grpc.convergence import ConvergenceTracker
from heliostat.xds.grpc.load_reports import LoadReports
from heliostat.xds.grpc.metrics import XdsMetrics
from heliostat.xds.grpc.registry import StreamRegistry
from heliostat.xds.grpc.server import (
    AdsServer,
    LoadReportingServer,
    add_to_server,
    listen,
    server_options,
)
from heliostat.xds.resources.types import TypeUrl

log = structlog.get_logger("heliostat.serve")

LOAD_REPORT_MIN_S = 0.5
# On SIGTERM, how long delta nodes are given to ACK their settled LEDS assignments before
# the streams end (heliostat.xds.grpc.server: settle_before_stop). One response and its
# ACK per stream: a change reached 5,000 delta streams on 2 cores in ~2.6 s (p99), and
# Kubernetes gives a pod 30 s between SIGTERM and SIGKILL.
SETTLE_BEFORE_STOP_S = 3.0

# A long-lived stream with many small messages: keep idle connections alive through NATs.
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


# What the xDS port serves, by full name: for health checks by service and for reflection.
GRPC_SERVICES = (
    "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "envoy.service.load_stats.v3.LoadReportingService",
    "envoy.service.status.v3.ClientStatusDiscoveryService",
)


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
    # The policy from an InferencePolicy resource, NAMESPACE/NAME (policy_path is then unused).
    policy_resource: str | None = None
    # How to reach the Kubernetes API (None: in-cluster or kubeconfig, when a policy needs it).
    cluster: ClusterAccess | None = None
    # mTLS on the xDS port: client certificates required, and each must name the node id
    # and region its stream claims (heliostat.security). None: plaintext.
    tls: TlsFiles | None = None
    trust_domain: str | None = None
    # Plaintext beyond loopback only when the operator says so.
    insecure: bool = False
    # Bearer token for state-changing admin calls; required when the admin API is not on
    # loopback.
    admin_token_file: Path | None = None
    # What one xDS client may ask: streams, requests per node, how often refusals are logged.
    limits: StreamLimits = field(default_factory=StreamLimits)
    # Delta-xDS nodes get each endpoint as its own LEDS resource (one endpoint's change is
    # one small resource on the wire) instead of whole assignments; SotW nodes always get
    # whole assignments. A stream keeps only where its node differs from the snapshot
    # (xds/cache/versions.py), so LEDS no longer costs serve memory per stream. Envoy 1.40
    # lists no LEDS endpoint in a reconnecting stream's initial_resource_versions, only the
    # assignments; an assignment's version covers its endpoints (xds/protocol/held.py), so a
    # reconnect to a restarted heliostat or another replica still re-sends nothing unchanged.
    leds: bool = True
    # How long a delta node's endpoints must be still before its LEDS assignments settle
    # under their own versions (heliostat.xds.grpc.settle): until then a change is one LEDS
    # response per node, after it the first change is two.
    leds_settle_after_s: float = settle.QUIET_S
    # Fetch and parse engine metrics in a worker process (heliostat.signals.offload), off the
    # event loop that serves the Envoys: in-process scrapes were a third of the samples inside
    # a push to 1,000 delta streams (issue 17). False reads on the serving loop.
    scrape_worker: bool = True


class ControlPlane:
    """Owns the long-lived pieces and the order in which they start and stop."""

    def __init__(
        self, options: ServeOptions, policy: Policy, resource: PolicyResource | None = None
    ) -> None:
        self.options = options
        # The policy as written, plus the endpoints discovered for it (heliostat.discovery).
        self.discovery = Discovery(policy, options.cluster, on_change=self._endpoints_changed)
        policy = self.discovery.effective(policy)
        self.metrics_registry = CollectorRegistry()
        self.cache = SnapshotCache()
        self.streams = StreamRegistry()
        self.publisher = Publisher(
            self.cache, Inputs(policy, static_views(policy)), leds=options.leds
        )
        self.signals = CompositeSource(
            targets_from_policy(policy), self.metrics_registry, offload=options.scrape_worker
        )
        self.load_reports = LoadReports()
        self.control = ControlLoop(
            self.publisher,
            self.signals.signals,
            self.metrics_registry,
            gateways=lambda p, now: self.load_reports.load(
                [m.name for m in p.spec.models],
                now,
                _east_west_regions(p),
            ),
        )
        self.signals.on_update = self._round_landed
        # Endpoints are withheld from every stream until a first round of every model has
        # landed, so Envoys reconnecting after a restart keep their weights (runtime.warmup).
        self._constructed_at = time.monotonic()
        self.first_round = FirstRound(
            {t.model for t in targets_from_policy(policy)},
            max(m.signals.timeout for m in policy.spec.models) + SLACK_S,
            self._constructed_at,
        )
        if not self.first_round.done:
            self.publisher.withhold(frozenset({TypeUrl.ENDPOINT, TypeUrl.LB_ENDPOINT}))
        self.journal = Journal()
        self.control.on_tick = self.journal.observe
        self.started_at = time.time()
        self._overdue: asyncio.TimerHandle | None = None  # the first round's bound, armed
        self._worker_starting: asyncio.Task[None] | None = None
        self._serving = False
        self.supervisor = Supervisor(self.metrics_registry)
        self.xds_server: grpc.aio.Server | None = None
        self.admin_runner: web.AppRunner | None = None
        self._policy_reloads = Counter(
            "heliostat_policy_reloads_total",
            "Policy file versions seen, by result (applied, rejected, failed).",
            ["result"],
            registry=self.metrics_registry,
        )
        for outcome in Outcome:
            self._policy_reloads.labels(outcome.value)
        self.watcher: PolicyWatcher | PolicyResource
        if resource is not None:
            self.watcher = resource
            resource.on_outcome = lambda outcome: self._policy_reloads.labels(outcome).inc()
        else:
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
        # The law's decisions (weights, health, shares, refusals), build and process info.
        self.metrics_registry.register(DecisionCollector(lambda: self.control.state))
        self.metrics_registry.register(GatewayServedCollector(lambda: self.load_reports.served))
        self.metrics_registry.register(BuildInfo())
        ProcessCollector(registry=self.metrics_registry)
        PlatformCollector(registry=self.metrics_registry)
        # Scaling signals (heliostat_desired_replicas and its inputs) for HPA / KEDA.
        self.metrics_registry.register(
            ScalingCollector(lambda: (self.control.policy, self.control.state))
        )
        # With mTLS, every stream's certificate must name the node it claims to be.
        authorize = NodeAuthorizer(options.trust_domain) if options.tls is not None else None
        self.ads = AdsServer(
            self.publisher,
            self.streams,
            XdsMetrics(self.metrics_registry),
            authorize=authorize,
            limits=options.limits,
            withheld=self.publisher.withheld,
            settle=settle.SettleGate(quiet_s=options.leds_settle_after_s),
        )
        self.convergence = ConvergenceTracker(self.streams, self.metrics_registry)
        self.ads.on_ack = self.convergence.acked
        self.control.on_publish = self.convergence.pushed
        self.csds = csds.ClientStatusServer(self.streams, self.cache.get)
        # Gateways report every signals interval (the fastest model's), at least every 0.5 s.
        self.lrs = LoadReportingServer(
            self.load_reports,
            lambda: max(LOAD_REPORT_MIN_S, self.control.interval),
            authorize=authorize,
            refusals=self.ads.refusals,
        )

    def apply_policy(self, policy: Policy) -> None:
        """Put a new policy to work; if that fails half-way, put the last good one back
        before the watcher reports the failure, so nothing runs on a policy it refused."""
        previous = self.publisher.inputs.policy
        declared = self.discovery.declared
        policy = self.discovery.effective(policy)
        try:
            self.signals.update_targets(targets_from_policy(policy))
            changed = self.control.set_policy(policy)
        except Exception:
            self.discovery.effective(declared)
            self.signals.update_targets(targets_from_policy(previous))
            self.control.set_policy(previous)
            raise
        heap.settle()  # the new policy lives until the next reload: out of the GC's scans
        log.info("views_recomputed", groups_changed=changed)

    def _round_landed(self, model: str) -> None:
        """The signal sources' hook: wake the control loop; the round that completes the
        first one is ticked on at once and the endpoints it gives are released."""
        if self.first_round.landed(model):
            self._release_endpoints()
        else:
            self.control.signals_landed(model)

    async def _start_worker(self) -> None:
        """Start the scrape worker; once it is up (or its start failed) the first round's
        bound counts from then. Armed before, it expired while a loaded machine was still
        importing the worker (a second or more, 3-4 s at load 10): the endpoints were then
        released with no round landed, neutral, and a restarted heliostat re-sent EDS to
        every Envoy it had just resynced, then again when the round landed."""
        try:
            await self.signals.start()
        finally:
            self.first_round.postpone(time.monotonic() - self._constructed_at)
            if self._serving and not self.first_round.done:
                self._schedule_first_round_bound()

    def _schedule_first_round_bound(self) -> None:
        if self._overdue is not None:
            self._overdue.cancel()
        self._overdue = asyncio.get_running_loop().call_at(
            _loop_time_of(self.first_round.deadline), self._first_round_overdue
        )

    def _first_round_overdue(self) -> None:
        """The bound of the first round passed: release the endpoints if still withheld.
        A bound moved later since (the scrape worker's start) is waited for again. Armed
        only once the worker's start has ended (`_start_worker`)."""
        if self.first_round.expire(time.monotonic()):
            self._release_endpoints()
        elif not self.first_round.done and self._serving:
            self._schedule_first_round_bound()

    def _release_endpoints(self) -> None:
        try:
            self.control.tick()
        except Exception as exc:  # the views in force are served; the loop ticks again
            log.error("control_tick_failed", cause=describe_failure(exc), at="first round")
        self.publisher.release()
        log.info(
            "endpoints_released",
            reason=self.first_round.reason,
            after_s=round(time.time() - self.started_at, 3),
        )

    def _endpoints_changed(self, policy: Policy) -> None:
        """Discovery saw the cluster change: serve the declared policy's new endpoints."""
        if policy == self.publisher.inputs.policy:
            return
        try:
            self.signals.update_targets(targets_from_policy(policy))
            changed = self.control.set_policy(policy)
        except Exception:
            log.exception("discovered endpoints not applied; keeping the last ones")
            return
        log.info("discovered endpoints applied", groups_changed=changed)

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

    def diff_request(self, text: str, source: str) -> dict[str, Any]:
        """`heliostat diff NEW --admin-address`: what serving NEW would change for every
        node group connected (and a gateway of every region of either policy), now."""
        policy = parse_policy(text, source)
        current_policy = self.publisher.inputs.policy
        current, proposed = self.control.preview(policy)
        # The groups really served, and a gateway for every region no connected node is in.
        groups = list(self.cache.groups())
        covered = {(g.role, g.region) for g in groups}
        groups += [
            g for g in gateway_groups(current_policy, policy) if (g.role, g.region) not in covered
        ]
        return diff_policies((current_policy, current), (policy, proposed), groups).as_json()

    def ready(self) -> tuple[bool, str]:
        if not self._serving:
            return False, "starting"
        if not self.discovery.synced():
            # Until the first list lands, a model's discovered endpoints would be published
            # as none: keep this replica out of the gateways' DNS until then.
            return False, "discovery: waiting for the first list of EndpointSlices"
        return self.supervisor.ready()

    def state(self) -> dict[str, Any]:
        inputs = self.publisher.inputs
        return {
            "policy": {
                "name": inputs.policy.metadata.name,
                "path": self.options.policy_resource or str(self.options.policy_path),
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
                [m.name for m in inputs.policy.spec.models],
                time.time(),
                _east_west_regions(inputs.policy),
            ),
            "discovery": self.discovery.describe(),
            "snapshots": describe_snapshots(self.cache),
            "snapshot_error": self.publisher.last_error,
            "nodes": describe_nodes(self.streams),
            "tasks": self.supervisor.describe(),
            "first_round": {
                "done": self.first_round.done,
                "reason": self.first_round.reason,
                "awaited": sorted(self.first_round.awaited),
                "withheld": sorted(t.short for t in self.publisher.withheld()),
            },
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until SIGINT/SIGTERM (or `stop`); everything started is stopped on the way
        out, whatever failed, and nothing a dead task raised escapes."""
        xds = (self.options.xds_host, self.options.xds_port)
        token = _admin_token(self.options)
        credentials = _xds_credentials(self.options)
        limits = self.options.limits
        options = [*_GRPC_OPTIONS, *server_options(limits.max_request_bytes, limits.max_streams)]
        server = self.xds_server = grpc.aio.server(options=options)
        add_to_server(server, self.ads, self.lrs)
        csds.add_to_server(server, self.csds)
        health.add_to_server(server, self.ready, GRPC_SERVICES)
        try:
            # Both addresses before anything starts; the admin one again when it binds.
            check_free(self.options.admin_host, self.options.admin_port, "the admin API")
            listen(server, *xds, credentials)
        except ListenError as exc:
            raise StartupError(str(exc)) from None
        admin: web.AppRunner | None = None
        # The handlers go in before anything is announced: a SIGTERM that follows the
        # "serving" line must always stop the server cleanly, never kill it.
        stop = _stop_on_signals(stop)
        try:
            # The scrape worker starts (imports: a second or more) while the servers come
            # up and serve what needs no signal (clusters, routes, listeners; endpoints are
            # withheld until the first round): waited for before serving, its start was
            # most of a restarted heliostat's time to resync its Envoys. Reads wait for it
            # (`offload.WorkerFetcher`), and the first round's bound moves by its start: it
            # is not the replicas' slowness.
            self._worker_starting = asyncio.create_task(
                self._start_worker(), name="scrape worker start"
            )
            # Nothing may be served between the server's start and the first tick below.
            await server.start()
            app = admin_server.build_app(
                self.metrics_registry, self.state, self.ready, self.drain_request, token=token
            )
            admin_page.install(app, self.journal.recent, self.diff_request)
            try:
                admin = await admin_server.start(
                    app, self.options.admin_host, self.options.admin_port
                )
            except ListenError as exc:
                raise StartupError(str(exc)) from None
            self.admin_runner = admin
            self._supervise(server, admin)
            self.control.tick()
            heap.settle()  # start-up objects and the policy: out of the GC's scans
            if self._worker_starting.done():  # else its end arms the bound (_start_worker)
                self._schedule_first_round_bound()
            supervising = asyncio.create_task(self.supervisor.run(), name="supervisor")
            signalled = asyncio.create_task(stop.wait(), name="signals handler")
            self._serving = True
            log.info(
                "serving",
                xds=show(*xds),
                admin=show(self.options.admin_host, self.options.admin_port),
                policy=str(self.options.policy_path),
            )
            try:
                await asyncio.wait({supervising, signalled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._serving = False
                if self._overdue is not None:
                    self._overdue.cancel()
                for task in (supervising, signalled):
                    task.cancel()
                await asyncio.gather(supervising, signalled, return_exceptions=True)
            if supervising.done() and not supervising.cancelled():
                failure = supervising.exception()
                if isinstance(failure, Unrecoverable):
                    raise failure
        finally:
            self._serving = False
            _restore_signals()
            await self._settle_before_stop()
            await server.stop(grace=1.0)
            if admin is not None:
                await admin.cleanup()
            if self._worker_starting is not None and not self._worker_starting.done():
                self._worker_starting.cancel()
                await asyncio.gather(self._worker_starting, return_exceptions=True)
            await self.signals.close()  # the scrape worker too, if the tasks never ran
            log.info("stopped")

    async def _settle_before_stop(self) -> None:
        """Delta nodes' LEDS assignments under their own versions before the streams end, so
        that their reconnect re-sends no endpoint (heliostat.xds.grpc.server); bounded, and
        nothing it raises keeps the server from stopping."""
        try:
            unfinished = await self.ads.settle_before_stop(SETTLE_BEFORE_STOP_S)
        except Exception as exc:  # stopping goes on whatever happened
            log.warning("settle_before_stop_failed", error=str(exc))
            return
        if unfinished:
            log.info("stopped_unsettled", streams=unfinished, waited_s=SETTLE_BEFORE_STOP_S)

    def _supervise(self, server: grpc.aio.Server, admin: web.AppRunner) -> None:
        """Every long-lived task under the supervisor. The servers cannot be restarted in
        this process (their sockets are gone): their ending is unrecoverable."""
        self.supervisor.add("policy watcher", self.watcher.run)
        self.supervisor.add("signals", self.signals.run)
        self.supervisor.add("discovery", self.discovery.run)
        self.supervisor.add("control loop", self.control.run)
        release = trim.malloc_trim()
        if release is not None:  # glibc: give a wave's freed heap back (runtime.trim)
            self.supervisor.add(
                "heap trim", lambda: trim.run(lambda: len(self.streams), trim.WaveTrim(release))
            )
        self.supervisor.add("xDS server", lambda: _serving_grpc(server), restart=False)
        self.supervisor.add("admin server", lambda: _serving_admin(admin), restart=False)


def _loop_time_of(monotonic_at: float) -> float:
    """A time.monotonic() instant on the running loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic_at - time.monotonic())


def _xds_credentials(options: ServeOptions) -> grpc.ServerCredentials | None:
    """mTLS credentials, or None for plaintext, which only loopback gets by default."""
    if options.tls is not None:
        try:
            return server_credentials(options.tls)
        except TlsError as exc:
            raise StartupError(str(exc)) from None
    if not options.insecure and not is_loopback(options.xds_host):
        where = show(options.xds_host, options.xds_port)
        raise StartupError(
            f"xDS on {where} would be plaintext beyond loopback: give --tls-cert, --tls-key "
            "and --client-ca, or --insecure"
        )
    return None


def _admin_token(options: ServeOptions) -> str | None:
    """The admin bearer token, or None on loopback without a token file; StartupError when
    the admin API would be reachable from other machines without one."""
    if options.admin_token_file is not None:
        try:
            return read_token(options.admin_token_file)
        except TokenError as exc:
            raise StartupError(str(exc)) from None
    if not is_loopback(options.admin_host):
        where = show(options.admin_host, options.admin_port)
        raise StartupError(
            f"the admin API on {where} is reachable beyond loopback: give --admin-token-file "
            "FILE (drain and other state-changing calls then need its bearer token)"
        )
    return None


async def _serving_grpc(server: grpc.aio.Server, every_s: float = 0.5) -> None:
    # With a timeout (it returns True when the wait timed out): cancelling a wait without
    # one cancels the server's own shutdown future, and the `stop` that follows would then
    # raise CancelledError.
    while await server.wait_for_termination(timeout=every_s):
        pass
    raise ConnectionAbortedError("the gRPC server stopped serving")


async def _serving_admin(admin: web.AppRunner, every_s: float = 0.5) -> None:
    while admin.sites:
        await asyncio.sleep(every_s)
    raise ConnectionAbortedError("the admin HTTP server stopped listening")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """SIGINT and SIGTERM set `stop` (a new event when none is given) from now on."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    return stop


def _restore_signals() -> None:
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.remove_signal_handler(signum)


def run(options: ServeOptions) -> None:
    if options.policy_resource is None:
        policy = load_policy(options.policy_path)
        try:
            plane = ControlPlane(options, policy)
        except ClusterUnreachable as exc:
            raise StartupError(str(exc)) from None
        asyncio.run(plane.run())
        return
    asyncio.run(_serve_resource(options, options.policy_resource))


async def _serve_resource(options: ServeOptions, reference: str) -> None:
    """The policy from an InferencePolicy resource: the first must be valid to start."""
    from heliostat.discovery.kube import api_client

    try:
        namespace, name = parse_reference(reference)
        api = api_client(options.cluster or ClusterAccess())
    except Exception as exc:
        raise StartupError(f"--policy-resource: {exc}") from None
    planes: list[ControlPlane] = []
    resource = PolicyResource(api, namespace, name, lambda p: planes[0].apply_policy(p))
    try:
        verdict = await asyncio.to_thread(resource.first, 30.0)
    except (TimeoutError, LookupError) as exc:
        raise StartupError(str(exc)) from None
    if verdict.policy is None:
        raise StartupError(f"InferencePolicy {reference} is not valid: {verdict.message}")
    try:
        planes.append(ControlPlane(options, verdict.policy, resource))
    except ClusterUnreachable as exc:
        resource.watch.stop(timeout=0)
        raise StartupError(str(exc)) from None
    await planes[0].run()


def _east_west_regions(policy: Policy) -> list[str]:
    """Regions others reach through east-west gateways: their own gateways report the
    requests lent to them, which `LoadReports.load` counts once, at the origin."""
    return [name for name, spec in policy.spec.regions.items() if spec.east_west]
