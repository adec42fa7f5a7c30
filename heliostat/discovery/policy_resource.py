"""Serve the policy from an InferencePolicy custom resource, and say in its status how it went.

The resource is validated by the very code that validates a policy file (`parse_policy`), so
a resource is accepted exactly when the same document would be as a file. A resource that
does not validate, or fails to apply, keeps the last good policy served and gets condition
`Accepted=False` with every problem in the message; a good one gets `Accepted=True`. Each
replica of heliostat writes the same verdict for the same generation, so several replicas
agree on the status without a leader (a write that changes nothing is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
import yaml
from kubernetes import client

from heliostat.discovery.crd import ACCEPTED, KIND, PLURAL
from heliostat.discovery.listwatch import JsonObject, ListWatch, Store
from heliostat.policy import Policy, PolicyError, parse_policy
from heliostat.policy.problems import format_path
from heliostat.policy.schema import API_GROUP, API_VERSION

log = structlog.get_logger("heliostat.discovery")

MAX_MESSAGE = 4000
_OUTCOMES = {"Valid": "applied", "Invalid": "rejected", "ApplyFailed": "failed"}


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # Valid | Invalid | ApplyFailed
    message: str
    policy: Policy | None = None


def policy_of_resource(item: JsonObject) -> Verdict:
    """Validate one InferencePolicy object (the API server's JSON). Pure."""
    metadata = item.get("metadata") or {}
    where = f"{KIND} {metadata.get('namespace', '')}/{metadata.get('name', '')}"
    document = {
        "apiVersion": item.get("apiVersion"),
        "kind": item.get("kind"),
        "metadata": {"name": metadata.get("name")},
        "spec": item.get("spec"),
    }
    try:
        policy = parse_policy(yaml.safe_dump(document, sort_keys=False), where)
    except PolicyError as exc:
        # Lines of a YAML rendering mean nothing to the author of a resource: paths only.
        lines = [f"{format_path(p.path)}: {p.message}" for p in exc.problems]
        return Verdict(False, "Invalid", "; ".join(lines)[:MAX_MESSAGE])
    return Verdict(True, "Valid", f"serving generation {metadata.get('generation', '?')}", policy)


def parse_reference(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` -> (namespace, name), or ValueError saying what is expected."""
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME of an {KIND}, got {text!r}")
    return namespace, name


class PolicyResource:
    """Follows one named InferencePolicy; `on_change` is the control plane's apply_policy."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        on_change: Callable[[Policy], None],
        *,
        watch_timeout_s: int = 240,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._objects = client.CustomObjectsApi(api)
        self._on_change = on_change
        self._seen: tuple[str, int] | None = None  # (uid, generation) last judged
        self._loop: asyncio.AbstractEventLoop | None = None
        self._latest: JsonObject | None = None
        self._wake = asyncio.Event()
        # The same counters as the file watcher's, for /debug/state.
        self.last_error: list[str] | None = None
        self.reloads = 0
        self.rejections = 0
        self.failures = 0
        # Told "applied", "rejected" or "failed" per generation judged (the reload metric).
        self.on_outcome: Callable[[str], None] = lambda _outcome: None

        def call(**kwargs: Any) -> Any:
            return self._objects.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, **kwargs
            )

        self.watch = ListWatch(
            call, f"{PLURAL} {namespace}", self._landed, watch_timeout_s=watch_timeout_s
        )

    def first(self, timeout: float) -> Verdict:
        """Blocking, before serving: the resource's current policy (for start-up)."""
        self.watch.start()
        if not self.watch.synced.wait(timeout):
            self.watch.stop(timeout=0)
            raise TimeoutError(f"the API server did not list {PLURAL} within {timeout:g}s")
        item = self.watch.store.get(f"{self.namespace}/{self.name}")
        if item is None:
            self.watch.stop(timeout=0)
            raise LookupError(f"no {KIND} {self.namespace}/{self.name}")
        verdict = policy_of_resource(item)
        self._seen = _identity(item)
        self._write_status(item, verdict)
        if verdict.policy is None:
            self.watch.stop(timeout=0)
        return verdict

    def _landed(self, store: Store) -> None:
        """From the watch thread: remember the latest object and wake the loop."""
        self._latest = store.get(f"{self.namespace}/{self.name}")
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.watch._thread is None:
            self.watch.start()
        self._wake.set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._judge(self._latest)
        finally:
            self.watch.stop(timeout=0)
            self._loop = None

    async def _judge(self, item: JsonObject | None) -> None:
        if item is None:
            return  # deleted: keep serving what we have (a Deployment outlives its config)
        identity = _identity(item)
        if identity == self._seen:
            return  # a status write or a label: nothing to validate
        self._seen = identity
        verdict = await asyncio.to_thread(policy_of_resource, item)
        if verdict.policy is not None:
            try:
                self._on_change(verdict.policy)
            except Exception as exc:
                verdict = Verdict(False, "ApplyFailed", f"{type(exc).__name__}: {exc}"[:500])
        self.on_outcome(_OUTCOMES[verdict.reason])
        if verdict.accepted:
            self.reloads += 1
            self.last_error = None
            log.info("policy applied", resource=f"{self.namespace}/{self.name}", gen=identity[1])
        else:
            if verdict.reason == "Invalid":
                self.rejections += 1
            else:
                self.failures += 1
            self.last_error = verdict.message.split("; ")
            log.error(
                "policy resource rejected; keeping the last good policy",
                resource=f"{self.namespace}/{self.name}",
                reason=verdict.reason,
                problems=verdict.message,
            )
        await asyncio.to_thread(self._write_status, item, verdict)

    def _write_status(self, item: JsonObject, verdict: Verdict) -> None:
        generation = int((item.get("metadata") or {}).get("generation") or 0)
        current = _condition(item)
        status = "True" if verdict.accepted else "False"
        if (
            current is not None
            and current.get("status") == status
            and current.get("reason") == verdict.reason
            and current.get("message") == verdict.message
            and current.get("observedGeneration") == generation
        ):
            return  # another replica already said so
        changed = current is None or current.get("status") != status
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": ACCEPTED,
            "status": status,
            "reason": verdict.reason,
            "message": verdict.message,
            "observedGeneration": generation,
            "lastTransitionTime": (
                stamp if changed or current is None else current.get("lastTransitionTime", stamp)
            ),
        }
        body = {"status": {"observedGeneration": generation, "conditions": [condition]}}
        try:
            self._objects.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, self.namespace, PLURAL, self.name, body
            )
        except Exception as exc:  # status is a report: serving goes on without it
            log.warning(
                "cannot write the policy resource's status",
                resource=f"{self.namespace}/{self.name}",
                error=f"{type(exc).__name__}: {exc}"[:300],
            )


def _identity(item: JsonObject) -> tuple[str, int]:
    metadata = item.get("metadata") or {}
    return str(metadata.get("uid", "")), int(metadata.get("generation") or 0)


def _condition(item: JsonObject) -> dict[str, Any] | None:
    conditions = (item.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == ACCEPTED), None)
