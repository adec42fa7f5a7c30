"""Limits on what xDS clients may ask of heliostat, so one broken or hostile client cannot
starve the others.

- Message size: a DiscoveryRequest is a few kilobytes even for a node subscribed to
  thousands of clusters; gRPC refuses a larger one with RESOURCE_EXHAUSTED before heliostat
  parses it (`MAX_REQUEST_BYTES`).
- Streams: at most `max_streams` open at once; one more is refused with RESOURCE_EXHAUSTED
  and counted, the open ones are not disturbed.
- Requests per node per second: an Envoy sends one request per response it ACKs plus
  subscription changes, a few a second at most. A token bucket of `rate` per second with a
  burst of `burst`, one per node id (`NodeBuckets`) and shared by all of that node's
  streams, lets every real pattern through. A stream's first request takes a token too, so a
  node reconnecting in a loop does not start afresh each time: once its bucket is empty its
  new streams are refused, and a stream that goes beyond it is ended, with
  RESOURCE_EXHAUSTED, until the bucket refills.

Every refusal is counted in `heliostat_xds_refused_total{reason}`. Its log line is rate
limited per node and kind (`LogThrottle`): the first is logged, later ones are counted and
the count is logged with the next one after `log_every_s`, so a client refused in a loop
cannot flood the logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Largest request message accepted (gRPC's receive limit on the xDS server)."""


@dataclass(frozen=True)
class StreamLimits:
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_streams: int = 10_000
    rate: float = 50.0  # requests per node per second, sustained
    burst: int = 200
    log_every_s: float = 10.0  # refusals of one node and kind: one log line this often

    def __post_init__(self) -> None:
        if (
            min(self.max_request_bytes, self.max_streams, self.burst) < 1
            or min(self.rate, self.log_every_s) <= 0
        ):
            raise ValueError("stream limits must be positive")


class TokenBucket:
    """`rate` tokens a second up to `burst`; `take` is False once they run out."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class NodeBuckets:
    """One `TokenBucket` per node id, shared by every stream of that node.

    A bucket idle long enough to have refilled is the same as a new one, so such buckets are
    dropped now and then (`prune_every` new nodes): memory follows the nodes active in the
    last `burst / rate` seconds, not every node id ever seen.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        prune_every: int = 1024,
    ) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[TokenBucket, float]] = {}  # node -> (bucket, last use)
        self._prune_every = prune_every
        self._created = 0

    def take(self, node_id: str) -> bool:
        now = self._clock()
        entry = self._buckets.get(node_id)
        if entry is None:
            self._created += 1
            if self._created % self._prune_every == 0:
                self._prune(now)
            bucket = TokenBucket(self._rate, self._burst, self._clock)
        else:
            bucket = entry[0]
        self._buckets[node_id] = (bucket, now)
        return bucket.take()

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        refill_s = self._burst / self._rate
        self._buckets = {n: e for n, e in self._buckets.items() if now - e[1] < refill_s}


class LogThrottle:
    """Which refusals to log: the first of a key, then at most one every `every_s`, which
    carries how many were not logged since the one before.

    Keys are (event, node id). Past `max_keys` keys (a client inventing node ids), keys
    whose window has passed are forgotten, and new ones share one key per event.
    """

    def __init__(
        self, every_s: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 4096
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._max_keys = max_keys
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (logged at, since)

    def admit(self, event: str, node_id: str) -> int | None:
        """None: count this one, do not log it. Otherwise log it, saying that this many
        were not logged before it (0 for the first)."""
        now = self._clock()
        key = (event, node_id)
        if key not in self._seen and len(self._seen) >= self._max_keys:
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._every_s}
            if len(self._seen) >= self._max_keys:
                key = (event, "*")
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._every_s:
            self._seen[key] = (entry[0], entry[1] + 1)
            return None
        self._seen[key] = (now, 0)
        return entry[1] if entry is not None else 0
