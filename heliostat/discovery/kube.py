"""The Kubernetes endpoint source: one list/watch per distinct (namespace, label selector).

Models with the same selector share a watch; a policy change starts the watches it needs and
stops the ones it no longer does. Changes from the watch threads are coalesced and delivered
on the event loop (`on_change`), at most every `min_gap_s`, so a relist of many slices is one
recomputation, not one per slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import client, config

from heliostat.discovery.listwatch import ListWatch, Store
from heliostat.discovery.slices import ModelEndpoints, endpoints_from_slices
from heliostat.policy.schema import Model, Policy

log = structlog.get_logger("heliostat.discovery")


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server: `server` (such as a `kubectl proxy`, or a test's), else
    the pod's service account when running in a cluster, else a kubeconfig."""

    server: str | None = None
    kubeconfig: str | None = None
    context: str | None = None


def api_client(access: ClusterAccess) -> client.ApiClient:
    if access.server is not None:
        configuration = client.Configuration()
        configuration.host = access.server.rstrip("/")
        return client.ApiClient(configuration)
    configuration = client.Configuration()
    if access.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=access.kubeconfig,
            context=access.context,
            client_configuration=configuration,
        )
    return client.ApiClient(configuration)


Target = tuple[str, str]  # (namespace, label selector)


def target_of(model: Model) -> Target | None:
    if model.kubernetes is None:
        return None
    return model.kubernetes.namespace, model.kubernetes.label_selector(model.name)


class KubernetesEndpoints:
    """An `EndpointSource` backed by EndpointSlice watches."""

    def __init__(
        self,
        api: client.ApiClient,
        on_change: Callable[[], None] = lambda: None,
        *,
        min_gap_s: float = 0.2,
        watch_timeout_s: int = 240,
    ) -> None:
        self._discovery = client.DiscoveryV1Api(api)
        self.on_change = on_change
        self._min_gap_s = min_gap_s
        self._watch_timeout_s = watch_timeout_s
        self._watches: dict[Target, ListWatch] = {}
        self._regions: frozenset[str] = frozenset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty = asyncio.Event()
        self._reported: set[str] = set()

    # -- EndpointSource -------------------------------------------------------------------

    def endpoints(self, model: Model) -> ModelEndpoints | None:
        target = target_of(model)
        if target is None or model.kubernetes is None:
            return None
        watch = self._watches.get(target)
        slices = list(watch.store.values()) if watch is not None else []
        found = endpoints_from_slices(slices, model.kubernetes, self._regions)
        for reason in found.skipped:
            if reason not in self._reported:  # each reason once, not on every recomputation
                self._reported.add(reason)
                log.warning("endpoint slice skipped", model=model.name, reason=reason)
        return found

    # -- following the policy ---------------------------------------------------------------

    def retarget(self, policy: Policy) -> None:
        """Watch what `policy` selects, and nothing else."""
        self._regions = frozenset(policy.spec.regions)
        wanted = {t for t in (target_of(m) for m in policy.spec.models) if t is not None}
        for target in set(self._watches) - wanted:
            self._watches.pop(target).stop(timeout=0)
        for target in sorted(wanted - set(self._watches)):
            watch = self._watch(target)
            self._watches[target] = watch
            if self._loop is not None:
                watch.start()

    def _watch(self, target: Target) -> ListWatch:
        namespace, selector = target

        def call(**kwargs: Any) -> Any:
            return self._discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=selector, **kwargs
            )

        return ListWatch(
            call,
            f"endpointslices {namespace}/{selector}",
            self._changed,
            watch_timeout_s=self._watch_timeout_s,
        )

    def _changed(self, _store: Store) -> None:
        """Called from a watch thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._dirty.set)

    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self._watches.values())

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "namespace": namespace,
                "selector": selector,
                "slices": len(watch.store),
                "resource_version": watch.resource_version,
                "lists": watch.lists,
                "failures": watch.failures,
                "last_error": watch.last_error,
            }
            for (namespace, selector), watch in sorted(self._watches.items())
        ]

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for watch in self._watches.values():
            watch.start()
        try:
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                self.on_change()
                await asyncio.sleep(self._min_gap_s)
        finally:
            for watch in self._watches.values():
                watch.stop(timeout=0)
            self._loop = None
