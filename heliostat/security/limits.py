"""Limits on what xDS clients may ask of heliostat, so one broken or hostile client cannot
starve the others.

- Message size: a DiscoveryRequest is a few kilobytes even for a node subscribed to
  thousands of clusters; gRPC refuses a larger one with RESOURCE_EXHAUSTED before heliostat
  parses it (`MAX_REQUEST_BYTES`).
- Streams: at most `max_streams` open at once; one more is refused with RESOURCE_EXHAUSTED
  and counted, the open ones are not disturbed.
- Requests per stream per second: an Envoy sends one request per response it ACKs plus
  subscription changes, a few a second at most. A token bucket of `rate` per second with a
  burst of `burst` lets every real pattern through; a stream that goes beyond it is ended
  with RESOURCE_EXHAUSTED and counted, and its Envoy reconnects after its backoff.

Every refusal is counted in `heliostat_xds_refused_total{reason}` and logged once per stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Largest request message accepted (gRPC's receive limit on the xDS server)."""


@dataclass(frozen=True)
class StreamLimits:
    max_streams: int = 10_000
    rate: float = 50.0  # requests per second, sustained
    burst: int = 200

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.rate <= 0 or self.burst < 1:
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
