"""A bound on response bytes in flight across every ADS stream.

When a thousand gateways subscribe at once, or a change reaches every stream together, each
stream's responses are built and handed to gRPC at the same moment, and each sits in memory
(message and serialized copy) until that gateway has read it. Serve's peak memory then grows
with streams x configuration size. A stream takes its response's size from this budget
before sending and gives it back when the node answers (its ACK or NACK is its next
request), when the stream ends, or after `hold_s` at the latest, so a node that never
answers cannot starve the others. One response larger than the whole budget is still sent,
alone. A push that fits in the budget (the usual one-change case) is not delayed at all.
"""

from __future__ import annotations

import asyncio
from collections import deque

DEFAULT_LIMIT = 64 * 1024 * 1024
DEFAULT_HOLD_S = 5.0


class SendBudget:
    __slots__ = ("_available", "_waiters", "hold_s", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT, hold_s: float = DEFAULT_HOLD_S) -> None:
        if limit <= 0 or hold_s <= 0:
            raise ValueError("a send budget needs a positive limit and hold time")
        self.limit = limit
        self.hold_s = hold_s
        self._available = limit
        # Streams waiting for room, first come first served: (bytes, woken when they fit).
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_flight(self) -> int:
        return self.limit - self._available

    async def take(self, size: int) -> Grant:
        """Wait until `size` bytes fit (or nothing is in flight), then hold them."""
        size = min(size, self.limit)  # larger than everything: waits for an empty budget
        loop = asyncio.get_running_loop()
        if self._waiters or self._available < size:  # no overtaking those already waiting
            woken: asyncio.Future[None] = loop.create_future()
            entry = (size, woken)
            self._waiters.append(entry)
            try:
                await woken  # _wake has taken the bytes for us
            except asyncio.CancelledError:
                if woken.done() and not woken.cancelled():
                    self._give_back(size)  # woken and cancelled at once: pass it on
                elif entry in self._waiters:
                    self._waiters.remove(entry)
                raise
        else:
            self._available -= size
        grant = Grant(self, size)
        grant.expiry = loop.call_later(self.hold_s, grant.release)
        return grant

    def _give_back(self, size: int) -> None:
        self._available += size
        self._wake()

    def _wake(self) -> None:
        """Hand room to waiters in order, as long as the first one fits."""
        while self._waiters and self._waiters[0][0] <= self._available:
            size, woken = self._waiters.popleft()
            if woken.done():
                continue
            self._available -= size
            woken.set_result(None)


class Grant:
    """Bytes one stream holds; released once, however many times it is asked to be."""

    __slots__ = ("_budget", "expiry", "size")

    def __init__(self, budget: SendBudget, size: int) -> None:
        self._budget: SendBudget | None = budget
        self.size = size
        self.expiry: asyncio.TimerHandle | None = None

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is None:
            return
        if self.expiry is not None:
            self.expiry.cancel()
        budget._give_back(self.size)
