"""How long a change takes to reach every Envoy: `heliostat_convergence_seconds`.

A push starts when the control loop publishes a snapshot that changed for a node group
(the tick that follows the scrape round which saw the signal change). It has converged when
every stream of that group that was connected at the time has received a response since
and is in sync on every type (ACKed what it was last sent). A newer push to the same group
before that keeps the older start: the newer snapshot carries the change too, so the
measure is from the first change until the Envoys have it. Streams that disconnect are not
waited for; a push nobody confirms within `GIVE_UP_S` is dropped uncounted (a node that
NACKs keeps its group from converging, and the NACK has its own metric).

Every ACK asks whether its group converged, so that question must not cost a walk over
every stream: a push to 1,000 streams is 1,000 ACKs, and sorting the registry on each was
a quarter of serve's time in a push (py-spy, bench fanout). A push keeps the streams it
still waits for in order; an ACK looks at the first of them and drops it once it has
converged (or is gone), so each stream is looked at about once per push.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

from heliostat.xds.grpc.registry import StreamEntry, StreamRegistry
from heliostat.xds.resources.nodes import NodeGroup

GIVE_UP_S = 60.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class _Pending:
    started: float
    # Stream id -> responses it had when the push started, for the streams not yet seen
    # converged (in order: the first is the one an ACK looks at).
    responses: dict[int, int]


def _responses(entry: StreamEntry) -> int:
    return entry.sent()


def _in_sync(entry: StreamEntry) -> bool:
    statuses = entry.status().values()
    return bool(statuses) and all(
        s.sent_version and s.sent_version == s.acked_version for s in statuses
    )


class ConvergenceTracker:
    def __init__(
        self,
        streams: StreamRegistry,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._streams = streams
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self.seconds = Histogram(
            "heliostat_convergence_seconds",
            "From publishing a changed snapshot until every Envoy of its group has ACKed it.",
            buckets=BUCKETS,
            registry=registry,
        )

    def pushed(self, groups: Iterable[NodeGroup]) -> None:
        now = self._clock()
        for group in groups:
            entries = self._streams.of_group(group)
            if not entries:
                continue
            earlier = self._pending.get(group.key)
            started = earlier.started if earlier is not None else now
            baseline = {e.stream_id: _responses(e) for e in entries}
            if earlier is not None:  # streams still waiting on the earlier push keep its mark
                baseline.update({k: v for k, v in earlier.responses.items() if k in baseline})
            self._pending[group.key] = _Pending(started, baseline)

    def acked(self, group: NodeGroup) -> None:
        """A node of `group` ACKed something: see whether its group's push has converged."""
        pending = self._pending.get(group.key)
        if pending is None:
            return
        now = self._clock()
        if now - pending.started > GIVE_UP_S:
            del self._pending[group.key]
            return
        waiting = pending.responses
        while waiting:
            stream_id, before = next(iter(waiting.items()))
            entry = self._streams.get(stream_id)
            # A disconnected stream is not waited for.
            if entry is not None and (_responses(entry) <= before or not _in_sync(entry)):
                return
            del waiting[stream_id]
        del self._pending[group.key]
        self.seconds.observe(now - pending.started)
