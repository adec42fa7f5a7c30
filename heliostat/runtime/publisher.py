"""Turns the current policy and views into snapshots for every node group that asks.

This is the one place that knows both sides: it is the server's `SnapshotSource`, and the
control loop hands it new inputs. It is the one holder of the current policy and views
(the control loop reads them from here), and it owns the translation memo: what the last
round built, reused by the next and rotated once per publish. Building is pure and cheap;
snapshots of groups nobody has asked for yet are built on first request (a gateway on an
unexpected port, say).

It also says which resource types are withheld from every stream for now (`withheld`): a
starting heliostat withholds endpoints until its first signal round (`runtime.warmup`), and
`release` tells every watching stream to look again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from heliostat.balance import Views
from heliostat.policy import Policy
from heliostat.xds.cache.store import SnapshotCache
from heliostat.xds.resources.nodes import NodeGroup
from heliostat.xds.resources.snapshot import InconsistentSnapshot, Snapshot
from heliostat.xds.resources.types import TypeUrl
from heliostat.xds.translate import TranslationMemo, build_snapshot

log = structlog.get_logger("heliostat.publisher")


@dataclass(frozen=True, slots=True)
class Inputs:
    policy: Policy
    views: Views


class Publisher:
    def __init__(self, cache: SnapshotCache, inputs: Inputs, *, leds: bool = False) -> None:
        self._cache = cache
        self._leds = leds  # delta nodes get the LEDS form (heliostat.xds.translate.leds)
        self._inputs = inputs
        self._memo = TranslationMemo()
        self._warned_regions: set[str] = set()
        self.last_error: str | None = None
        self._withheld: frozenset[TypeUrl] = frozenset()
        self._watchers: set[tuple[NodeGroup, Callable[[Snapshot], None]]] = set()

    @property
    def inputs(self) -> Inputs:
        return self._inputs

    def publish(self, inputs: Inputs) -> list[NodeGroup]:
        """Adopt new inputs and rebuild every known group; returns the groups that changed.

        A group whose new snapshot fails to build keeps its last good one, and the error is
        kept for /debug/state; other groups still move on.
        """
        self._inputs = inputs
        self._memo.new_round()  # translation may reuse the last round's objects, no older ones
        changed = []
        for group in self._cache.groups():
            snapshot = self._build(group)
            if snapshot is not None and self._cache.set(group, snapshot):
                changed.append(group)
        return changed

    # -- SnapshotSource ----------------------------------------------------------------

    def snapshot_for(self, group: NodeGroup, node_id: str) -> Snapshot:
        current = self._cache.get(group)
        if current is not None:
            return current
        region = group.region
        known = self._inputs.policy.spec.regions
        if region and region not in known and region not in self._warned_regions:
            self._warned_regions.add(region)
            log.error(
                "node_region_unknown",
                detail="serving a view with no region preference",
                node_id=node_id,
                region=region,
                regions=sorted(known),
            )
        snapshot = self._build(group)
        if snapshot is None:
            raise RuntimeError(self.last_error or "no snapshot")
        self._cache.set(group, snapshot)
        return snapshot

    def watch(self, group: NodeGroup, callback: Callable[[Snapshot], None]) -> Callable[[], None]:
        cancel = self._cache.watch(group, callback)
        entry = (group, callback)
        self._watchers.add(entry)

        def stop() -> None:
            cancel()
            self._watchers.discard(entry)

        return stop

    # -- withheld types ----------------------------------------------------------------

    def withheld(self) -> frozenset[TypeUrl]:
        """Types no stream may send for now (read by the server on every notice)."""
        return self._withheld

    def withhold(self, types: frozenset[TypeUrl]) -> None:
        """Withhold `types` from streams from now on (before any connects, at start)."""
        self._withheld = types

    def release(self) -> None:
        """Withhold nothing any more, and tell every watching stream to look again."""
        if not self._withheld:
            return
        self._withheld = frozenset()
        for group, callback in list(self._watchers):
            snapshot = self._cache.get(group)
            if snapshot is not None:
                callback(snapshot)

    # -- internals ---------------------------------------------------------------------

    def _build(self, group: NodeGroup) -> Snapshot | None:
        inputs = self._inputs
        try:
            snapshot = build_snapshot(
                inputs.policy,
                inputs.views.for_region(group.region),
                group,
                self._memo,
                leds=self._leds,
            )
        except (InconsistentSnapshot, ValueError) as exc:
            self.last_error = f"group {group.key}: {exc}"
            log.error(
                "snapshot_failed",
                detail="keeping the last good one",
                group=group.key,
                error=str(exc),
            )
            return None
        return snapshot
