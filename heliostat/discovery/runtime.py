"""What `heliostat serve` holds of discovery: the sources, and the policy they make.

The policy as written (a file or a resource) is the *declared* policy; folding in what the
endpoint sources know gives the *effective* policy that the control loop, the scrapers and
the translators read. When the cluster changes, the effective policy is recomputed from the
last declared one; when the declared one changes, so are the watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from heliostat.discovery.kube import ClusterAccess, KubernetesEndpoints, api_client
from heliostat.discovery.source import EndpointSource, StaticEndpoints, effective_policy
from heliostat.policy import Policy


class ClusterUnreachable(Exception):
    """The policy selects endpoints from a cluster, and no client could be configured."""


class Discovery:
    def __init__(
        self,
        declared: Policy,
        access: ClusterAccess | None,
        on_change: Callable[[Policy], None] = lambda _p: None,
    ) -> None:
        self.declared = declared
        self._access = access
        self._on_change = on_change
        self.kubernetes: KubernetesEndpoints | None = None
        self.sources: list[EndpointSource] = [StaticEndpoints()]
        self._created = asyncio.Event()
        self.effective(declared)

    def effective(self, declared: Policy) -> Policy:
        """Remember `declared`, follow what it selects, and fold in what is known. Raises
        (and changes nothing) when the policy selects from a cluster heliostat cannot reach."""
        uses_cluster = any(m.kubernetes is not None for m in declared.spec.models)
        if self.kubernetes is None and (uses_cluster or self._access is not None):
            try:
                api = api_client(self._access or ClusterAccess())
            except Exception as exc:  # no service account, no kubeconfig: say which
                raise ClusterUnreachable(f"cannot configure the Kubernetes client: {exc}") from None
            self.kubernetes = KubernetesEndpoints(api, on_change=self._cluster_changed)
            self.sources.append(self.kubernetes)
            self._created.set()
        self.declared = declared
        if self.kubernetes is not None:
            self.kubernetes.retarget(declared)
        return effective_policy(declared, self.sources)

    def _cluster_changed(self) -> None:
        self._on_change(effective_policy(self.declared, self.sources))

    def synced(self) -> bool:
        return self.kubernetes is None or self.kubernetes.synced()

    def describe(self) -> dict[str, Any]:
        return {"watches": self.kubernetes.describe() if self.kubernetes is not None else []}

    async def run(self) -> None:
        """Follow the cluster once a policy selects from one (until then, wait for it)."""
        await self._created.wait()
        assert self.kubernetes is not None
        await self.kubernetes.run()
