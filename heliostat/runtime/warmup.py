"""Endpoints withheld until a starting heliostat has read its replicas once.

A heliostat that starts has no signal history: its first views give every endpoint the
neutral weight, and the first scrape round a moment later moves them to what the replicas
show. For an Envoy that reconnects to a *restarted* heliostat that is a round trip: weights
it had from the last process swing to neutral and back. So until a first round of every
model has landed (or `bound_s` has passed, whatever the scrapes do) endpoints are withheld
from every stream: an Envoy keeps what it has, a new one waits that long for its endpoints.
Clusters, listeners and routes do not depend on signals and are served at once.

This holds the decision only (which models are still awaited, is the bound past); the control
plane ticks and releases (`heliostat.serve`).
"""

from __future__ import annotations

from collections.abc import Iterable

# How long past the slowest scrape timeout endpoints may stay withheld.
SLACK_S = 1.0


class FirstRound:
    """Which models' first signal round is still awaited, and until when."""

    def __init__(self, models: Iterable[str], bound_s: float, started_at: float) -> None:
        self._awaited = set(models)
        self.deadline = started_at + bound_s
        self.done = not self._awaited
        self.reason = "no model is scraped" if self.done else ""

    def landed(self, model: str) -> bool:
        """A round of `model` landed; True exactly once, when that completes the first round."""
        if self.done:
            return False
        self._awaited.discard(model)
        if self._awaited:
            return False
        self.done, self.reason = True, "first signal round landed"
        return True

    def postpone(self, seconds: float) -> None:
        """Move the bound `seconds` later (time spent before the first round could begin)."""
        self.deadline += seconds

    def expire(self, now: float) -> bool:
        """True exactly once, when the bound passes with models still awaited."""
        if self.done or now < self.deadline:
            return False
        self.done = True
        self.reason = "bound passed; still awaited: " + ", ".join(sorted(self._awaited))
        return True

    @property
    def awaited(self) -> frozenset[str]:
        return frozenset(self._awaited)
